"""voicetune blind-test: the pure core (Wilson interval, rounds, ratings), the server's refusals, and the
page played in a real browser (headless Debian Chromium driven by Playwright, no model: the
continuations come from `fixture_run`, a run folder with prepared data and a benchmark samples file)."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from voicetune.voice import blind_test as bt

MODEL_MARK = "zebra"  # every fixture model continuation holds this word; the person's never do

# Held-out passages of the fixture author: the prompts are their starts.
PASSAGES = [
    (
        f"Passage {i}: the lamp by the window had burned low when the letter came. "
        f"Nobody in the house wanted to open it first, and so it lay on the table number {i}.",
        f"In the morning my sister read it aloud, slowly, as if each word cost her something {i}.",
    )
    for i in range(1, 9)
]


# ------------------------------------------------------------------------------------ fixtures


def write_fixture_run(home: Path, run: str = "fixture", voice_score: object = 0.42) -> Path:
    """A run folder as the pipeline leaves it, without a model: prepared data (manifest + held-out
    test texts) and the benchmark's results.json holding the samples."""
    data = home / "data" / "processed" / run
    (data / "texts" / "test").mkdir(parents=True)
    (data / "texts" / "train").mkdir(parents=True)
    for i, (start, rest) in enumerate(PASSAGES):
        (data / "texts" / "test" / f"doc{i}.txt").write_text(f"{start} {rest}\n", encoding="utf-8")
    (data / "train.jsonl").write_text("", encoding="utf-8")
    (data / "manifest.json").write_text(
        json.dumps(
            {
                "step": "prepare",
                "fingerprint": "fixture",
                "settings": {"format": "chat_template", "sequence_len": 256},
                "outputs": {},
            }
        ),
        encoding="utf-8",
    )
    samples = [
        {
            "index": i,
            "document": i,
            "prompt": start,
            "continuations": {
                bt.AUTHOR: rest,
                "base": f"The base model wanders off here {i} with words about nothing much at all.",
                "fine-tuned": f"A {MODEL_MARK} walked past the window then, and she folded page {i} twice.",
            },
        }
        for i, (start, rest) in enumerate(PASSAGES)
    ]
    results = home / "benchmarks" / "results" / run
    results.mkdir(parents=True)
    (results / "results.json").write_text(
        json.dumps(
            {
                "run": run,
                "baseline": "base",
                "reference": bt.AUTHOR,
                "models": [{"name": "base"}, {"name": "fine-tuned"}],
                "author": {"data_dir": str(data)},
                "voice_score": voice_score,
                "samples": samples,
            }
        ),
        encoding="utf-8",
    )
    return results


@pytest.fixture
def fixture_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """VOICETUNE_HOME holding the run 'fixture' (prepared data + benchmark samples); its results folder."""
    monkeypatch.setenv("VOICETUNE_HOME", str(tmp_path))
    return write_fixture_run(tmp_path)


def open_fixture_session(results: Path, rounds: int = 5, seed: int = 7) -> bt.Session:
    source = bt.benchmark_source("fixture", with_base=False)
    assert source is not None
    session, _ = bt.open_session(
        results / bt.BLIND, "fixture", source.samples, source.models, source.info, rounds, seed,
        source.voice_score,
    )  # fmt: skip
    return session


