"""training/5_serve.sh: vLLM's OpenAI server on the merged model when vLLM is there, one clear line
when it is not. vLLM cannot run here (no GPU), so one test puts a stand-in `vllm` package on the
path that only records how it was started: that proves the command and the environment we hand over."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "training" / "5_serve.sh"


@pytest.fixture()
def home(tmp_path: Path) -> Path:
    """A project home with a merged model folder (manifest + config; weights are not needed here)."""
    merged = tmp_path / "merged_models" / "mine"
    merged.mkdir(parents=True)
    (merged / "config.json").write_text("{}")
    (merged / "manifest.json").write_text(json.dumps({"step": "merge", "outputs": {}}))
    return tmp_path


def _serve(home: Path, *args: str, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VOICETUNE_HOME=str(home), VOICETUNE_VENV=str(Path(sys.executable).parent.parent))
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_without_vllm_says_how_to_install_it(home: Path) -> None:
    result = _serve(home, "--run", "mine")
    assert result.returncode == 3
    assert result.stderr.strip().splitlines() == [
        "error: vLLM is not installed: install it with pip install -e '.[serve]' "
        "(vLLM needs Linux and an NVIDIA GPU), then run this again"
    ]


def test_dry_run_prints_the_server_command(home: Path) -> None:
    result = _serve(home, "--run", "mine", "--port", "8123", "--dry-run", "--", "--enforce-eager")
    assert result.returncode == 0, result.stderr
    command = result.stdout.split()
    assert command[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert command[command.index("--model") + 1] == str(home / "merged_models" / "mine")
    assert command[command.index("--served-model-name") + 1] == "mine"
    assert command[command.index("--port") + 1] == "8123"
    assert command[command.index("--host") + 1] == "127.0.0.1", "private by default"
    assert command[-1] == "--enforce-eager"


def test_an_unmerged_run_names_the_merge_script(home: Path) -> None:
    result = _serve(home, "--run", "other")
    assert result.returncode == 2
    assert "3_merge_adapter.sh" in result.stderr


def test_vllm_is_started_with_the_merged_model_and_no_usage_stats(home: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake-vllm"
    server = fake / "vllm" / "entrypoints" / "openai"
    server.mkdir(parents=True)
    for package in (fake / "vllm", fake / "vllm" / "entrypoints", server):
        (package / "__init__.py").write_text("")
    record = tmp_path / "started.json"
    (server / "api_server.py").write_text(
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'stats': os.environ.get('VLLM_NO_USAGE_STATS'),"
        f" 'hub': os.environ.get('HF_HUB_OFFLINE')}}, open({str(record)!r}, 'w'))\n"
    )
    result = _serve(home, "--run", "mine", pythonpath=f"{fake}{os.pathsep}{REPO}")
    assert result.returncode == 0, result.stderr
    assert "serving" in result.stdout and "http://127.0.0.1:8000/v1" in result.stdout
    started = json.loads(record.read_text())
    argv = started["argv"]
    assert argv[argv.index("--model") + 1] == str(home / "merged_models" / "mine")
    assert argv[argv.index("--served-model-name") + 1] == "mine"
    assert started["stats"] == "1" and started["hub"] == "1"


def test_help() -> None:
    result = subprocess.run([str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "OpenAI-compatible" in result.stdout and "--served-model-name" in result.stdout
