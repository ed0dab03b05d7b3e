"""Every entry point goes through `voicetune <verb>`: each verb and each numbered script answers
--help, and each verb's errors are one `error:` line with a non-zero exit (never a traceback)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from voicetune.cli import COMMANDS

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = sorted(
    [
        *REPO.glob("setup/[0-9]_*.sh"),
        *REPO.glob("training/[0-9]_*.sh"),
        REPO / "benchmarks" / "1_voice_comparison.sh",
    ]
)


def _run(args: list[str], home: Path | None = None, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"VOICETUNE_HOME": str(home)} if home else {})}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)


@pytest.mark.parametrize("verb", sorted(COMMANDS))
def test_every_verb_has_help(verb: str) -> None:
    result = _run([sys.executable, "-m", "voicetune", verb, "--help"])
    assert result.returncode == 0, result.stderr
    assert f"voicetune {verb}" in result.stdout and "--help" in result.stdout


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_numbered_script_has_help(script: Path) -> None:
    result = _run([str(script), "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "empty help"


def test_the_scripts_call_the_cli_not_modules() -> None:
    """No script bypasses the verb registry with `python -m voicetune.<module>`."""
    for script in [*SCRIPTS, REPO / "setup" / "lib.sh", REPO / "training" / "lib.sh"]:
        assert "-m voicetune." not in script.read_text(), script


# a verb, and arguments that point at artifacts that do not exist in an empty project
BAD_CALLS = {
    "prepare": ["--input", "no-such-folder", "--name", "x"],
    "train": ["--data", "no-such-data", "--dry-run"],
    "merge": ["--run", "no-such-run"],
    "generate": ["--run", "no-such-run", "--prompt", "hello"],
    "benchmark": ["--run", "no-such-run"],
    "serve": ["--run", "no-such-run", "--dry-run"],
}


@pytest.mark.parametrize("verb", sorted(BAD_CALLS))
def test_a_verb_error_is_one_line(verb: str, tmp_path: Path) -> None:
    result = _run([sys.executable, "-m", "voicetune", verb, *BAD_CALLS[verb]], home=tmp_path)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert lines and lines[-1].startswith("error:"), result.stderr
    assert sum(line.startswith("error:") for line in lines) == 1, result.stderr
