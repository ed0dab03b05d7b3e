"""`voicetune blind-test`: can you tell your own writing from the fine-tuned model's?

A local web page (127.0.0.1 only, a random token in the URL) shows, round by round, the start of one
of your held-out passages and two continuations in random order: the one you wrote and the model's.
You pick the one you wrote (click, tap, 1/2 or the arrow keys). At the end it says how often the
model was taken for you, with a 95% Wilson interval, beside the benchmark's voice score.

Continuations come from the benchmark's samples (benchmarks/results/<run>/results.json) when the
benchmark ran, else they are generated here with voicetune.model.generate (a handful is fine on a
CPU). Everything lives in benchmarks/results/<run>/blind/:

  session.json    the rounds (texts, which side holds yours), written once, atomically
  ratings.jsonl   one line per answer, appended and fsync'd: a closed tab or a killed server loses
                  nothing, and a restart continues with the next unrated round
  summary.json    the result so far (rewritten atomically after every answer; the report links it)

`--export-dpo` turns the rated rounds into preference pairs in Axolotl's `chat_template.default` DPO
format (your text chosen, the model's rejected) as a prepared-data folder, which the `dpo` profile
trains on: `voicetune train --profile dpo --data <run>-dpo ...` (the command is printed).
"""

from __future__ import annotations

import argparse
import hmac
import ipaddress
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from voicetune.core.artifacts import SCRIPTS, MergedModel, PreparedData, TrainedRun, stored_path
from voicetune.core.errors import MissingArtifactError, VoicetuneError
from voicetune.core.manifest import (
    MANIFEST_NAME,
    build_manifest,
    fingerprint,
    sha256_file,
    utc_now,
    write_json_atomic,
    write_manifest,
    write_text_atomic,
)
from voicetune.core.paths import processed_dir, results_dir
from voicetune.core.progress import progress, say
from voicetune.core.prompting import PromptFormat, build_messages, prompt_format_from_settings, render_prompt

SCHEMA_VERSION = 1
BLIND = "blind"
SESSION_FILE = "session.json"
RATINGS_FILE = "ratings.jsonl"
SUMMARY_FILE = "summary.json"
SUMMARY_MD = "summary.md"  # the same for a person; the benchmark report links it
SAMPLES_FILE = "samples.json"  # continuations generated here when the benchmark has none
AUTHOR = "author (held-out)"  # the benchmark's name for the author's own continuation
BENCHMARK_SCRIPT = f"{SCRIPTS['benchmark']} --run NAME"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
Z95 = 1.959963984540054
Side = Literal["left", "right"]


# ------------------------------------------------------------------------------------ pure core


@dataclass(frozen=True)
class Sample:
    """One held-out prompt, the person's own continuation and each model's."""

    index: int
    prompt: str
    real: str
    generated: Mapping[str, str]


@dataclass(frozen=True)
class Round:
    """One question: a prompt, the person's text and one model's, and the side the person's is on."""

    id: int
    sample: int
    model: str
    prompt: str
    real: str
    generated: str
    real_side: Side

    def sides(self) -> tuple[str, str]:
        return (self.real, self.generated) if self.real_side == "left" else (self.generated, self.real)


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a binomial share (always contains the estimate; sane at 0 and n)."""
    if n <= 0:
        raise ValueError("no trials")
    if not 0 <= successes <= n:
        raise ValueError(f"{successes} successes in {n} trials")
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # at k = 0 or k = n rounding can leave the bound a hair past the estimate: pin it
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


_WORD = re.compile(r"\S+")


def balance_lengths(real: str, generated: str) -> tuple[str, str]:
    """Both texts cut to the same number of whole words, so neither length nor a token cut mid-word
    gives the model away (both may end mid-sentence: the benchmark cuts both at a token budget)."""
    real_words = _WORD.findall(real.strip())
    model_words = _WORD.findall(generated.strip())
    n = min(len(real_words), len(model_words))
    if n == 0:
        return "", ""

    def cut(text: str, words: list[str]) -> str:
        if len(words) <= n:
            return text.strip()
        ends = [m.end() for m in _WORD.finditer(text.strip())]
        return text.strip()[: ends[n - 1]]

    return cut(real, real_words), cut(generated, model_words)


def build_rounds(samples: Sequence[Sample], models: Sequence[str], n: int, seed: int) -> list[Round]:
    """Up to n rounds from samples (each prompt shown once), models shared out evenly in a random
    order, the person's text on a random side."""
    usable = [s for s in samples if s.real.strip() and all(s.generated.get(m, "").strip() for m in models)]
    if not usable or not models:
        return []
    rng = random.Random(seed)
    order = list(usable)
    rng.shuffle(order)
    order = order[: max(0, n)]
    labels = [models[i % len(models)] for i in range(len(order))]
    rng.shuffle(labels)
    rounds = []
    for number, (sample, model) in enumerate(zip(order, labels, strict=True)):
        real, generated = balance_lengths(sample.real, sample.generated[model])
        side: Side = "left" if rng.random() < 0.5 else "right"
        rounds.append(Round(number, sample.index, model, sample.prompt.strip(), real, generated, side))
    return rounds


