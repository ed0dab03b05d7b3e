"""Private by default: no remote code, no telemetry, no hub, in every process voicetune starts."""

from __future__ import annotations

import os
import re
from pathlib import Path

from voicetune.core.privacy import apply_private_env

REPO = Path(__file__).resolve().parent.parent


def test_no_code_enables_trust_remote_code() -> None:
    enabled = re.compile(r"trust_remote_code\s*[=:]\s*True")
    offenders = [
        str(path.relative_to(REPO))
        for folder in ("voicetune", "benchmarks", "training", "setup", "configs")
        for path in (REPO / folder).rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".sh", ".yaml", ".yml"}
        and enabled.search(path.read_text(encoding="utf-8", errors="replace"))
    ]
    assert offenders == []


def test_private_env_forces_telemetry_off_and_keeps_wandb_off_unless_asked(monkeypatch) -> None:
    monkeypatch.setenv("AXOLOTL_DO_NOT_TRACK", "0")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DISABLED", raising=False)
    apply_private_env()
    assert os.environ["AXOLOTL_DO_NOT_TRACK"] == "1"
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["WANDB_MODE"] == "offline" and os.environ["WANDB_DISABLED"] == "true"
    apply_private_env("online")
    assert os.environ["WANDB_MODE"] == "online" and "WANDB_DISABLED" not in os.environ


def test_every_script_that_runs_axolotl_sets_the_private_env() -> None:
    for script in ("run_demo.sh", "run_tests.sh"):
        text = (REPO / script).read_text()
        assert "AXOLOTL_DO_NOT_TRACK=1" in text and "HF_HUB_OFFLINE=1" in text, script
