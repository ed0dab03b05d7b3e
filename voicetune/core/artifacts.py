"""The artifact contract: one typed reader per step's output, and the scripts that make each.

A step reads an earlier step's output only through these readers, never by parsing its manifest
itself. Each reader checks the manifest exists (else one error naming the script to run first) and
resolves the paths it records.

Paths in manifests are stored relative to the artifact's own folder (`stored_path`), so a project
folder that is moved, or a run folder copied under a new name, still points at its own files: a
copied `checkpoints/demo2/` finds `output/` beside it, not the original run's adapter. Absolute paths
written by older versions are still read as they are.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicetune.core.errors import VoicetuneError
from voicetune.core.manifest import MANIFEST_NAME, require_manifest
from voicetune.core.paths import checkpoint_dir, merged_dir, processed_dir, project_root
from voicetune.core.prompting import PromptFormat, prompt_format_from_settings

# step -> the script a person runs to make its artifact (named in every "run X first" error)
SCRIPTS: dict[str, str] = {
    "base-model": "python -m voicetune base-model",
    "prepare": "training/1_prepare_data.sh",
    "train": "training/2_train_lora.sh",
    "merge": "training/3_merge_adapter.sh",
    "export": "training/4_export.sh",
    "serve": "training/5_serve.sh",
    "benchmark": "benchmarks/1_voice_comparison.sh",
}


def stored_path(path: Path | str | None, artifact_dir: Path) -> str | None:
    """How a manifest records `path`: relative to the artifact's folder (portable when moved)."""
    if path is None:
        return None
    return os.path.relpath(Path(path).resolve(), artifact_dir.resolve())


def resolve_stored(value: Any, artifact_dir: Path) -> Path | None:
    """The path a manifest recorded: relative to the artifact's folder (this version), absolute (older
    versions), or relative to the project root (older versions) when that is where it exists."""
    if not value:
        return None
    path = Path(str(value)).expanduser()
    if path.is_absolute():
        return path
    beside = (artifact_dir / path).resolve()
    if beside.exists():
        return beside
    legacy = (project_root() / path).resolve()
    return legacy if legacy.exists() else beside


def _folder(name_or_dir: str | Path, default_parent: Any) -> Path:
    """A name (`demo`) under the step's default folder, or a path to the folder itself."""
    text = str(name_or_dir)
    if isinstance(name_or_dir, Path) or os.sep in text:
        return Path(text).expanduser().resolve()
    return default_parent(text).resolve()


def _recorded(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's settings overlaid by its top-level fields (top level wins)."""
    return {**manifest.get("settings", {}), **manifest}


@dataclass(frozen=True)
class PreparedData:
    """`data/processed/<name>/`: train/val/test JSONL and the cleaned texts, from `prepare`."""

    folder: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, name_or_dir: str | Path) -> PreparedData:
        folder = _folder(name_or_dir, processed_dir)
        return cls(folder, require_manifest(folder, "prepared data", SCRIPTS["prepare"]))

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.manifest.get("settings", {}))

    @property
    def fingerprint(self) -> str | None:
        return self.manifest.get("fingerprint")

    @property
    def base_model(self) -> Path | None:
        """The model whose tokenizer chunked the data (the base training should use)."""
        return resolve_stored(self.settings.get("base_model"), self.folder)

    @property
    def prompt_format(self) -> PromptFormat:
        return prompt_format_from_settings(self.settings)

    def split(self, name: str) -> Path:
        """`train.jsonl`, `val.jsonl` or `test.jsonl`."""
        return self.folder / f"{name}.jsonl"

    def texts_dir(self, split: str) -> Path:
        """The cleaned documents of a split, one .txt each (what the benchmark compares against)."""
        return self.folder / "texts" / split