def summarize(
    rounds: Sequence[Round], ratings: Mapping[int, Mapping[str, Any]], voice_score: Any = None
) -> dict[str, Any]:
    """How often each model was taken for the person, with a 95% Wilson interval."""
    by_model: dict[str, list[bool]] = {}
    rows = []
    for r in rounds:
        rating = ratings.get(r.id)
        if rating is None:
            continue
        fooled = bool(rating["model_taken_for_person"])
        by_model.setdefault(r.model, []).append(fooled)
        rows.append(
            {
                "number": r.id + 1,
                "model": r.model,
                "correct": not fooled,
                "real": r.real,
                "generated": r.generated,
            }
        )
    models = []
    for model, outcomes in by_model.items():
        k, n = sum(outcomes), len(outcomes)
        low, high = wilson_interval(k, n)
        models.append(
            {
                "model": model,
                "rounds": n,
                "taken_for_person": k,
                "share": k / n,
                "ci_low": low,
                "ci_high": high,
            }
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "rounds_total": len(rounds),
        "rounds_rated": len(rows),
        "complete": len(rows) == len(rounds),
        "interval": "Wilson score, 95%",
        "chance": 0.5,
        "models": models,
        "voice_score": voice_score,
        "voice_score_text": format_voice_score(voice_score),
        "rounds": rows,
    }


def format_voice_score(score: Any) -> str | None:
    """A benchmark voice score as text: a number, or {value, ci_low, ci_high}."""
    if score is None:
        return None
    if isinstance(score, int | float) and not isinstance(score, bool):
        return f"{score:.3g}"
    if isinstance(score, Mapping) and isinstance(score.get("value"), int | float):
        text = f"{score['value']:.3g}"
        if isinstance(score.get("ci_low"), int | float) and isinstance(score.get("ci_high"), int | float):
            text += f" (95% interval {score['ci_low']:.3g} – {score['ci_high']:.3g})"
        return text
    return json.dumps(score, sort_keys=True)[:200]


def voice_score_for(results: Mapping[str, Any], model: str) -> Any:
    """results.json's `voice_score`: one value, or one per model (the fine-tuned model's is taken)."""
    score = results.get("voice_score")
    if isinstance(score, Mapping) and model in score:
        return score[model]
    return score


# ------------------------------------------------------------------------------------ inputs


def samples_from_results(results: Mapping[str, Any], models: Sequence[str]) -> list[Sample]:
    """The benchmark's samples: the author's held-out continuation and each model's."""
    out = []
    for entry in results.get("samples") or []:
        continuations = entry.get("continuations") or {}
        if not isinstance(continuations.get(AUTHOR), str):
            continue
        out.append(
            Sample(
                int(entry.get("index", len(out))),
                str(entry.get("prompt", "")),
                continuations[AUTHOR],
                {m: str(continuations.get(m) or "") for m in models},
            )
        )
    return out


def challenger_models(results: Mapping[str, Any]) -> list[str]:
    """Models other than the benchmark's baseline (the fine-tuned one(s)), in the benchmark's order."""
    names = [str(m["name"]) for m in results.get("models") or [] if isinstance(m, Mapping) and "name" in m]
    baseline = results.get("baseline")
    return [n for n in names if n != baseline]


# ------------------------------------------------------------------------------------ session


