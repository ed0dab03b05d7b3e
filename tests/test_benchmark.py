"""The benchmark's torch-free logic: prompts, verdicts on known answers, resolving what to compare,
and the command line."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmark_data import known_answer_results
from stylometry_data import author_split

from voicetune.core.errors import MissingArtifactError, VoicetuneError
from voicetune.core.manifest import write_manifest
from voicetune.voice import benchmark as bm
from voicetune.voice import scoring
from voicetune.voice.stylometry import sentences

# --------------------------------------------------------------------------- prompts


def _count_words(text: str) -> int:
    return len(text.split())


def test_prompts_come_from_the_held_out_text_in_whole_sentences() -> None:
    _, test = author_split()
    items = bm.select_prompts(test, 20, 64, 60, seed=1, count_tokens=_count_words)
    assert len(items) == 20
    flat = " ".join(" ".join(t.split()) for t in test)
    for item in items:
        assert " ".join(item.prompt.split()) in flat and " ".join(item.reference.split()) in flat
        # The prompt ends a sentence (or a paragraph), so the reference starts a new one.
        first = item.reference.lstrip("\"'“‘_([—-")[:1]
        assert first.isupper() or first.isdigit(), item.reference[:40]
        assert len(sentences(item.prompt)) >= 1
        assert 0 < _count_words(item.reference) <= 60
        assert _count_words(item.prompt) >= 64
        # The reference follows the prompt in the document.
        prompt_at = flat.index(" ".join(item.prompt.split()))
        reference_at = flat.index(" ".join(item.reference.split()), prompt_at)
        assert reference_at - prompt_at - len(" ".join(item.prompt.split())) < 20


def test_prompt_selection_is_seeded_and_windows_do_not_overlap() -> None:
    _, test = author_split()
    a = bm.select_prompts(test, 12, 64, 60, seed=7, count_tokens=_count_words)
    b = bm.select_prompts(test, 12, 64, 60, seed=7, count_tokens=_count_words)
    c = bm.select_prompts(test, 12, 64, 60, seed=8, count_tokens=_count_words)
    assert a == b and a != c
    every = bm.select_prompts(test, 10_000, 64, 60, seed=7, count_tokens=_count_words)
    flat = " ".join(" ".join(t.split()) for t in test)
    starts = [flat.index(" ".join(item.prompt.split())) for item in every]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert (
        bm.select_prompts(["Too short. Far too short."], 5, 64, 60, seed=0, count_tokens=_count_words) == []
    )


def test_calibration_text_and_other_writers_pieces_are_never_scored_text() -> None:
    _, test = author_split()
    windows = bm.held_out_windows(test, 64, 60, _count_words)
    cfg = bm.resolve_settings(bm.BenchmarkSettings(prompts=20), "cpu")
    items, calibration = bm.plan_prompts(windows, [], cfg)
    assert len(items) == 20 and len(calibration) == len(windows) - 20
    joined = "\n".join(calibration)
    assert not any(item.reference in joined or item.prompt in joined for item in items)
    # Too little held-out text for both: half the windows stay back for calibration.
    few, rest = bm.plan_prompts(
        windows[:30], [], bm.resolve_settings(bm.BenchmarkSettings(prompts=28), "cpu")
    )
    assert len(few) == 15 and len(rest) == 15
    # With validation texts to calibrate on, every window can be a prompt.
    cfg_many = bm.resolve_settings(bm.BenchmarkSettings(prompts=500), "cpu")
    every, val_only = bm.plan_prompts(windows[:30], [" ".join(["word"] * 5000)], cfg_many)
    assert len(every) == 30 and len(val_only) == 1
    others = {"a": ["\n\n".join(f"Paragraph {i} of a, with some words." for i in range(100))],
              "b": ["\n\n".join(f"Paragraph {i} of b, with some words." for i in range(100))]}  # fmt: skip
    reference, held_out = bm.split_other_authors(others, 0.3)
    for name in others:
        ref_paras, held_paras = reference[name][0].split("\n\n"), held_out[name][0].split("\n\n")
        assert not set(ref_paras) & set(held_paras) and len(held_paras) == 30
    pieces = bm.other_author_pieces(held_out, 14, 10, seed=0)
    assert len(pieces) == 10 and {p.split()[3] for p in pieces} == {"a,", "b,"}
    assert all(len(p.split()) == 14 for p in pieces)


# --------------------------------------------------------------------------- verdicts


@pytest.mark.parametrize(
    ("direction", "low", "high", "expected"),
    [
        ("lower", -0.3, -0.1, "better"),
        ("lower", 0.1, 0.3, "worse"),
        ("lower", -0.1, 0.2, "no clear difference"),
        ("higher", 0.1, 0.3, "better"),
        ("higher", -0.3, -0.1, "worse"),
        ("closer", -0.2, -0.01, "better"),
        ("closer", None, None, "not measured"),
    ],
)
def test_verdict_follows_the_interval_of_the_difference(direction, low, high, expected) -> None:
    assert scoring.verdict(direction, {"value": 0.0, "ci_low": low, "ci_high": high}) == expected


def _comparison(results: dict, model: str, measure: str) -> dict:
    return next(c for c in results["comparisons"] if c["model"] == model and c["measure"] == measure)


def test_known_answers_the_authors_text_beats_its_shuffled_words() -> None:
    results = known_answer_results()
    assert _comparison(results, "tuned", "style_distance")["verdict"] == "better"
    assert _comparison(results, "tuned", "perplexity")["verdict"] == "better"
    assert _comparison(results, "tuned", "perplexity")["paired"] is True
    # Same words, other order: the bag-of-words measures cannot tell them apart, and say so.
    for measure in ("cosine_delta", "burrows_delta", "function_word_jsd", "punctuation_jsd"):
        verdict = _comparison(results, "tuned", measure)["verdict"]
        assert verdict in ("no clear difference", scoring.CANNOT_TELL), measure
    values = results["measures"]["style_distance"]["values"]
    assert values["base"]["value"] > values["author (held-out)"]["value"] + 0.4
    assert results["summary"]["tuned"]["copying"] == "no more than the author's own new writing"


def _intervals(node: object, path: str = "") -> list[tuple[str, dict]]:
    """Every {value, ci_low, ci_high} object in results.json, with where it is."""
    found: list[tuple[str, dict]] = []
    if isinstance(node, dict):
        if {"value", "ci_low", "ci_high"} <= set(node):
            found.append((path, node))
        for key, value in node.items():
            found += _intervals(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _intervals(value, f"{path}[{i}]")
    return found


def test_every_reported_interval_holds_its_value() -> None:
    found = _intervals(known_answer_results())
    assert len(found) > 80
    bad = [
        (path, e)
        for path, e in found
        if e["ci_low"] is not None and not (e["ci_low"] <= e["value"] <= e["ci_high"])
    ]
    assert not bad, bad[:5]


def test_known_answers_voice_score_runs_from_the_others_to_the_author() -> None:
    results = known_answer_results()
    voice = results["voice_score"]
    assert set(voice) == {"base", "tuned", "copycat", "author (held-out)", "others", "difference"}
    for entry in voice.values():
        assert set(entry) == {"value", "ci_low", "ci_high", "n"} and entry["n"] == 32
    author, others, tuned = voice["author (held-out)"], voice["others"], voice["tuned"]
    # Scored on pieces the scale never saw: near 1 and 0, not exactly (that would be in-sample).
    assert author["ci_low"] < 1 < author["ci_high"] and others["ci_low"] < 0 < others["ci_high"]
    assert author["value"] != 1.0 and others["value"] != 0.0
    assert tuned["value"] == pytest.approx(author["value"])  # the same texts, paired to other prompts
    scale = results["voice_scale"]
    assert scale["in_sample"] is False and scale["difference_of"] == "tuned - base"
    assert scale["used"] and all(scale["measures"][k]["passed"] for k in scale["used"])
    assert scale["words"]["tuned"] > 1500 and scale["calibration"]["check_count"] == 32


def test_too_little_held_out_text_gives_no_voice_score_and_says_why() -> None:
    from voicetune.voice.report import voice_headline, voice_measures_lines

    cfg = bm.resolve_settings(bm.BenchmarkSettings(bootstrap=100), "cpu")
    pieces = {
        "base": ["Some words here."] * 3,
        "author (held-out)": ["Other words."] * 3,
        "others": ["X."] * 3,
    }
    voice, scale = bm.voice_scores(cfg, ["Training text."], {"a": ["A."]}, [], [], 10, pieces, "base")
    assert all(entry["value"] is None and entry["n"] == 3 for entry in voice.values())
    assert "calibration pieces" in scale["error"]
    results = {"voice_score": voice, "voice_scale": scale, "baseline": "base", "models": [{"name": "base"}],
               "reference": "author (held-out)"}  # fmt: skip
    assert voice_headline(results).startswith("**Voice score: not measured.**")
    assert voice_measures_lines(results)[0].startswith("No voice score: the voice scale needs")


def test_the_printed_answer_starts_with_the_voice_score() -> None:
    lines = bm.headline_lines(known_answer_results())
    assert lines[0].startswith("How much does it sound like you? tuned: ") and "**" not in lines[0]
    assert any(line.startswith("tuned vs base: closer to the author on") for line in lines)


def test_measures_that_cannot_tell_the_author_from_others_stay_out_of_the_verdict() -> None:
    results = known_answer_results()
    failed = [
        k for k, m in results["measures"].items() if m["discrimination"] and not m["discrimination"]["passed"]
    ]
    passed = [
        k for k, m in results["measures"].items() if m["discrimination"] and m["discrimination"]["passed"]
    ]
    assert failed and passed
    for key in failed:
        assert results["measures"][key]["in_verdict"] is False
        assert _comparison(results, "tuned", key)["verdict"] == scoring.CANNOT_TELL
        assert key in results["summary"]["tuned"]["cannot_tell"]
    for key in passed:
        assert _comparison(results, "tuned", key)["verdict"] != scoring.CANNOT_TELL
    # The other writers' real text is scored like a system, on the same measures.
    assert "others" in results["measures"]["attribution_share"]["values"]


def test_known_answers_copying_is_flagged() -> None:
    results = known_answer_results()
    assert results["measures"]["copied_ngram_share"]["values"]["copycat"]["value"] == pytest.approx(1.0)
    assert _comparison(results, "copycat", "copied_ngram_share")["verdict"] == "worse"
    assert _comparison(results, "copycat", "longest_copied_span")["verdict"] == "worse"
    summary = results["summary"]["copycat"]
    assert summary["copying"] == "more than the author's own new writing"
    assert summary["longest_copied_span_max"] >= 55


def test_known_answers_ceiling_and_attribution_are_reported() -> None:
    results = known_answer_results()
    share = results["measures"]["attribution_share"]
    assert share["ceiling"] == share["values"]["author (held-out)"]
    assert share["ceiling"]["value"] > results["attribution"]["chance"]
    assert results["measures"]["perplexity"]["ceiling"] is None
    for entry in results["measures"].values():
        for value in entry["values"].values():
            if value["ci_low"] is not None:
                assert value["ci_low"] <= value["ci_high"]


# --------------------------------------------------------------------------- what to compare


def _args(**overrides: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bm.configure_parser(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def _model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    return path


def _data_dir(home: Path) -> Path:
    data = home / "data" / "processed" / "demo"
    for split in ("train", "test"):
        (data / "texts" / split).mkdir(parents=True)
        (data / "texts" / split / "0000.txt").write_text("Some words.", encoding="utf-8")
    write_manifest(data, {"step": "prepare", "fingerprint": "x", "outputs": {}})
    return data


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("VOICETUNE_HOME", str(tmp_path))
    return tmp_path


def test_a_run_never_trained_names_the_script_to_run_first(home: Path) -> None:
    with pytest.raises(MissingArtifactError) as info:
        bm.build_plan(_args(run="never"))
    assert info.value.exit_code == 2
    assert "training/2_train_lora.sh" in str(info.value)


def test_a_merged_run_compares_base_with_the_merged_model(home: Path) -> None:
    base = _model_dir(home / "models" / "base")
    merged = _model_dir(home / "merged_models" / "demo")
    data = _data_dir(home)
    write_manifest(merged, {"step": "merge", "base_model": str(base), "data_dir": "data/processed/demo"})
    plan = bm.build_plan(_args(run="demo"))
    assert [(m.name, m.model_dir, m.adapter_dir) for m in plan.models] == [
        ("base", base, None),
        ("fine-tuned", merged, None),
    ]
    assert plan.train_dir == data.resolve() / "texts" / "train" and plan.test_dir.name == "test"
    assert plan.out_dir == home.resolve() / "benchmarks" / "results" / "demo"
    assert not plan.raw_author_texts and not plan.notes


def test_an_unmerged_run_uses_base_plus_adapter_and_says_so(home: Path) -> None:
    base = _model_dir(home / "models" / "base")
    adapter = home / "checkpoints" / "demo" / "output"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    _data_dir(home)
    write_manifest(
        home / "checkpoints" / "demo",
        {
            "step": "train",
            "adapter_dir": str(adapter),
            "base_model": str(base),
            "data_dir": "data/processed/demo",
        },
    )
    plan = bm.build_plan(_args(run="demo"))
    assert plan.models[1].adapter_dir == adapter and plan.models[1].model_dir == base
    assert "3_merge_adapter.sh" in plan.notes[0]


def test_unprepared_data_names_the_prepare_script(home: Path) -> None:
    base = _model_dir(home / "models" / "base")
    merged = _model_dir(home / "merged_models" / "demo")
    write_manifest(merged, {"step": "merge", "base_model": str(base), "data_dir": str(home / "nowhere")})
    with pytest.raises(MissingArtifactError, match=r"1_prepare_data\.sh"):
        bm.build_plan(_args(run="demo"))


def test_any_models_on_any_author(home: Path) -> None:
    one = _model_dir(home / "one")
    adapter = home / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(one)}))
    train, test = home / "train", home / "test"
    train.mkdir()
    test.mkdir()
    args = _args(
        model=[f"first={one}", f"second={adapter}", f"third={one}"],
        author_train=str(train),
        author_test=str(test),
        baseline="second",
        name="mine",
    )
    plan = bm.build_plan(args)
    assert [m.name for m in plan.models] == ["second", "first", "third"]
    assert plan.models[0].adapter_dir == adapter and plan.models[0].model_dir == one
    assert plan.raw_author_texts and plan.out_dir.name == "mine"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, "nothing to compare"),
        ({"model": ["no-equals-sign"]}, "NAME=PATH"),
        ({"model": ["a=MODEL", "a=MODEL"]}, "two models are named"),
        ({"model": ["a=MODEL"], "author_train": "TRAIN"}, "both --author-train"),
        ({"model": ["a=MODEL"], "author_train": "TRAIN", "author_test": "TRAIN"}, "same folder"),
        ({"model": ["a=MODEL"]}, "which author"),
        (
            {"model": ["a=MODEL"], "baseline": "zzz", "author_train": "TRAIN", "author_test": "TEST"},
            "--baseline",
        ),
        ({"model": ["a=MISSING"]}, "no such folder"),
    ],
)
def test_bad_input_gets_one_clear_line(home: Path, overrides: dict, message: str) -> None:
    model = _model_dir(home / "model")
    (home / "train").mkdir()
    (home / "test").mkdir()
    subst = {"MODEL": str(model), "MISSING": str(home / "missing"), "TRAIN": str(home / "train"),
             "TEST": str(home / "test")}  # fmt: skip

    def fill(value: object) -> object:
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, str):
            for key, path in subst.items():
                value = value.replace(key, path)
        return value

    with pytest.raises(VoicetuneError, match=message):
        bm.build_plan(_args(**{k: fill(v) for k, v in overrides.items()}))


def test_device_defaults_fill_only_what_was_not_set() -> None:
    cpu = bm.resolve_settings(bm.BenchmarkSettings(prompts=5), "cpu")
    assert (
        cpu.prompts == 5 and cpu.max_new_tokens == bm.CPU_DEFAULTS["max_new_tokens"] and cpu.device == "cpu"
    )
    gpu = bm.resolve_settings(bm.BenchmarkSettings(), "cuda")
    assert gpu.prompts == bm.GPU_DEFAULTS["prompts"] and gpu.ppl_window == 1024
    assert gpu.prompts > cpu.prompts and gpu.max_new_tokens > cpu.max_new_tokens
    with pytest.raises(Exception, match="extra"):
        bm.BenchmarkSettings.model_validate({"promts": 3})


# --------------------------------------------------------------------------- command line


def test_script_help_is_instant_and_complete(repo_root: Path) -> None:
    result = subprocess.run(
        [str(repo_root / "benchmarks" / "1_voice_comparison.sh"), "--help"],
        capture_output=True, text=True, timeout=60, cwd="/",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    flags = ["--run", "--model", "--author-train", "--author-test", "--others", "--prompts", "--seed",
             "--max-new-tokens", "--batch-size", "--device", "--ppl-max-tokens", "--temperature"]  # fmt: skip
    for flag in flags:
        assert flag in result.stdout
    # Help and logic load without torch: the model code is imported only when a run needs it.
    check = subprocess.run(
        [sys.executable, "-c", "import sys, voicetune.voice.benchmark; print('torch' in sys.modules)"],
        capture_output=True, text=True, timeout=60, cwd=repo_root,
    )  # fmt: skip
    assert check.stdout.strip() == "False"


def test_script_without_inputs_fails_with_one_line(repo_root: Path, tmp_path: Path) -> None:
    env = {"VOICETUNE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [str(repo_root / "benchmarks" / "1_voice_comparison.sh"), "--run", "nope"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "2_train_lora.sh" in lines[0]


def test_continuation_lengths_count_the_answers_that_end_early() -> None:
    author = ["one two three four five six seven eight nine ten"] * 4  # 10 words for the budget
    answers = ["one two three four five six seven", "one two", "a b c d e f g h i j", "x"]
    lengths = bm.continuation_lengths(answers, author)
    assert lengths == {"mean_words": 5.0, "ended_early_share": 0.5}  # under 6 words: "one two", "x"
    assert bm.continuation_lengths([], author) == {"mean_words": 0.0, "ended_early_share": 0.0}