@dataclass(frozen=True)
class TrainedRun:
    """`checkpoints/<run>/`: the LoRA adapter and its checkpoints, from `train` (manifest written when
    training completes)."""

    folder: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, name_or_dir: str | Path) -> TrainedRun:
        folder = _folder(name_or_dir, checkpoint_dir)
        return cls(folder, require_manifest(folder, "trained adapter", SCRIPTS["train"]))

    @classmethod
    def exists(cls, name: str) -> bool:
        return (checkpoint_dir(name) / MANIFEST_NAME).is_file()

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def adapter_dir(self) -> Path:
        return (
            resolve_stored(_recorded(self.manifest).get("adapter_dir"), self.folder) or self.folder / "output"
        )

    @property
    def base_model(self) -> Path | None:
        return resolve_stored(_recorded(self.manifest).get("base_model"), self.folder)

    @property
    def data_dir(self) -> Path | None:
        return resolve_stored(_recorded(self.manifest).get("data_dir"), self.folder)

    @property
    def quantized_4bit(self) -> bool:
        return bool(_recorded(self.manifest).get("quantized_4bit", False))

    @property
    def profile(self) -> str | None:
        return self.manifest.get("profile")

    def checkpoints(self) -> list[Path]:
        """Axolotl's `checkpoint-N/` folders, in step order."""
        output = self.adapter_dir
        found = [p for p in output.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
        return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


@dataclass(frozen=True)
class MergedModel:
    """`merged_models/<run>/`: the adapter folded into its base, from `merge`."""

    folder: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, name_or_dir: str | Path) -> MergedModel:
        folder = _folder(name_or_dir, merged_dir)
        manifest = require_manifest(folder, "merged model", SCRIPTS["merge"])
        if manifest.get("step", "merge") != "merge":
            raise VoicetuneError(f"{folder / MANIFEST_NAME} is not a merge manifest: run {SCRIPTS['merge']}")
        return cls(folder, manifest)

    @classmethod
    def find(cls, name_or_dir: str | Path) -> MergedModel | None:
        """The merged model if there is one, else None (no error)."""
        try:
            return cls.load(name_or_dir)
        except VoicetuneError:  # absent, incomplete or another step's folder
            return None

    @property
    def name(self) -> str:
        return str(self.manifest.get("run") or self.folder.name)

    @property
    def base_model(self) -> Path | None:
        return resolve_stored(_recorded(self.manifest).get("base_model"), self.folder)

    @property
    def data_dir(self) -> Path | None:
        return resolve_stored(_recorded(self.manifest).get("data_dir"), self.folder)

    @property
    def adapter_dir(self) -> Path | None:
        return resolve_stored(_recorded(self.manifest).get("adapter_dir"), self.folder)

    @property
    def lora_scale(self) -> float:
        """The style strength the adapter was folded in at (1.0 where the manifest predates it)."""
        scale = self.manifest.get("lora_scale")
        return 1.0 if scale is None else float(scale)


@dataclass(frozen=True)
class ExportedModel:
    """`merged_models/<run>/gguf/`: GGUF files checked in llama.cpp, Modelfiles, from `export`."""

    folder: Path
    manifest: dict[str, Any]

    @classmethod
    def load(cls, name_or_dir: str | Path) -> ExportedModel:
        folder = _folder(name_or_dir, lambda run: merged_dir(run) / "gguf")
        return cls(folder, require_manifest(folder, "GGUF export", SCRIPTS["export"]))

    @property
    def files(self) -> dict[str, Path]:
        """quant name (f16, q8_0, q4_k_m, ...) -> its GGUF file."""
        return {quant: self.folder / name for quant, name in self.manifest.get("files", {}).items()}

    def gguf(self, quant: str) -> Path:
        files = self.files
        if quant not in files:
            raise VoicetuneError(
                f"{self.folder} has no {quant} GGUF (it has {', '.join(files) or 'none'}): "
                f"run {SCRIPTS['export']} --quants {','.join([*files, quant])}",
                exit_code=2,
            )
        return files[quant]
