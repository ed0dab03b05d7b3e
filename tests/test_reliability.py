"""Kills, bad input and unwritable outputs across the real `voicetune prepare` and `merge` (issue 9).

A prepare is SIGKILLed at spread-out moments (while reading, cleaning, tokenising, writing) over a
data folder that already holds a complete earlier version. After every kill, what a later step
would read is either the earlier complete version or the new complete one, never a mix, and the
next run finishes and sweeps every leftover. Two more kills land exactly while the output is being
written (fresh, and over a complete artifact); the bad-input corpus and odd file names go through
the whole prepare command; read-only and full file systems are real mounts in a private mount
namespace (`unshare`), since chmod does not stop root.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lora_fixtures import make_data_dir, make_run, shared_adapter

from tests.prepare_fixtures import bad_corpus
from voicetune.cli import main
from voicetune.core.errors import VoicetuneError
from voicetune.core.manifest import atomic_output_dir, remove_stale_temporaries, require_manifest, sha256_file

REPO = Path(__file__).resolve().parent.parent
BOOKS = sorted((REPO / "data" / "demo" / "author").glob("*.txt"))
KILLS = 6


def _prepare(home: Path, input_dir: Path, base_model: Path) -> list[str]:
    return [
        sys.executable, "-m", "voicetune", "prepare", "--input", str(input_dir), "--name", "k",
        "--base-model", str(base_model),
    ]  # fmt: skip


def _env(home: Path) -> dict[str, str]:
    return dict(os.environ, VOICETUNE_HOME=str(home), PYTHONPATH=str(REPO))


def _hashes(folder: Path) -> dict[str, str]:
    manifest = json.loads((folder / "manifest.json").read_text())
    return {name: sha256_file(folder / name) for name in manifest["outputs"]}


def _consistent(folder: Path) -> str:
    """'absent' or the fingerprint of a complete artifact whose files match its manifest."""
    if not folder.exists():
        return "absent"
    manifest = require_manifest(folder, "prepared data", "training/1_prepare_data.sh")
    for name, digest in manifest["outputs"].items():
        assert sha256_file(folder / name) == digest, f"{name} does not match the manifest after a kill"
    return str(manifest["fingerprint"])


@pytest.mark.slow
def test_prepare_killed_at_any_moment_never_leaves_a_mixed_artifact(
    tmp_path: Path, base_model_dir: Path
) -> None:
    home = tmp_path / "home"
    writing = tmp_path / "writing with spaces"
    writing.mkdir()
    for book in BOOKS[:3]:
        shutil.copy(book, writing / book.name)
    out = home / "data" / "processed" / "k"
    env = _env(home)
    command = _prepare(home, writing, base_model_dir)

    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    old = _consistent(out)
    started = time.monotonic()
    other = subprocess.run([*command, "--seed", "7"], env=env, capture_output=True, text=True)
    duration = time.monotonic() - started
    assert other.returncode == 0, other.stderr
    new = _consistent(out)
    assert new != old
    subprocess.run(command, env=env, check=True, capture_output=True)
    assert _consistent(out) == old  # the first settings again: a complete rebuild, the same artifact

    seen = []
    for i in range(KILLS):
        process = subprocess.Popen(
            [*command, "--seed", "7"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(duration * (i + 0.5) / KILLS)
        process.send_signal(signal.SIGKILL)
        process.wait()
        state = _consistent(out)
        assert state in (old, new), "a killed prepare left an artifact that is neither version"
        seen.append("old" if state == old else "new" if state == new else "absent")
        leftovers = [p.name for p in out.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
        if state == old and leftovers:
            seen.append("interrupted while writing")
    again = subprocess.run([*command, "--seed", "7"], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert _consistent(out) == new
    assert not [p for p in out.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    print(f"{KILLS} kills over a {duration:.1f} s prepare: {seen}")


def test_a_kill_between_the_two_renames_keeps_the_previous_artifact(tmp_path: Path) -> None:
    """The one moment a crash leaves no artifact at its name: the previous one moved aside, the new
    one not yet renamed in. The sweep before the next write puts the previous one back."""
    target = tmp_path / "artifact"
    with atomic_output_dir(target) as tmp:
        (tmp / "data.txt").write_text("complete")
    aside = tmp_path / ".artifact.old-999999"  # what the killed process (pid long gone) left
    os.replace(target, aside)
    (tmp_path / ".artifact.tmp-999999").mkdir()
    remove_stale_temporaries(tmp_path)
    assert (target / "data.txt").read_text() == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def test_an_output_folder_that_cannot_be_created_gives_one_line(tmp_path: Path, base_model_dir: Path) -> None:
    """Read-only output as root (chmod does not stop root): data/processed is a file, so nothing
    under it can be created. One line naming the folder; nothing half-written anywhere."""
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "data" / "processed").write_text("not a folder")
    writing = tmp_path / "writing"
    writing.mkdir()
    shutil.copy(BOOKS[0], writing / BOOKS[0].name)
    result = subprocess.run(
        _prepare(home, writing, base_model_dir), env=_env(home), capture_output=True, text=True
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "processed" in last and "Traceback" not in result.stderr, result.stderr[-1500:]
    assert sorted(p.name for p in (home / "data").iterdir()) == ["processed"]


def test_disk_full_while_writing_an_artifact_is_one_clear_error(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    target = tmp_path / "artifact"
    with pytest.raises(VoicetuneError) as caught, atomic_output_dir(target) as tmp:
        (tmp / "part").symlink_to("/dev/full")  # every write into it fails with ENOSPC
        with open(tmp / "part", "w") as handle:
            handle.write("x" * 65536)
            handle.flush()
    assert "disk full" in str(caught.value) or "No space" in str(caught.value)
    assert not target.exists() and not list(tmp_path.iterdir())


# ------------------------------------------------------------------ a kill exactly while writing


def _kill_while_writing(command: list[str], env: dict[str, str], out: Path) -> Path | None:
    """Start `command`, SIGKILL it once its temporary output folder holds a file; return that folder.

    None when the run finished before it could be caught (its write phase is a few tens of ms).
    """
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    temporary = out.with_name(f".{out.name}.tmp-{process.pid}")
    deadline = time.monotonic() + 120
    while process.poll() is None:
        assert time.monotonic() < deadline, "prepare took over 2 minutes"
        try:
            with os.scandir(temporary) as entries:
                if any(True for _ in entries):
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                    return temporary
        except FileNotFoundError:
            pass
        time.sleep(0.0005)
    return None


def _train_dry_run(home: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicetune", "train", "--dry-run", "--data", name],
        env=_env(home), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one `error:` line on stderr and no traceback; that line."""
    assert result.returncode != 0, result.stdout[-1500:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-1500:]
    return errors[0]


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