@dataclass
class Session:
    """The rounds of one blind test and the answers so far, kept on disk as they come."""

    folder: Path
    run: str
    rounds: list[Round]
    source: dict[str, Any]
    voice_score: Any = None
    ratings: dict[int, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ratings_path(self) -> Path:
        return self.folder / RATINGS_FILE

    def next_round(self) -> Round | None:
        return next((r for r in self.rounds if r.id not in self.ratings), None)

    def summary(self) -> dict[str, Any]:
        summary = summarize(self.rounds, self.ratings, self.voice_score)
        summary["run"] = self.run
        summary["source"] = self.source
        summary["ratings_file"] = str(self.ratings_path)
        return summary

    def state(self) -> dict[str, Any]:
        """What the page shows: the next round (without saying which side is whose) or the result."""
        current = self.next_round()
        state: dict[str, Any] = {"rated": len(self.ratings), "total": len(self.rounds), "round": None}
        if current is None:
            state["summary"] = self.summary()
        else:
            left, right = current.sides()
            state["round"] = {
                "id": current.id,
                "number": current.id + 1,
                "prompt": current.prompt,
                "left": left,
                "right": right,
            }
        return state

    def rate(self, round_id: int, picked: Side, ms: int | None = None) -> dict[str, Any]:
        """Record one answer (durably, before replying); an answer to a round already rated is ignored,
        so a double click or a resent request counts once."""
        with self.lock:
            current = self.next_round()
            if round_id in self.ratings:
                return self.state()
            if current is None or current.id != round_id:
                raise VoicetuneError(f"round {round_id} is not the one being asked (reload the page)")
            correct = picked == current.real_side
            rating = {
                "schema_version": SCHEMA_VERSION,
                "round": current.id,
                "sample": current.sample,
                "model": current.model,
                "real_side": current.real_side,
                "picked": picked,
                "correct": correct,
                "model_taken_for_person": not correct,
                "ms": ms,
                "at": utc_now(),
            }
            append_line(self.ratings_path, rating)
            self.ratings[current.id] = rating
            summary = self.summary()
            write_json_atomic(self.folder / SUMMARY_FILE, summary)
            write_text_atomic(self.folder / SUMMARY_MD, summary_markdown(summary))
            return self.state()


def append_line(path: Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line and fsync it: after this returns, the answer survives a crash."""
    data = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_ratings(path: Path, rounds: Sequence[Round]) -> dict[int, dict[str, Any]]:
    """The answers on disk, by round; a torn last line (a crash mid-write) is skipped, and so is an
    answer that does not match its round (from another session)."""
    by_id = {r.id: r for r in rounds}
    out: dict[int, dict[str, Any]] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        r = by_id.get(record.get("round")) if isinstance(record, dict) else None
        if r is None or record.get("sample") != r.sample or record.get("model") != r.model:
            continue
        out.setdefault(r.id, record)
    return out


def save_session(folder: Path, session_payload: Mapping[str, Any]) -> None:
    write_json_atomic(folder / SESSION_FILE, session_payload)


def load_session(folder: Path) -> dict[str, Any] | None:
    path = folder / SESSION_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise VoicetuneError(f"{path} is not valid JSON: move it away to start a new blind test") from exc
    return data if isinstance(data, dict) else None


def rounds_from_payload(payload: Mapping[str, Any]) -> list[Round]:
    return [Round(**r) for r in payload.get("rounds") or []]


def archive_session(folder: Path) -> Path | None:
    """Move an earlier session's files into blind/archive-<time>/ (nothing is deleted)."""
    # samples.json (generated continuations) stays: the new session draws its rounds from it again
    files = [folder / n for n in (SESSION_FILE, RATINGS_FILE, SUMMARY_FILE, SUMMARY_MD)]
    present = [p for p in files if p.exists()]
    if not present:
        return None
    target = folder / f"archive-{time.strftime('%Y%m%d-%H%M%S')}"
    target.mkdir(parents=True, exist_ok=False)
    for path in present:
        os.replace(path, target / path.name)
    return target


def open_session(
    folder: Path,
    run: str,
    samples: Sequence[Sample],
    models: Sequence[str],
    source: dict[str, Any],
    rounds: int,
    seed: int,
    voice_score: Any = None,
    new: bool = False,
) -> tuple[Session, str]:
    """The session in folder, resumed when it was built from the same samples, else a new one.
    Returns (session, a line saying which)."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = load_session(folder)
    if payload is not None and new:
        where = archive_session(folder)
        payload = None
        say(f"blind test: the earlier session was moved to {where}")
    if payload is not None:
        if payload.get("source", {}).get("sha256") != source.get("sha256"):
            raise VoicetuneError(
                f"the samples changed since the blind test in {folder} began ({source.get('path')} is "
                f"not the file it was built from): pass --new-session to start over (the earlier answers "
                f"are kept in {folder}/archive-<time>/)"
            )
        session = Session(folder, run, rounds_from_payload(payload), dict(payload["source"]), voice_score)
        session.ratings = read_ratings(session.ratings_path, session.rounds)
        note = f"resuming: {len(session.ratings)} of {len(session.rounds)} rounds rated"
        if list(payload.get("models") or []) != list(models):
            began = ", ".join(payload.get("models") or [])
            note += f" (models as when it began: {began}; --new-session to change)"
        return session, note
    built = build_rounds(samples, models, rounds, seed)
    if not built:
        raise VoicetuneError(
            f"no usable samples for {', '.join(models) or 'any model'} in {source.get('path')}: every "
            f"sample needs the author's continuation and the model's (re-run {BENCHMARK_SCRIPT})"
        )
    save_session(
        folder,
        {
            "schema_version": SCHEMA_VERSION,
            "run": run,
            "created": utc_now(),
            "seed": seed,
            "models": list(models),
            "source": source,
            "rounds": [asdict(r) for r in built],
        },
    )
    session = Session(folder, run, built, source, voice_score)
    return session, f"new blind test: {len(built)} rounds"


# ------------------------------------------------------------------------------------ server


PAGE_RESOURCE = "blind_test.html"


def page_html(nonce: str) -> bytes:
    text = resources.files("voicetune.voice").joinpath(PAGE_RESOURCE).read_text(encoding="utf-8")
    return text.replace("__NONCE__", nonce).encode("utf-8")


def _host_name(host_header: str) -> tuple[str, str | None]:
    """'127.0.0.1:8080' -> ('127.0.0.1', '8080'); '[::1]:80' -> ('[::1]', '80')."""
    value = host_header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, None
        rest = value[end + 1 :]
        return value[: end + 1], rest[1:] if rest.startswith(":") else None
    name, sep, port = value.rpartition(":")
    return (name, port) if sep and port.isdigit() else (value, None)


class BlindServer(ThreadingHTTPServer):
    """The blind test's HTTP server: one session, one secret token, Host header checked."""

    daemon_threads = True

    def __init__(self, session: Session, host: str, port: int, extra_host: str | None = None) -> None:
        self.session = session
        self.token = secrets.token_urlsafe(18)
        self.nonce = secrets.token_urlsafe(12)
        self.allowed_hosts = {*LOOPBACK_NAMES, *([extra_host.lower()] if extra_host else [])}
        self.any_ip_literal = extra_host is not None  # --host given: other machines use an IP address
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), BlindHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, host: str = "127.0.0.1") -> str:
        shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"http://{shown}:{self.port}/{self.token}/"

    def host_allowed(self, host_header: str | None) -> bool:
        """Loopback names (and an explicit --host) on our port only: a DNS-rebinding page arrives with
        its own domain in Host and is refused."""
        if not host_header:
            return False
        name, port = _host_name(host_header)
        if port is not None and port != str(self.port):
            return False
        return name in self.allowed_hosts or (self.any_ip_literal and _is_ip_literal(name))


