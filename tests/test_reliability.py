"""Kills and unwritable outputs across the real `voicetune prepare` (issue 9).

A prepare is SIGKILLed at spread-out moments (while reading, cleaning, tokenising, writing) over a
data folder that already holds a complete earlier version. After every kill, what a later step
would read is either the earlier complete version or the new complete one, never a mix, and the
next run finishes and sweeps every leftover.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from voicetune.errors import VoicetuneError
from voicetune.manifest import atomic_output_dir, remove_stale_temporaries, require_manifest, sha256_file

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