@pytest.mark.slow
def test_prepare_killed_while_writing_fresh_and_over_a_complete_artifact(
    tmp_path: Path, base_model_dir: Path
) -> None:
    """Fresh: no folder at the final name, and a later step refuses one line. Over a complete
    artifact: the earlier one stays readable (every file matches its manifest) until the new one is
    renamed in. Each time the next run completes and sweeps the killed one's temporary folder."""
    home = tmp_path / "home"
    writing = tmp_path / "my writing"
    writing.mkdir()
    for book in BOOKS[:2]:
        shutil.copy(book, writing / book.name)
    out = home / "data" / "processed" / "k"
    env = _env(home)
    command = _prepare(home, writing, base_model_dir)

    # ---- fresh: nothing at data/processed/k yet
    temporary, attempts = None, 0
    while temporary is None and attempts < 3:
        attempts += 1
        temporary = _kill_while_writing(command, env, out)
        if temporary is None:
            shutil.rmtree(out)  # finished before the kill: try again from nothing
    assert temporary is not None, "prepare finished three times before it could be killed while writing"
    assert not out.exists(), "a prepare killed while writing left a folder at the final name"
    assert temporary.is_dir() and not (temporary / "manifest.json").exists()  # no clean-up after SIGKILL
    line = _one_error_line(_train_dry_run(home, "k"))
    assert f"prepared data not found at {out}" in line and "1_prepare_data.sh" in line, line
    # the half-written folder copied to the final name by hand: still refused, since it has no manifest
    shutil.copytree(temporary, out)
    line = _one_error_line(_train_dry_run(home, "k"))
    assert str(out) in line and "1_prepare_data.sh" in line, line
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-1500:]
    old = _consistent(out)
    assert _leftovers(out.parent) == [], "the next run must sweep what the killed one left"

    # ---- over a complete artifact: a changed setting makes a new version, killed while it is written
    caught = None
    for seed in (7, 11, 13):
        caught = _kill_while_writing([*command, "--seed", str(seed)], env, out)
        if caught is not None:
            break
        old = _consistent(out)  # it finished: that version is now the complete one to keep
    assert caught is not None, "prepare finished three times before it could be killed while writing"
    print(f"killed while writing: fresh on attempt {attempts}, over a complete artifact at seed {seed}")
    assert _consistent(out) == old, "the complete artifact must stay intact until the new one is renamed in"
    assert caught.is_dir()
    again = subprocess.run([*command, "--seed", str(seed)], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-1500:]
    assert _consistent(out) not in ("absent", old)
    assert _leftovers(out.parent) == []


