"""A `voicetune train` stopped with SIGTERM (a timeout, a scheduler) stops its trainer too, as Ctrl-C
does, instead of leaving the trainer's process group running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_stops_the_trainer_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "trainer.pid"
    # the "trainer" (a stand-in child: a shell that records its pid and sleeps) runs through the
    # real stream() of voicetune.train.train, in its own process group as the real trainer does
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from voicetune.train.train import LogWatcher, stream
        command = ["bash", "-c", "echo $$ > {pid_file}; exec sleep 120"]
        where = Path("{tmp_path}")
        stream(command, dict(os.environ), where, where / "log", LogWatcher())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not pid_file.is_file() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the trainer never started"
        time.sleep(0.1)
    trainer = int(pid_file.read_text())
    assert _alive(trainer)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=90)
    deadline = time.monotonic() + 30
    while _alive(trainer) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(trainer), "SIGTERM left the trainer running"