def _is_ip_literal(name: str) -> bool:
    """An IP address, not a name: DNS rebinding needs a name the attacker controls."""
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class BlindHandler(BaseHTTPRequestHandler):
    server: BlindServer
    server_version = "voicetune-blind-test"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the page's own traffic is not news; errors reach the page

    # -- plumbing

    def _send(
        self, status: int, body: bytes, content_type: str, extra: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in {**SECURITY_HEADERS, **(extra or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _route(self) -> str | None:
        """The path below /<token>/, or None after answering a refusal."""
        if not self.server.host_allowed(self.headers.get("Host")):
            self._error(HTTPStatus.FORBIDDEN, "this server answers only to 127.0.0.1 / localhost")
            return None
        path = self.path.split("?", 1)[0]
        parts = path.split("/", 2)  # '', token, rest
        token = parts[1] if len(parts) > 1 else ""
        if not hmac.compare_digest(token.encode(), self.server.token.encode()):
            self._error(HTTPStatus.NOT_FOUND, "not found: open the URL the blind-test command printed")
            return None
        if len(parts) == 2:
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", f"/{self.server.token}/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return parts[2]

    # -- verbs

    def do_GET(self) -> None:
        route = self._route()
        if route is None:
            return
        if route == "":
            nonce = self.server.nonce
            csp = (
                f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
            )
            self._send(
                HTTPStatus.OK, page_html(nonce), "text/html; charset=utf-8", {"Content-Security-Policy": csp}
            )
        elif route == "api/state":
            self._json(HTTPStatus.OK, self.server.session.state())
        elif route == "api/summary":
            self._json(HTTPStatus.OK, self.server.session.summary())
        else:
            self._error(HTTPStatus.NOT_FOUND, "not found")

    do_HEAD = do_GET

    def do_POST(self) -> None:
        route = self._route()
        if route is None:
            return
        if route != "api/rate":
            self._error(HTTPStatus.NOT_FOUND, "not found")
            return
        origin = self.headers.get("Origin")
        if origin is not None and not self.server.host_allowed(origin.partition("://")[2]):
            self._error(HTTPStatus.FORBIDDEN, "cross-origin request refused")
            return
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            self._error(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= 4096:
            self._error(HTTPStatus.BAD_REQUEST, "a rating is a small JSON object")
            return
        try:
            body = json.loads(self.rfile.read(length))
            round_id = int(body["round"])
            picked = body["picked"]
            ms = body.get("ms")
            ms = int(ms) if isinstance(ms, int | float) and math.isfinite(ms) else None
        except (ValueError, KeyError, TypeError):
            self._error(HTTPStatus.BAD_REQUEST, 'expected {"round": N, "picked": "left"|"right"}')
            return
        if picked not in ("left", "right"):
            self._error(HTTPStatus.BAD_REQUEST, 'picked must be "left" or "right"')
            return
        try:
            state = self.server.session.rate(round_id, picked, ms)
        except VoicetuneError as exc:
            self._error(HTTPStatus.CONFLICT, str(exc))
            return
        except OSError as exc:
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"could not save the answer: {exc.strerror or exc}")
            return
        self._json(HTTPStatus.OK, state)


def _stop(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def serve(session: Session, host: str, port: int, explicit_host: bool, open_browser: bool) -> int:
    """Serve until Ctrl-C; every answer is already on disk, so stopping loses nothing."""
    try:
        server = BlindServer(session, host, port, extra_host=host if explicit_host else None)
    except OSError as exc:
        raise VoicetuneError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose another --port "
            f"(0 = any free one)"
        ) from exc
    url = server.url("127.0.0.1" if host in ("127.0.0.1", "0.0.0.0") else host)
    say(f"blind test: open {url}")
    say("  (keep this running; Ctrl-C stops it, and a restart continues where you left off)")
    if open_browser:
        import webbrowser

        threading.Timer(0.3, webbrowser.open, args=(url,)).start()
    previous = signal.signal(signal.SIGTERM, _stop)  # `kill` stops it like Ctrl-C, with the summary
    try:
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    summary = session.summary()
    say(
        f"blind test: {summary['rounds_rated']} of {summary['rounds_total']} rounds rated; {RATINGS_FILE} "
        f"and {SUMMARY_FILE} are in {session.folder}"
    )
    for line in summary_lines(summary):
        say(line)
    return 0


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """blind/summary.md: the result, then every rated round with both texts."""
    out = [f"# Blind test: {summary.get('run')}", ""]
    out.append(f"{summary['rounds_rated']} of {summary['rounds_total']} rounds rated ({RATINGS_FILE}).")
    out += ["", *[f"- {line}" for line in summary_lines(summary)], ""]
    for r in summary.get("rounds") or []:
        verdict = "you picked your own text" if r["correct"] else "you took the model's text for yours"
        out += [f"## Round {r['number']} ({r['model']}): {verdict}", ""]
        out += [f"**Yours:** {r['real']}", "", f"**{r['model']}:** {r['generated']}", ""]
    return "\n".join(out).rstrip() + "\n"


def report_section(results_folder: Path, run: str) -> tuple[str, str]:
    """(Markdown, HTML) of the benchmark report's blind-test section: the result when blind/summary.json
    exists, else how to run it; both link blind/summary.md."""
    import html

    path = Path(results_folder) / BLIND / SUMMARY_FILE
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = None
    link, command = f"{BLIND}/{SUMMARY_MD}", f"voicetune blind-test --run {run}"
    lines = summary_lines(summary) if summary and summary.get("models") else []
    if lines:
        rated = f"{summary['rounds_rated']} of {summary['rounds_total']} rounds rated"
        before, after = "From ", f" ({rated}; "
    else:
        before = "Can you tell your own continuation from the model's? "
        after = " asks you round by round in your browser; the result goes to "
    end = "):" if lines else "."
    md = f"## Blind test\n\n{before}`{command}`{after}[{link}]({link}){end}\n"
    md += "".join(f"\n- {line}" for line in lines)
    page = (
        f'<h2 id="blind-test">Blind test</h2><p>{html.escape(before)}<code>{html.escape(command)}</code>'
        f'{html.escape(after)}<a href="{link}">{link}</a>{end}</p>'
    )
    if lines:
        page += "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>"
    return md.rstrip() + "\n", page


def keep_answers(previous: Path, replacement: Path) -> None:
    """Carry blind/ from a results folder into the one replacing it (a benchmark re-run): the person's
    answers are never deleted; a session built from other samples is archived when next opened."""
    if (Path(previous) / BLIND).is_dir():
        shutil.copytree(Path(previous) / BLIND, Path(replacement) / BLIND, dirs_exist_ok=True)


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    lines = [
        f"{m['model']}: taken for you in {m['taken_for_person']} of {m['rounds']} rounds, "
        f"{100 * m['share']:.0f}% (95% Wilson interval {100 * m['ci_low']:.0f}–{100 * m['ci_high']:.0f}%; "
        f"chance 50%)"
        for m in summary.get("models") or []
    ]
    if summary.get("voice_score_text"):
        lines.append(f"benchmark voice score: {summary['voice_score_text']}")
    return lines


# ------------------------------------------------------------------------------------ where samples come from


@dataclass
class Source:
    """The samples of one run, and what they came from."""

    samples: list[Sample]
    models: list[str]
    info: dict[str, Any]  # kind, path, sha256: recorded in session.json
    voice_score: Any = None
    data_dir: Path | None = None


def _normalise(text: str) -> str:
    return " ".join(text.split())


def check_prompts_held_out(samples: Sequence[Sample], test_texts: Sequence[str], where: Path) -> None:
    """Every prompt must be the start of a passage from the run's held-out test split: samples from
    another run or from training text would make the test meaningless."""
    corpus = "\n".join(_normalise(t) for t in test_texts)
    foreign = [s.index for s in samples if _normalise(s.prompt)[:200] not in corpus]
    if foreign:
        raise VoicetuneError(
            f"{len(foreign)} of {len(samples)} prompts in {where} are not from the run's held-out texts "
            f"(first: sample {foreign[0]}): the samples belong to another run or other data; re-run "
            f"{BENCHMARK_SCRIPT}"
        )


def benchmark_source(run: str, with_base: bool) -> Source | None:
    """The benchmark's samples for run (None when it has not run)."""
    folder = results_dir(run)
    path = folder / "results.json"
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise VoicetuneError(f"{path} is not valid JSON: re-run {BENCHMARK_SCRIPT}") from exc
    if not results.get("samples"):
        return None
    models = challenger_models(results)[:1]
    if not models:
        raise VoicetuneError(
            f"{path} compares no fine-tuned model with the baseline: re-run {BENCHMARK_SCRIPT}"
        )
    if with_base and results.get("baseline"):
        models.append(str(results["baseline"]))
    data = (results.get("author") or {}).get("data_dir")
    return Source(
        samples_from_results(results, models),
        models,
        {"kind": "benchmark", "path": str(path), "sha256": sha256_file(path)},
        voice_score_for(results, models[0]),
        Path(data) if data else None,
    )


def run_data_dir(run: str, recorded: Path | None) -> Path | None:
    """The run's prepared data: where the samples say, else where its merged model or training says
    (a results folder copied from another machine records a path that is not here)."""
    merged = MergedModel.find(run)
    candidates = [
        recorded,
        merged.data_dir if merged else None,
        TrainedRun.load(run).data_dir if TrainedRun.exists(run) else None,
    ]
    return next((c for c in candidates if c is not None and (c / MANIFEST_NAME).is_file()), None)


def held_out_texts(data_dir: Path) -> list[str]:
    """The run's prepared test split (its cleaned texts, one per held-out document)."""
    folder = PreparedData.load(data_dir).texts_dir("test")
    texts = [p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.txt"))]
    if not texts:
        raise MissingArtifactError("the held-out test texts", folder, SCRIPTS["prepare"])
    return texts


def _read_generated(path: Path) -> Source:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        samples = [Sample(**s) for s in payload["samples"]]
        models = [str(m) for m in payload["models"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VoicetuneError(f"{path} is damaged: delete it to generate the samples again") from exc
    data = payload.get("data_dir")
    return Source(
        samples, models, {"kind": "generated", "path": str(path), "sha256": sha256_file(path)},
        None, Path(data) if data else None,
    )  # fmt: skip


def _token_counter(tokenizer: Any) -> Any:
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


def generated_source(
    run: str, folder: Path, rounds: int, with_base: bool, seed: int, device: str,
    prompt_tokens: int, max_new_tokens: int,
) -> Source:  # fmt: skip
    """Samples generated here (once; kept in blind/samples.json) when the benchmark has not run."""
    path = folder / SAMPLES_FILE
    if path.is_file():
        return _read_generated(path)
    from voicetune.model import generate as gen
    from voicetune.voice.benchmark import resolve_run, select_prompts

    base, tuned, data_dir, notes = resolve_run(run)
    for note in notes:
        say(f"note: {note}")
    if data_dir is None:
        raise VoicetuneError(f"run '{run}' records no prepared data folder: re-run training/2_train_lora.sh")
    test_texts = held_out_texts(data_dir)
    fmt = gen.prompt_format(data_dir)
    settings = gen.GenerateSettings(
        mode="continue",
        max_new_tokens=max_new_tokens,
        temperature=0.8,
        top_p=0.95,
        top_k=0,
        repetition_penalty=1.0,
        seed=seed,
        stream=False,
        device=device,
    )  # fmt: skip (the benchmark's sampling settings)
    items: list[Any] = []
    outputs: dict[str, list[str]] = {}
    say(f"blind test: no benchmark samples in {results_dir(run)}: generating {rounds} continuations")
    from transformers import set_seed

    for spec in [tuned, base] if with_base else [tuned]:
        source = gen.ModelSource(spec.model_dir, spec.adapter_dir, data_dir, spec.name)
        model, tokenizer = gen.load_model(source, device)
        if not items:  # prompts cut in the fine-tuned model's tokens, as the benchmark cuts them
            items = select_prompts(
                test_texts, rounds, prompt_tokens, max_new_tokens, seed, _token_counter(tokenizer)
            )
            if not items:
                raise VoicetuneError(
                    f"the held-out texts of run '{run}' are too short for prompts of {prompt_tokens} "
                    f"tokens: lower --prompt-tokens"
                )
        set_seed(seed)
        outputs[spec.name] = []
        for item in progress(items, desc=f"{spec.name}: generate", unit="text"):
            prompt = render_prompt(tokenizer, "continue", item.prompt, fmt)
            outputs[spec.name] += gen.sample(model, tokenizer, prompt, 1, settings)
        del model
    samples = [
        Sample(i, item.prompt, item.reference, {name: texts[i] for name, texts in outputs.items()})
        for i, item in enumerate(items)
    ]
    write_json_atomic(
        path,
        {
            "schema_version": SCHEMA_VERSION,
            "run": run,
            "created": utc_now(),
            "models": list(outputs),
            "model_dirs": {tuned.name: str(tuned.model_dir), base.name: str(base.model_dir)},
            "adapter_dir": str(tuned.adapter_dir) if tuned.adapter_dir else None,
            "data_dir": str(data_dir),
            "settings": settings.model_dump() | {"prompt_tokens": prompt_tokens},
            "samples": [asdict(s) for s in samples],
        },
    )
    return _read_generated(path)


# ------------------------------------------------------------------------------------ DPO pairs


DPO_FORMAT = "dpo"  # the data format the `dpo` profile trains on (Axolotl type chat_template.default)


def dpo_rows(session: Session, fmt: PromptFormat, include_fooled: bool = False) -> list[dict[str, Any]]:
    """Axolotl `chat_template.default` DPO rows: the training pairs' continue prompt, the person's own
    text chosen, the model's rejected. By default only rounds where the person spotted the model:
    a continuation that passed for theirs is not clearly worse."""
    rows = []
    for r in session.rounds:
        rating = session.ratings.get(r.id)
        if rating is None or (rating["model_taken_for_person"] and not include_fooled):
            continue
        rows.append(
            {
                "messages": build_messages("continue", r.prompt, fmt),
                "chosen": {"role": "assistant", "content": r.real},
                "rejected": {"role": "assistant", "content": r.generated},
            }
        )
    return rows


def dpo_start(run: str) -> tuple[Path | None, Path | None, str]:
    """(model to start DPO from, adapter to load into it, a note): the merged model when there is one
    (it is then also DPO's reference model), else the run's base model + its adapter."""
    from voicetune.voice.benchmark import resolve_run

    try:
        base, tuned, _, _ = resolve_run(run)
    except VoicetuneError:
        return None, None, f"no trained model for run '{run}' here: DPO starts from the default base model"
    if tuned.adapter_dir is None:
        return (
            tuned.model_dir,
            None,
            f"DPO starts from the merged model {tuned.model_dir} (also its reference)",
        )
    return (
        base.model_dir,
        tuned.adapter_dir,
        f"run '{run}' is not merged: DPO continues its adapter on {base.model_dir}, and the reference "
        f"model is the base without the adapter (merge first to make the fine-tuned model the reference)",
    )


def export_dpo(session: Session, source: Source, run: str, name: str, include_fooled: bool) -> Path:
    """Write the pairs as a prepared-data folder (train.jsonl + manifest) that `voicetune train
    --profile dpo --data NAME` reads; returns the folder."""
    from voicetune.core.manifest import atomic_output_dir, sha256_text

    prepared = PreparedData.load(source.data_dir) if source.data_dir else None
    data_settings = prepared.settings if prepared else {}
    fmt = prepared.prompt_format if prepared else prompt_format_from_settings(None)
    if fmt.completion:
        raise VoicetuneError(
            f"run '{run}' was trained on raw text (completion format): DPO pairs need chat data"
        )
    rows = dpo_rows(session, fmt, include_fooled)
    if not rows:
        rated = len(session.ratings)
        raise VoicetuneError(
            f"no preference pairs yet: {rated} rounds rated, none where you spotted the model; rate more "
            f"rounds (voicetune blind-test --run {run}) or pass --include-fooled"
        )
    start, adapter, note = dpo_start(run)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    out = processed_dir(name)
    settings = {
        "format": DPO_FORMAT,
        "base_model": stored_path(start, out) if start else None,  # relative to the folder, as prepare does
        "adapter_dir": stored_path(adapter, out) if adapter else None,
        "sequence_len": data_settings.get("sequence_len"),
        "system_prompt": fmt.system_prompt,
        "prompts": dict(fmt.templates),
        "source_run": run,
        "include_fooled": include_fooled,
    }
    inputs = {
        "session": sha256_file(session.folder / SESSION_FILE),
        "ratings": sha256_file(session.ratings_path),
        "data_dir": str(source.data_dir) if source.data_dir else None,
    }
    with atomic_output_dir(out) as tmp:
        (tmp / "train.jsonl").write_text(text, encoding="utf-8")
        write_manifest(
            tmp,
            build_manifest(
                "blind-test-dpo",
                fingerprint("blind-test-dpo", SCHEMA_VERSION, settings, inputs, sha256_text(text)),
                settings=settings,
                inputs=inputs,
                outputs={"train.jsonl": sha256_text(text)},
                pairs=len(rows),
            ),
        )
    say(f"blind test: {len(rows)} DPO pairs (your text chosen, the model's rejected) -> {out}/train.jsonl")
    say(f"note: {note}")
    command = f"training/2_train_lora.sh --profile dpo --data {name} --run {name}"
    if adapter is not None:
        command += f" --set lora_model_dir={adapter}"
    say(f"train on them with:\n  {command}")
    return out


# ------------------------------------------------------------------------------------ CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "A blind test in your browser: the start of one of your held-out passages, then your own "
        "continuation and the fine-tuned model's in random order: which one did you write? Serves a "
        "local page (127.0.0.1, a secret token in the URL); answers go to "
        "benchmarks/results/<run>/blind/ratings.jsonl as you give them."
    )
    parser.add_argument("--run", required=True, help="the trained run (its benchmark samples are reused)")
    parser.add_argument("--rounds", type=int, default=12, help="rounds in a new session (default 12)")
    parser.add_argument(
        "--with-base", action="store_true", help="also put the base model's continuations in some rounds"
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    parser.add_argument(
        "--host",
        default=None,
        help="address to listen on (default 127.0.0.1; another address makes the page reachable from "
        "other machines: only on a network you trust)",
    )
    parser.add_argument("--no-browser", action="store_true", help="print the URL, do not open a browser")
    parser.add_argument(
        "--new-session",
        action="store_true",
        help="start over with new rounds (the earlier session moves to blind/archive-<time>/; generated "
        "continuations in blind/samples.json are reused: delete it for new ones)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for the rounds (default: random)")
    parser.add_argument("--summary", action="store_true", help="print the result so far and exit")
    dpo = parser.add_argument_group("preference pairs")
    dpo.add_argument(
        "--export-dpo",
        action="store_true",
        help="write the rated rounds as DPO pairs to data/processed/<run>-dpo/ and exit",
    )
    dpo.add_argument("--dpo-name", default=None, help="name of the pairs folder (default <run>-dpo)")
    dpo.add_argument(
        "--include-fooled",
        action="store_true",
        help="also rounds where the model passed for you (default: only those where you spotted it)",
    )
    gen = parser.add_argument_group("generating (only when the benchmark has no samples for the run)")
    gen.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    gen.add_argument("--prompt-tokens", type=int, default=64, help="prompt length in tokens (default 64)")
    gen.add_argument("--max-new-tokens", type=int, default=72, help="continuation length (default 72)")


def run(args: argparse.Namespace) -> int:
    if args.rounds < 1:
        raise VoicetuneError("--rounds must be at least 1")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", args.run):
        raise VoicetuneError(
            f"run name '{args.run}' is not a folder name: use letters, digits, '.', '_', '-'"
        )
    folder = results_dir(args.run) / BLIND
    if (args.summary or args.export_dpo) and not (folder / SESSION_FILE).is_file():
        raise VoicetuneError(
            f"no blind test for run '{args.run}' yet ({folder / SESSION_FILE} is missing): run "
            f"voicetune blind-test --run {args.run} and rate some rounds first",
            exit_code=2,
        )
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    source = benchmark_source(args.run, args.with_base)
    if source is None:
        from voicetune.core.privacy import apply_private_env

        apply_private_env()
        folder.mkdir(parents=True, exist_ok=True)
        source = generated_source(
            args.run, folder, args.rounds, args.with_base, seed, args.device, args.prompt_tokens,
            args.max_new_tokens,
        )  # fmt: skip
    source.data_dir = run_data_dir(args.run, source.data_dir)
    if source.data_dir is not None:
        check_prompts_held_out(source.samples, held_out_texts(source.data_dir), Path(source.info["path"]))
    else:
        say(f"note: run '{args.run}' has no prepared data here: the prompts are not checked against it")
    session, note = open_session(
        folder, args.run, source.samples, source.models, source.info, args.rounds, seed,
        source.voice_score, new=args.new_session,
    )  # fmt: skip
    say(f"blind test: {note} ({folder})")
    if args.summary:
        summary = session.summary()
        say(f"{summary['rounds_rated']} of {summary['rounds_total']} rounds rated")
        for line in summary_lines(summary):
            say(line)
        return 0
    if args.export_dpo:
        export_dpo(session, source, args.run, args.dpo_name or f"{args.run}-dpo", args.include_fooled)
        return 0
    host = args.host or "127.0.0.1"
    return serve(session, host, args.port, args.host is not None, not args.no_browser)