# ------------------------------------------------------------------ bad input and odd names, whole step


def test_bad_and_odd_inputs_through_prepare_lose_nothing_valid(
    tmp_path: Path, base_model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole `voicetune prepare` over the bad-input corpus plus valid files with odd names and
    encodings: one `skipped` line per bad item naming it, every valid file in the prepared data."""
    raw = tmp_path / "raw input"
    expected = bad_corpus(raw)
    paragraphs = [p for p in BOOKS[2].read_text(encoding="utf-8").split("\n\n") if len(p.split()) > 40]
    valid = {
        "my notes/été 2024/Ünïcødé café.md": paragraphs[0:40],
        "my notes/日記 one.txt": paragraphs[40:80],
        "latin-1 letters.txt": paragraphs[80:120],  # stored as cp1252: non-UTF-8, still valid
    }
    for rel, text in valid.items():
        path = raw / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        body = "\n\n".join(text) + "\n\nDéjà vu at the café, naïvely.\n"
        path.write_bytes(body.encode("cp1252" if rel.startswith("latin") else "utf-8"))
    monkeypatch.setenv("VOICETUNE_HOME", str(tmp_path / "home"))
    code = main([
        "prepare", "--input", str(raw), "--name", "odd", "--base-model", str(base_model_dir),
        "--max-file-mb", "1", "--min-words", "500",
    ])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err[-1500:]
    skipped = [line for line in captured.out.splitlines() if line.startswith("skipped ")]
    for name, word in expected.items():
        lines = [line for line in skipped if line.startswith(f"skipped {name}:")]
        assert len(lines) == 1, (name, skipped)
        assert word.lower() in lines[0].lower(), lines[0]
    assert len(skipped) == len(expected) == 12
    out = tmp_path / "home" / "data" / "processed" / "odd"
    manifest = require_manifest(out, "prepared data", "training/1_prepare_data.sh")
    sources = {unit["source"] for split in manifest["units"].values() for unit in split.values()}
    assert sources == {"good.txt", *valid}, sources
    texts = "".join(p.read_text(encoding="utf-8") for p in sorted((out / "texts").rglob("*.txt")))
    for text in valid.values():
        assert " ".join(text[5].split()[:12]) in " ".join(texts.split())  # the words themselves survive
    assert "Déjà vu at the café" in texts  # decoded from cp1252, not mangled


# ------------------------------------------------------------------ real read-only and full file systems


@functools.cache
def _private_mounts() -> list[str] | None:
    """`unshare` arguments giving a private mount namespace where tmpfs and read-only bind mounts
    work (root: -m; others: -rm, a user namespace), or None when this machine allows neither."""
    for args in (["unshare", "-m"], ["unshare", "-rm"]) if os.geteuid() == 0 else (["unshare", "-rm"],):
        probe = [*args, "sh", "-c", "mount -t tmpfs -o size=16k tmpfs /mnt 2>/dev/null || "
                 "mount -t tmpfs -o size=16k tmpfs /tmp"]  # fmt: skip
        try:
            if subprocess.run(probe, capture_output=True, timeout=30).returncode == 0:
                return args
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def _run_with_mount(
    mount: str, target: Path, command: list[str], env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run command with `mount` applied to target inside a private mount namespace (gone with it).

    Returns the command's result and what target held afterwards, as seen inside the namespace.
    """
    args = _private_mounts()
    if args is None:
        pytest.skip("no private mount namespace here (unshare -m/-rm refused): read-only/full disk untested")
    folder = shlex.quote(str(target))
    script = (
        f'{mount} && {{ {shlex.join(command)}; echo "exit=$?" >&2; }}; '
        f"echo '--- listing' >&2; ls -A {folder} >&2"
    )
    result = subprocess.run([*args, "sh", "-c", script], env=env, capture_output=True, text=True, timeout=300)
    err, _, listing = result.stderr.rpartition("--- listing\n")
    exit_lines = [line for line in err.splitlines() if line.startswith("exit=")]
    assert exit_lines, result.stderr[-1500:]
    body = err[: err.rindex("exit=")]
    return (
        subprocess.CompletedProcess(command, int(exit_lines[-1][5:]), result.stdout, body),
        listing.split(),
    )


@pytest.mark.slow
def test_read_only_and_full_disk_under_prepare_give_one_line_and_keep_the_old_artifact(
    tmp_path: Path, base_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    writing = tmp_path / "writing"
    writing.mkdir()
    shutil.copy(BOOKS[1], writing / BOOKS[1].name)
    processed = home / "data" / "processed"
    command = _prepare(home, writing, base_model_dir)
    monkeypatch.setenv("VOICETUNE_HOME", str(home))
    assert main(command[3:]) == 0  # a complete earlier version, written in this process
    old = _consistent(processed / "k")

    # data/processed read-only (a real read-only bind mount, EROFS from the kernel)
    target = shlex.quote(str(processed))
    result, listing = _run_with_mount(
        f"mount --bind -o ro {target} {target}", processed, [*command, "--seed", "7"], _env(home)
    )
    line = _one_error_line(result)
    assert "read-only" in line.lower() and str(processed) in line, line
    assert _consistent(processed / "k") == old and not _leftovers(processed)

    # data/processed on a 32 KiB file system: ENOSPC while the artifact is written
    result, listing = _run_with_mount(
        f"mount -t tmpfs -o size=32k tmpfs {target}", processed, command, _env(home)
    )
    line = _one_error_line(result)
    assert "disk full" in line and str(processed) in line and "free some space" in line, line
    assert [name for name in listing if not name.endswith(".lock")] == [], listing  # nothing half-written
    assert _consistent(processed / "k") == old  # the real folder under the mount was never touched


def test_merge_output_that_cannot_be_written_gives_one_line(
    tmp_path_factory: pytest.TempPathFactory,
    base_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """merged_models/ as a file, read-only, and on a disk far too small: one line, nothing written."""
    home = tmp_path_factory.mktemp("merge home")
    make_run(home, "r", base_model_dir, shared_adapter(tmp_path_factory, base_model_dir),
             data_dir=make_data_dir(home, ["It was a dark night."], ["The sea was calm."]))  # fmt: skip
    (home / "empty.yaml").write_text("{}\n")
    command = [sys.executable, "-m", "voicetune", "merge", "--run", "r", "--config", str(home / "empty.yaml")]
    merged = home / "merged_models"

    merged.write_text("not a folder")
    monkeypatch.setenv("VOICETUNE_HOME", str(home))
    assert main(command[3:]) != 0
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "merged_models" in errors[0] and "folder" in errors[0], errors
    assert merged.read_text() == "not a folder"
    merged.unlink()
    merged.mkdir()

    target = shlex.quote(str(merged))
    result, listing = _run_with_mount(f"mount --bind -o ro {target} {target}", merged, command, _env(home))
    line = _one_error_line(result)
    assert "read-only" in line.lower() and "merged_models" in line, line
    assert listing == [] and list(merged.iterdir()) == []

    result, listing = _run_with_mount(
        f"mount -t tmpfs -o size=1m tmpfs {target}", merged, command, _env(home)
    )
    line = _one_error_line(result)
    assert "not enough disk space" in line and "merged_models" in line, line  # the real free space
    assert [name for name in listing if not name.endswith(".lock")] == [], listing
