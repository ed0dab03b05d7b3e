"""The project config (configs/voicetune.yaml): one file of settings that flows through every step.

Each step owns one section and validates it with its own pydantic model, so a typo in a key is a
clear error, not a silent default. Command-line flags override the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from voicetune.core.errors import VoicetuneError
from voicetune.core.paths import configs_dir

Section = TypeVar("Section", bound=BaseModel)


def default_config_path() -> Path:
    return configs_dir() / "voicetune.yaml"


# Top-level keys that mark an Axolotl config (which goes to `voicetune train --profile FILE`).
AXOLOTL_KEYS = ("base_model", "datasets", "adapter", "load_in_4bit", "lora_r", "micro_batch_size")
SECTIONS = ("data", "train", "merge", "generate", "benchmark")


def load_project_config(path: Path | None = None) -> dict[str, Any]:
    given = path is not None
    path = path or default_config_path()
    if not path.is_file():
        if given:
            raise VoicetuneError(
                f"--config {path}: no such file (the project config is {default_config_path()})"
            )
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise VoicetuneError(f"{path} is not valid YAML ({exc}): fix the file and run again") from exc
    if not isinstance(data, dict):
        raise VoicetuneError(f"{path} must be a mapping of sections (data:, train:, ...)")
    _refuse_axolotl_config(path, data)
    return data


def _refuse_axolotl_config(path: Path, data: dict[str, Any]) -> None:
    """An Axolotl YAML given as the project config would be read as "no settings" and the defaults
    (the demo) used instead: say where it belongs."""
    marks = [key for key in AXOLOTL_KEYS if key in data]
    if marks and not any(name in data for name in SECTIONS):
        raise VoicetuneError(
            f"{path} is an Axolotl config ({', '.join(marks[:3])} at the top level), not voicetune's project "
            f"config (sections data:, train:, ...): train with it as --profile {path}"
        )


def load_section(
    model: type[Section],
    name: str,
    config: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
    source: Path | None = None,
) -> Section:
    """Validate section `name` of the project config, with non-None overrides (CLI flags) on top."""
    raw = dict((config if config is not None else load_project_config(source)).get(name) or {})
    raw.update({key: value for key, value in (overrides or {}).items() if value is not None})
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise VoicetuneError(
            f"config section '{name}', key '{where}': {first['msg']} "
            f"(edit {source or default_config_path()} or the matching flag)"
        ) from exc