@pytest.fixture
def server(fixture_run: Path) -> Iterator[bt.BlindServer]:
    srv = bt.BlindServer(open_fixture_session(fixture_run), "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium, headless, driven by Playwright (tests/browser.py: never Playwright's download)."""
    from browser import headless_browser

    with headless_browser() as b:
        yield b


def request(srv: bt.BlindServer, method: str, path: str, host: str | None = None, body: object = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    hdrs = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host or f"127.0.0.1:{srv.port}")
    for key, value in hdrs.items():
        conn.putheader(key, value)
    if data is not None:
        conn.putheader("Content-Length", str(len(data)))
    conn.endheaders(data)
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    try:
        payload = json.loads(raw) if raw else {}
    except ValueError:
        payload = {"html": raw.decode()}
    return response.status, payload


def ratings_lines(results: Path) -> list[dict]:
    path = results / bt.BLIND / bt.RATINGS_FILE
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ------------------------------------------------------------------------------------ pure core


def test_wilson_interval_known_values_and_contains_estimate():
    low, high = bt.wilson_interval(5, 10)
    assert (round(low, 4), round(high, 4)) == (0.2366, 0.7634)
    low, high = bt.wilson_interval(0, 10)
    assert low == 0.0 and round(high, 4) == 0.2775
    for n in (1, 3, 10, 40):
        for k in range(n + 1):
            low, high = bt.wilson_interval(k, n)
            assert 0 <= low <= k / n <= high <= 1
    with pytest.raises(ValueError):
        bt.wilson_interval(0, 0)


def test_balance_lengths_cuts_both_to_whole_words():
    real, model = bt.balance_lengths("one two three four five", "alpha beta gam")
    assert real == "one two three" and model == "alpha beta gam"


def test_rounds_are_reproducible_balanced_and_hide_the_side():
    samples = [
        bt.Sample(i, f"p{i}", f"real {i}", {"fine-tuned": f"ft {i}", "base": f"b {i}"}) for i in range(20)
    ]
    a = bt.build_rounds(samples, ["fine-tuned", "base"], 10, seed=3)
    assert a == bt.build_rounds(samples, ["fine-tuned", "base"], 10, seed=3)
    assert len(a) == 10 and len({r.sample for r in a}) == 10  # each prompt once
    assert sum(r.model == "base" for r in a) == 5
    assert {r.real_side for r in bt.build_rounds(samples, ["fine-tuned"], 20, seed=1)} == {"left", "right"}
    r = a[0]
    left, right = r.sides()
    assert (left if r.real_side == "left" else right) == r.real


def test_ratings_are_durable_resumable_and_counted_once(fixture_run):
    session = open_fixture_session(fixture_run, rounds=4)
    first = session.next_round()
    assert first is not None
    session.rate(first.id, first.real_side)  # spotted
    session.rate(first.id, "left")  # a resent answer: ignored
    second = session.next_round()
    wrong = "right" if second.real_side == "left" else "left"
    session.rate(second.id, wrong)  # the model taken for the person
    with pytest.raises(bt.VoicetuneError):
        session.rate(second.id + 5, "left")  # not the round being asked
    # a crash mid-write leaves a torn last line: it is skipped
    with open(session.ratings_path, "a", encoding="utf-8") as handle:
        handle.write('{"round": 2, "sam')
    restarted = open_fixture_session(fixture_run, rounds=4)
    assert set(restarted.ratings) == {first.id, second.id}
    assert restarted.next_round().id not in (first.id, second.id)
    summary = restarted.summary()
    (model,) = summary["models"]
    assert (model["rounds"], model["taken_for_person"], model["share"]) == (2, 1, 0.5)
    assert model["ci_low"] <= 0.5 <= model["ci_high"]
    assert summary["voice_score"] == 0.42


def test_changed_samples_need_a_new_session(fixture_run):
    session = open_fixture_session(fixture_run)
    session.rate(0, "left")
    results = json.loads((fixture_run / "results.json").read_text())
    results["samples"] = results["samples"][::-1]
    (fixture_run / "results.json").write_text(json.dumps(results))
    with pytest.raises(bt.VoicetuneError, match="--new-session"):
        open_fixture_session(fixture_run)
    source = bt.benchmark_source("fixture", with_base=False)
    fresh, _ = bt.open_session(
        fixture_run / bt.BLIND, "fixture", source.samples, source.models, source.info, 5, 1, new=True
    )
    assert not fresh.ratings
    assert list((fixture_run / bt.BLIND).glob("archive-*/ratings.jsonl"))  # the old answers are kept


def test_prompts_must_come_from_the_held_out_texts(fixture_run):
    source = bt.benchmark_source("fixture", with_base=False)
    texts = bt.held_out_texts(source.data_dir)
    bt.check_prompts_held_out(source.samples, texts, fixture_run)
    foreign = [bt.Sample(0, "A prompt from somewhere else entirely.", "x", {"fine-tuned": "y"})]
    with pytest.raises(bt.VoicetuneError, match="not from the run's held-out texts"):
        bt.check_prompts_held_out(foreign, texts, fixture_run)


def test_voice_score_formats():
    assert bt.format_voice_score(None) is None
    assert bt.format_voice_score(0.4242) == "0.424"
    assert (
        bt.format_voice_score({"value": 0.6, "ci_low": 0.5, "ci_high": 0.7}) == "0.6 (95% interval 0.5 – 0.7)"
    )
    assert bt.voice_score_for({"voice_score": {"fine-tuned": 0.3, "base": 0.1}}, "fine-tuned") == 0.3


# ------------------------------------------------------------------------------------ server refusals


def test_non_loopback_host_header_is_refused(server):
    ok, _ = request(server, "GET", f"/{server.token}/api/state")
    assert ok == 200
    for host in (f"evil.example:{server.port}", "evil.example", f"192.168.1.9:{server.port}",
                 f"127.0.0.1:{server.port + 1}"):  # fmt: skip
        status, body = request(server, "GET", f"/{server.token}/api/state", host=host)
        assert status == 403, host
        assert "127.0.0.1" in body["error"]
    status, _ = request(server, "POST", f"/{server.token}/api/rate", host="evil.example",
                        body={"round": 0, "picked": "left"})  # fmt: skip
    assert status == 403
    assert not server.session.ratings


def test_wrong_token_is_refused(server):
    for path in ("/", "/nottoken/", "/nottoken/api/state", f"/{server.token[:-1]}/api/state"):
        status, body = request(server, "GET", path)
        assert status == 404, path
        assert server.token not in json.dumps(body)
    status, _ = request(server, "POST", "/wrong/api/rate", body={"round": 0, "picked": "left"})
    assert status == 404
    assert not server.session.ratings and not ratings_lines(Path(server.session.folder).parent)


def test_cross_origin_and_non_json_posts_are_refused(server):
    path = f"/{server.token}/api/rate"
    status, _ = request(server, "POST", path, body={"round": 0, "picked": "left"},
                        headers={"Origin": "http://evil.example"})  # fmt: skip
    assert status == 403
    status, _ = request(server, "POST", path, body={"round": 0, "picked": "left"},
                        headers={"Content-Type": "text/plain"})  # fmt: skip
    assert status == 415
    status, _ = request(server, "POST", path, body={"round": 0, "picked": "middle"})
    assert status == 400
    assert not server.session.ratings


def test_explicit_host_allows_ip_literals_but_never_names(fixture_run):
    srv = bt.BlindServer(open_fixture_session(fixture_run), "127.0.0.1", 0, extra_host="127.0.0.1")
    try:
        assert srv.host_allowed(f"10.0.0.5:{srv.port}")
        assert not srv.host_allowed(f"rebind.example:{srv.port}")
    finally:
        srv.server_close()
    srv = bt.BlindServer(open_fixture_session(fixture_run), "127.0.0.1", 0)
    try:
        assert not srv.host_allowed(f"10.0.0.5:{srv.port}")
        assert srv.host_allowed(f"localhost:{srv.port}") and srv.host_allowed(f"[::1]:{srv.port}")
    finally:
        srv.server_close()


# ------------------------------------------------------------------------------------ in a browser


def _real_side(page) -> str:
    left = page.inner_text("#left-text")
    return "right" if MODEL_MARK in left else "left"


def test_play_five_rounds_by_click_and_keyboard(server, browser):
    from playwright.sync_api import expect  # the page's CSP forbids eval: wait with expect()

    external: list[str] = []
    page = browser.new_page()
    origin = f"http://127.0.0.1:{server.port}/"
    page.on("request", lambda r: None if r.url.startswith(origin) else external.append(r.url))
    page.goto(server.url())
    page.wait_for_selector("#round:not([hidden])")
    assert "Which continuation did you write?" in page.inner_text("h2#question")
    assert page.inner_text("#progress") == "Round 1 of 5"

    plan = [("click", True), ("click", True), ("click", False), ("key", True), ("key", False)]
    for number, (how, pick_real) in enumerate(plan, 1):
        expect(page.locator("#progress")).to_have_text(f"Round {number} of 5")
        real = _real_side(page)
        side = real if pick_real else ("left" if real == "right" else "right")
        if how == "click":
            page.click(f"#{side}")
        else:
            page.keyboard.press(("1" if side == "left" else "ArrowRight") if number == 4 else
                                ("ArrowLeft" if side == "left" else "2"))  # fmt: skip
    page.wait_for_selector("#results:not([hidden])")
    text = page.inner_text("#summary")
    assert "taken for you in 2 of 5 rounds: 40%" in text
    assert "Benchmark voice score: 0.42." in text
    assert page.locator("#rounds tbody tr").count() == 5
    page.close()

    lines = ratings_lines(server.session.folder.parent)
    assert [line["round"] for line in lines] == [0, 1, 2, 3, 4]
    assert [line["correct"] for line in lines] == [p for _, p in plan]
    assert all(line["model"] == "fine-tuned" and line["picked"] in ("left", "right") for line in lines)
    summary = json.loads((server.session.folder / bt.SUMMARY_FILE).read_text())
    assert summary["complete"] and summary["models"][0]["taken_for_person"] == 2
    assert external == []  # offline: no request leaves the server


def test_closed_tab_resumes_at_the_next_round_on_a_phone(server, browser):
    from playwright.sync_api import expect  # the page's CSP forbids eval: wait with expect()

    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(server.url())
    page.wait_for_selector("#round:not([hidden])")
    # a phone screen: the two texts stack, nothing scrolls sideways
    left, right = page.locator("#left").bounding_box(), page.locator("#right").bounding_box()
    assert right["y"] >= left["y"] + left["height"] - 1
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.tap("#left")
    expect(page.locator("#progress")).to_have_text("Round 2 of 5")
    page.close()  # the tab is closed: the answer is already on disk
    assert len(ratings_lines(server.session.folder.parent)) == 1

    # the server restarts from disk and the page continues with the next unrated round
    server.session = open_fixture_session(server.session.folder.parent)
    page = context.new_page()
    page.goto(server.url())
    expect(page.locator("#progress")).to_have_text("Round 2 of 5")
    context.close()


# ------------------------------------------------------------------------------------ the verb


def test_cli_prints_a_loopback_url_whose_page_asks(fixture_run, tmp_path):
    env = {**os.environ, "VOICETUNE_HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicetune", "blind-test", "--run", "fixture", "--no-browser", "--rounds=3"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        url = None
        for line in proc.stdout:
            match = re.search(r"(http://127\.0\.0\.1:(\d+)/[A-Za-z0-9_-]+/)", line)
            if match:
                url = match.group(1)
                break
        assert url, "no URL printed"
        conn = http.client.HTTPConnection("127.0.0.1", int(re.search(r":(\d+)/", url).group(1)), timeout=10)
        conn.request("GET", "/" + url.split("/", 3)[3])
        response = conn.getresponse()
        html = response.read().decode()
        assert response.status == 200 and "Which continuation did you write?" in html
        assert "Content-Security-Policy" in dict(response.getheaders())
        proc.terminate()  # `kill` stops it like Ctrl-C: exit 0 and the result so far
        assert proc.wait(timeout=20) == 0
        assert "0 of 3 rounds rated" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=20)


def test_export_dpo_pairs_in_axolotl_format(fixture_run):
    session = open_fixture_session(fixture_run, rounds=4)
    for i, r in enumerate(list(session.rounds)):
        wrong = "right" if r.real_side == "left" else "left"
        session.rate(r.id, r.real_side if i != 1 else wrong)
    source = bt.benchmark_source("fixture", with_base=False)
    out = bt.export_dpo(session, source, "fixture", "fixture-dpo", include_fooled=False)
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 3  # the round where the model passed for the person is left out
    for row in rows:
        assert set(row) == {"messages", "chosen", "rejected"}
        assert [m["role"] for m in row["messages"]] == ["system", "user"]
        assert row["chosen"]["role"] == row["rejected"]["role"] == "assistant"
        assert MODEL_MARK in row["rejected"]["content"] and MODEL_MARK not in row["chosen"]["content"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["format"] == "dpo" and manifest["pairs"] == 3
    all_rows = bt.export_dpo(session, source, "fixture", "fixture-dpo-all", include_fooled=True)
    assert len((all_rows / "train.jsonl").read_text().splitlines()) == 4


# ------------------------------------------------------------------------------------ the dpo profile


def _rated_export(fixture_run: Path) -> Path:
    session = open_fixture_session(fixture_run, rounds=6)
    for r in list(session.rounds):
        session.rate(r.id, r.real_side)
    return bt.export_dpo(session, bt.benchmark_source("fixture", False), "fixture", "fixture-dpo", False)


def test_dpo_profile_and_pairs_go_together(fixture_run, tmp_path):
    from voicetune.train import axolotl_config as ac

    pairs = _rated_export(fixture_run)
    spec = {"run_name": "r", "run_dir": tmp_path / "r", "base_model": tmp_path, "max_steps": 2}
    cfg = ac.render(
        ac.load_profile("dpo"), ac.RunSpec(data_dir=pairs, data_format="dpo", has_val=False, **spec)
    )
    assert cfg["rl"] == "dpo" and not cfg["sample_packing"] and "test_datasets" not in cfg
    (entry,) = cfg["datasets"]
    assert entry["type"] == "chat_template.default" and entry["path"] == str(pairs / "train.jsonl")
    assert (entry["field_messages"], entry["field_chosen"], entry["field_rejected"]) == (
        "messages",
        "chosen",
        "rejected",
    )
    with pytest.raises(bt.VoicetuneError, match="preference pairs"):
        ac.render(ac.load_profile("cpu-demo"), ac.RunSpec(data_dir=pairs, data_format="dpo", **spec))
    with pytest.raises(bt.VoicetuneError, match="--data <run>-dpo"):
        ac.render(ac.load_profile("dpo"), ac.RunSpec(data_dir=pairs, data_format="chat_template", **spec))


def test_dpo_dry_run_passes_axolotls_own_validation(fixture_run, base_model_dir, capsys):
    """The rendered DPO config through `voicetune train --dry-run`: Axolotl's schema (validate_config),
    the pairs read and counted with the real tokenizer's chat template."""
    from voicetune.cli import main

    _rated_export(fixture_run)
    code = main(
        ["train", "--profile", "dpo", "--data", "fixture-dpo", "--run", "fixture-dpo",
         "--base-model", str(base_model_dir), "--max-steps", "2", "--wandb", "off", "--dry-run"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "preflight: passed" in out and "6 train / 0 val examples" in out and "none dropped" in out
    import yaml

    rendered = yaml.safe_load(
        (fixture_run.parents[2] / "checkpoints" / "fixture-dpo" / "axolotl.yaml").read_text()
    )
    assert rendered["rl"] == "dpo" and rendered["datasets"][0]["type"] == "chat_template.default"


# ------------------------------------------------------------------------------------ the report link


def test_report_section_and_answers_outliving_a_benchmark_rerun(fixture_run, tmp_path):
    md, page = bt.report_section(fixture_run, "fixture")
    assert "voicetune blind-test --run fixture" in md and "[blind/summary.md](blind/summary.md)" in md
    assert '<a href="blind/summary.md">' in page
    session = open_fixture_session(fixture_run, rounds=2)
    for r in list(session.rounds):
        session.rate(r.id, "left" if r.real_side == "right" else "right")  # fooled twice
    md, page = bt.report_section(fixture_run, "fixture")
    assert "2 of 2 rounds rated" in md and "taken for you in 2 of 2 rounds, 100%" in md
    assert "benchmark voice score: 0.42" in md and "<li>" in page
    assert "you took the model's text for yours" in (fixture_run / bt.BLIND / bt.SUMMARY_MD).read_text()
    # the benchmark replaces its folder on a re-run: the answers move along
    replacement = tmp_path / "replacement"
    replacement.mkdir()
    bt.keep_answers(fixture_run, replacement)
    assert (replacement / bt.BLIND / bt.RATINGS_FILE).read_text() == session.ratings_path.read_text()
