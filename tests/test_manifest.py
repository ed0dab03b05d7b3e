"""Artifacts are all-or-nothing: atomic folders and files, manifests, fingerprints and locks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from voicetune.core.errors import MissingArtifactError, VoicetuneError
from voicetune.core.manifest import (
    atomic_output_dir,
    build_manifest,
    exclusive_lock,
    fingerprint,
    is_up_to_date,
    read_manifest,
    remove_stale_temporaries,
    require_manifest,
    write_json_atomic,
    write_manifest,
)


def _finished_artifact(folder: Path, key: str) -> None:
    with atomic_output_dir(folder) as tmp:
        (tmp / "data.txt").write_text("payload")
        write_manifest(tmp, build_manifest("test", key, {}, {}, {"data.txt": "x"}))


def test_fingerprint_is_stable_and_sensitive() -> None:
    assert fingerprint({"a": 1, "b": 2}) == fingerprint({"b": 2, "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})


def test_atomic_dir_replaces_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    _finished_artifact(target, "one")
    with pytest.raises(RuntimeError), atomic_output_dir(target) as tmp:
        (tmp / "data.txt").write_text("half-written")
        raise RuntimeError("crash in the middle")
    assert (target / "data.txt").read_text() == "payload"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"], "no temporary folder may remain"


def test_up_to_date_needs_matching_fingerprint_and_all_outputs(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    assert not is_up_to_date(target, "k")
    _finished_artifact(target, "k")
    assert is_up_to_date(target, "k")
    assert not is_up_to_date(target, "other settings")
    (target / "data.txt").unlink()
    assert not is_up_to_date(target, "k")


def test_require_manifest_names_the_script_to_run(tmp_path: Path) -> None:
    with pytest.raises(MissingArtifactError, match=r"run training/1_prepare_data\.sh first"):
        require_manifest(tmp_path / "nothing", "prepared data", "training/1_prepare_data.sh")
    _finished_artifact(tmp_path / "a", "k")
    (tmp_path / "a" / "data.txt").unlink()
    with pytest.raises(VoicetuneError, match="incomplete"):
        require_manifest(tmp_path / "a", "prepared data", "training/1_prepare_data.sh")


def test_corrupt_manifest_is_treated_as_absent(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"step": "tru')
    assert read_manifest(tmp_path) is None


def test_killed_writer_leaves_no_trusted_artifact(tmp_path: Path) -> None:
    """SIGKILL while the artifact is being written: the target never appears, the leftover is swept."""
    target = tmp_path / "artifact"
    script = (
        "import sys, time; from pathlib import Path; from voicetune.core.manifest import atomic_output_dir\n"
        f"with atomic_output_dir(Path({str(target)!r})) as tmp:\n"
        "    (tmp / 'part').write_text('x'); print('writing', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not target.exists()
    leftovers = remove_stale_temporaries(tmp_path)
    assert len(leftovers) == 1 and not any(tmp_path.iterdir())


def test_second_writer_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "run"
    script = (
        "import time; from pathlib import Path; from voicetune.core.manifest import exclusive_lock\n"
        f"with exclusive_lock(Path({str(target)!r}), 'training'):\n"
        "    print('locked', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(VoicetuneError, match="already training"), exclusive_lock(target, "training"):
            pass
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.05)
    with exclusive_lock(target, "training"):
        pass  # free again once the holder is gone


def test_unwritable_folder_gives_one_clear_error() -> None:
    """/sys refuses new files even to root: a real EACCES from the kernel, no mock."""
    target = Path("/sys/kernel/voicetune-test.json")
    if not target.parent.is_dir():
        pytest.skip("no /sys on this system")
    with pytest.raises(VoicetuneError, match="writable output folder"):
        write_json_atomic(target, {"a": 1})


def test_disk_full_is_reported_and_leaves_nothing(tmp_path: Path) -> None:
    """/dev/full answers every write with ENOSPC: the real kernel error, no mock."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    from voicetune.core.manifest import _os_error_to_voicetune

    with pytest.raises(OSError) as caught, open("/dev/full", "wb") as full:
        full.write(b"x" * 65536)
        full.flush()
    message = str(_os_error_to_voicetune(caught.value, tmp_path / "f"))
    assert "disk full" in message


def test_json_written_atomically_is_complete(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "a.json", {"k": list(range(1000))})
    assert json.loads((tmp_path / "a.json").read_text())["k"][-1] == 999
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]
