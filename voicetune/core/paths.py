"""Where things live. Every default is relative to the project root; every command can override it."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # voicetune/ (this file is voicetune/core/paths.py)


def project_root() -> Path:
    """The checkout's root ($VOICETUNE_HOME wins, so tests can point a whole run elsewhere)."""
    override = os.environ.get("VOICETUNE_HOME")
    return Path(override).resolve() if override else PACKAGE_DIR.parent


def repo_dir() -> Path:
    """The source checkout (configs, bundled demo data), independent of $VOICETUNE_HOME."""
    return PACKAGE_DIR.parent


def configs_dir() -> Path:
    return repo_dir() / "configs"


def demo_data_dir() -> Path:
    return repo_dir() / "data" / "demo"


def raw_data_dir() -> Path:
    return project_root() / "data" / "raw"


def processed_dir(name: str) -> Path:
    return project_root() / "data" / "processed" / name


def models_dir() -> Path:
    return project_root() / "models"


def default_base_model_dir() -> Path:
    return models_dir() / "base"


def checkpoint_dir(run: str) -> Path:
    return project_root() / "checkpoints" / run


def merged_dir(run: str) -> Path:
    return project_root() / "merged_models" / run


def results_dir(run: str) -> Path:
    return project_root() / "benchmarks" / "results" / run
