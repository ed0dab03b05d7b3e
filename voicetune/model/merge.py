"""`voicetune merge`: fold a trained LoRA adapter into its base model, then prove nothing changed.

Reads checkpoints/<run>/manifest.json (written by the train step), writes merged_models/<run>/:
safetensors shards, tokenizer with chat template, generation config and a manifest (base, adapter,
checksums, versions, parity numbers).

How, and why:
- The merge is PEFT's `merge_and_unload(safe_merge=True)`, done in fp32 by default and cast once to
  the output dtype, so the parity check can hold the merge itself to a tight tolerance (bf16 rounding
  alone moves the demo model's logits by ~0.6, larger than many adapters' whole effect).
- A QLoRA adapter is merged into the base loaded in full precision (`--base-weights w16`, default),
  never into 4-bit weights (transformers #31293, peft #2321). W16 differs from the dequantised 4-bit
  weights the adapter was trained against; for some models that error matters (unsloth-zoo #810), so
  `--base-weights dequant-nf4` merges into dequant(nf4(W16)) instead. Either way the parity report
  also compares the merged model with the model as trained (4-bit base + adapter: real bitsandbytes
  4-bit on a GPU, an exact dequantise emulation on CPU).
- Parity: held-out prompts through base + adapter (unmerged) and through the merged model; the largest
  |logit difference| must be within the tolerance, else nothing is written and the exit code is 1.
  The saved files are then loaded back and checked against the in-memory model.
- Atomic: everything is written in a temporary sibling folder and renamed at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import shutil
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voicetune.core.artifacts import SCRIPTS, MergedModel, TrainedRun, stored_path
from voicetune.core.errors import VoicetuneError
from voicetune.core.manifest import (
    MANIFEST_NAME,
    atomic_output_dir,
    build_manifest,
    exclusive_lock,
    fingerprint,
    is_up_to_date,
    remove_stale_temporaries,
    sha256_file,
    sha256_text,
    write_manifest,
)
from voicetune.core.paths import checkpoint_dir, merged_dir, project_root
from voicetune.core.progress import header, progress, say
from voicetune.core.settings import load_section
from voicetune.model import parity

if TYPE_CHECKING:
    import torch

TRAIN_SCRIPT = SCRIPTS["train"]
MERGE_SCRIPT = SCRIPTS["merge"]
LIBRARIES = ("torch", "transformers", "peft", "safetensors", "accelerate", "bitsandbytes")
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
SAFETENSORS_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "F8_E4M3": 1, "F8_E5M2": 1,
}  # fmt: skip
CONFIG_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_PICKLE = "adapter_model.bin"
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model", "chat_template.jinja")
_LORA_KEY = re.compile(
    r"^base_model\.model\.(?P<module>.+)\.lora_(?P<kind>A|B|embedding_A|embedding_B)(\.weight)?$"
)


class MergeSettings(BaseModel):
    """The `merge:` section of configs/voicetune.yaml (flags override it)."""

    model_config = ConfigDict(extra="forbid")

    dtype: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: the base model's own dtype
    base_weights: Literal["w16", "dequant-nf4"] = "w16"
    merge_precision: Literal["fp32", "out"] = "fp32"  # out: merge directly in the output dtype
    tolerance: float | None = Field(default=None, ge=0)  # None: parity.DEFAULT_TOLERANCE by precision
    parity_prompts: int = Field(default=4, ge=1, le=64)
    parity_max_tokens: int = Field(default=64, ge=4, le=4096)
    max_shard_size: str = "2GB"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    allow_pickle: bool = False
    checkpoint: str = Field(default="best", pattern=r"^(best|last|[0-9]+)$")  # best | last | N
    # LoRA scale folded in (style strength); None: the voice curve's choice with --checkpoint best, else 1
    scale: float | None = Field(default=None, ge=0.0, le=4.0)


@dataclass(frozen=True)
class MergeInputs:
    """Everything the merge reads, resolved from the training manifest and the flags."""

    run: str
    checkpoint_dir: Path
    adapter_dir: Path
    base_dir: Path
    data_dir: Path | None
    quantized_4bit: bool
    training: dict[str, Any] = field(default_factory=dict)
    adapter_label: str = "last"  # which adapter of the run: last, or checkpoint-N
    adapter_why: str = "the adapter the training ended with"
    curve_scale: float | None = None  # the strength the voice curve chose for its best checkpoint
    curve_scale_why: str = ""


@dataclass(frozen=True)
class AdapterInfo:
    config: dict[str, Any]
    weights: Path
    modules: dict[str, dict[str, tuple[int, ...]]]  # module path -> {"A": shape, "B": shape}


# ---------------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run", default=None, help="training run name (checkpoints/<run>/); default: the only one"
    )
    parser.add_argument("--run-dir", type=Path, default=None, help="training run folder (instead of --run)")
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="which adapter of the run: best (default: the voice curve's choice, "
        "checkpoints/<run>/voice_curve.json, from `voicetune voice-curve`), last (the adapter the "
        "training ended with) or N (checkpoint-N)",
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="style strength: the LoRA scale folded in (1.0 = as trained, 0.5 weaker, 1.5 stronger; "
        "default: the voice curve's choice for --checkpoint best, else 1.0)",
    )
    parser.add_argument("--base", type=Path, default=None, help="base model folder (default: from the run)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: merged_models/<run>)")
    parser.add_argument(
        "--dtype",
        choices=["auto", "bf16", "fp16", "fp32"],
        default=None,
        help="dtype of the saved model (default auto: the base model's dtype)",
    )
    parser.add_argument(
        "--base-weights",
        choices=["w16", "dequant-nf4"],
        default=None,
        help="QLoRA only: merge into the 16-bit base (w16, default) or into dequantised "
        "4-bit weights, the ones the adapter was trained against (dequant-nf4)",
    )
    parser.add_argument(
        "--merge-precision",
        choices=["fp32", "out"],
        default=None,
        help="do the merge and the parity check in fp32 (default; needs 4 bytes/param "
        "of memory) or directly in the output dtype (less memory, coarser check)",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="largest accepted |logit diff| merged vs base+adapter "
        f"(default by precision: {parity.DEFAULT_TOLERANCE})",
    )
    parser.add_argument("--parity-prompts", type=int, default=None, help="held-out prompts for the check")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="where to merge")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        default=None,
        help="accept .bin/.pt weights (pickle can run code: only for files you trust)",
    )
    parser.add_argument("--force", action="store_true", help="merge again even if the output is up to date")
    parser.add_argument("--dry-run", action="store_true", help="say what would be merged, write nothing")
    parser.add_argument(
        "--config", type=Path, default=None, help="project config (default configs/voicetune.yaml)"
    )


def run(args: argparse.Namespace) -> int:
    overrides = {
        "dtype": args.dtype,
        "base_weights": args.base_weights,
        "merge_precision": args.merge_precision,
        "tolerance": args.tolerance,
        "parity_prompts": args.parity_prompts,
        "device": args.device,
        "allow_pickle": args.allow_pickle,
        "checkpoint": args.checkpoint,
        "scale": args.scale,
    }
    settings = load_section(MergeSettings, "merge", overrides=overrides, source=args.config)
    inputs = resolve_inputs(args.run, args.run_dir, args.base)
    inputs = choose_adapter(inputs, settings.checkpoint)
    say(f"merge: {inputs.adapter_label}: {inputs.adapter_why}")
    if settings.scale is None:
        settings = settings.model_copy(update={"scale": inputs.curve_scale or 1.0})
        if inputs.curve_scale and inputs.curve_scale != 1.0:
            say(f"merge: strength chosen by the voice curve: {inputs.curve_scale_why}")
    if settings.scale != 1.0:
        say(f"merge: style strength x{settings.scale:g}: the adapter's update is scaled, then folded in")
    out_dir = (args.out or merged_dir(inputs.run)).resolve()
    if args.dry_run:
        say(f"dry run: would merge {inputs.adapter_dir} into {inputs.base_dir} -> {out_dir}")
        return 0
    merge_adapter(inputs, settings, out_dir, force=args.force)
    return 0


# ----------------------------------------------------------------------------------- inputs & checks


def find_runs(root: Path | None = None) -> list[str]:
    """Names of training runs whose manifest exists (i.e. training completed)."""
    parent = (root or project_root()) / "checkpoints"
    if not parent.is_dir():
        return []
    return sorted(p.name for p in parent.iterdir() if (p / MANIFEST_NAME).is_file())


def resolve_inputs(run_name: str | None, checkpoint: Path | None, base: Path | None) -> MergeInputs:
    """The trained run to merge (one clear error if training has not completed), through its reader.
    `checkpoint`: the run's folder (--run-dir), instead of its name."""
    if checkpoint is None:
        if run_name is None:
            runs = find_runs()
            if len(runs) != 1:
                listed = ", ".join(runs) if runs else "none yet"
                raise VoicetuneError(
                    f"which run? name it with --run (completed runs in checkpoints/: {listed})", exit_code=2
                )
            run_name = runs[0]
            say(f"merge: using run '{run_name}' (the only completed run)")
        checkpoint = checkpoint_dir(run_name)
    trained = TrainedRun.load(checkpoint.resolve())
    base_dir = base.resolve() if base is not None else trained.base_model
    if base_dir is None:
        raise VoicetuneError(
            f"{trained.folder / MANIFEST_NAME} does not say which base model was trained: pass --base DIR"
        )
    if not base_dir.is_dir():
        raise VoicetuneError(
            f"base model folder {base_dir} not found: pass --base DIR with the base the run used"
        )
    return MergeInputs(
        run=run_name or trained.name,
        checkpoint_dir=trained.folder,
        adapter_dir=trained.adapter_dir,
        base_dir=base_dir,
        data_dir=trained.data_dir,
        quantized_4bit=trained.quantized_4bit,
        training=trained.manifest,
    )


# A checkpoint-N/ folder also holds the trainer's resume state: not part of the adapter.
TRAINER_STATE_FILES = ("optimizer", "scheduler", "rng_state", "training_args", "trainer_state")
# written by `voicetune voice-curve` (voicetune.voice.checkpoint_choice)
VOICE_CURVE_FILE = "voice_curve.json"


def choose_adapter(inputs: MergeInputs, which: str) -> MergeInputs:
    """The adapter to merge: `best` (the voice curve's choice; the last adapter when the run has no
    curve), `last` (what the training ended with) or `N` (checkpoint-N), with the reason."""
    output = inputs.adapter_dir
    if which == "last":
        return replace(
            inputs,
            adapter_label="last",
            adapter_why="the adapter the training ended with (--checkpoint last)",
        )
    if which == "best":
        curve = _read_json_file(inputs.checkpoint_dir / VOICE_CURVE_FILE)
        best = (curve or {}).get("best") or {}
        if not best.get("checkpoint"):
            return replace(
                inputs,
                adapter_label="last",
                adapter_why=f"no voice curve in {inputs.checkpoint_dir} (`voicetune voice-curve --run "
                f"{inputs.run}` scores each checkpoint): the adapter the training ended with",
            )
        folder = output / str(best["checkpoint"])
        why = f"chosen by the voice curve ({VOICE_CURVE_FILE}): {best.get('why', 'the best voice score')}"
        if isinstance(best.get("scale"), int | float) and (folder / ADAPTER_CONFIG).is_file():
            inputs = replace(
                inputs, curve_scale=float(best["scale"]), curve_scale_why=str(best.get("scale_why", ""))
            )
    else:
        folder = output / f"checkpoint-{int(which)}"
        why = "asked for with --checkpoint"
    if not (folder / ADAPTER_CONFIG).is_file():
        saved = sorted(
            (p.name for p in output.glob("checkpoint-*") if (p / ADAPTER_CONFIG).is_file()),
            key=lambda n: int(n.rsplit("-", 1)[1]) if n.rsplit("-", 1)[1].isdigit() else -1,
        )
        raise VoicetuneError(
            f"{folder} holds no adapter: use --checkpoint best, last or one of "
            f"{', '.join(n.rsplit('-', 1)[1] for n in saved) or '(none saved)'}"
            + (" (the voice curve is stale: run `voicetune voice-curve --force`)" if which == "best" else "")
        )
    return replace(inputs, adapter_dir=folder, adapter_label=folder.name, adapter_why=why)


def _read_json_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_safetensors_header(path: Path, fix: str) -> dict[str, Any]:
    """Parse a .safetensors header and check the file is exactly as long as the header says.

    A truncated copy or a half-written file fails here, before any loader sees it.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise VoicetuneError(f"{path} is damaged (only {size} bytes): {fix}")
            length = int.from_bytes(prefix, "little")
            if length <= 1 or length > size - 8:
                raise VoicetuneError(f"{path} is damaged (header length {length}, file {size} bytes): {fix}")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, VoicetuneError):
            raise
        raise VoicetuneError(f"{path} is damaged (unreadable safetensors header: {exc}): {fix}") from exc
    if not isinstance(header, dict):
        raise VoicetuneError(f"{path} is damaged (header is not a mapping): {fix}")
    ends = [meta["data_offsets"][1] for name, meta in header.items() if name != "__metadata__"]
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        state = "truncated" if size < expected else "has trailing bytes"
        raise VoicetuneError(f"{path} is damaged ({state}: {size} bytes, header says {expected}): {fix}")
    return header


def _tensor_shapes(header: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    return {name: tuple(meta["shape"]) for name, meta in header.items() if name != "__metadata__"}


def validate_adapter_dir(adapter_dir: Path, allow_pickle: bool = False) -> AdapterInfo:
    """The adapter's config and weights, checked: present, readable, complete, finite, LoRA."""
    fix = f"the adapter is damaged; run {TRAIN_SCRIPT} again (or copy the adapter folder again)"
    if not adapter_dir.is_dir():
        raise VoicetuneError(f"adapter folder {adapter_dir} not found: run {TRAIN_SCRIPT} first", exit_code=2)
    config_path = adapter_dir / ADAPTER_CONFIG
    if not config_path.is_file():
        raise VoicetuneError(f"{config_path} is missing: {fix}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VoicetuneError(f"{config_path} is damaged (not valid JSON: {exc}): {fix}") from exc
    if not isinstance(config, dict):
        raise VoicetuneError(f"{config_path} is damaged (not a JSON object): {fix}")
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise VoicetuneError(
            f"{config_path} describes a {peft_type or 'unknown'} adapter: only LoRA can be merged"
        )

    weights = adapter_dir / ADAPTER_WEIGHTS
    if weights.is_file():
        shapes = _tensor_shapes(read_safetensors_header(weights, fix))
        _check_finite_safetensors(weights, fix)
    elif (adapter_dir / ADAPTER_PICKLE).is_file():
        weights = adapter_dir / ADAPTER_PICKLE
        if not allow_pickle:
            raise VoicetuneError(
                f"{weights} is a pickle file, which can run code when loaded: convert it to safetensors "
                f"or pass --allow-pickle if you trust where it came from"
            )
        shapes = _pickle_shapes(weights, fix)
    else:
        raise VoicetuneError(f"{adapter_dir / ADAPTER_WEIGHTS} is missing: {fix}")

    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        match = _LORA_KEY.match(key)
        if match:
            kind = match["kind"].replace("embedding_", "E")  # A, B, EA, EB
            modules.setdefault(match["module"], {})[kind] = shape
    if not modules:
        raise VoicetuneError(f"{weights} holds no LoRA weights (lora_A/lora_B): {fix}")
    half = [name for name, parts in modules.items() if len(parts) != 2]
    if half:
        raise VoicetuneError(f"{weights} is damaged ({half[0]} has only one of its two LoRA matrices): {fix}")
    return AdapterInfo(config=config, weights=weights, modules=modules)


def _check_finite_safetensors(path: Path, fix: str) -> None:
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                if not torch.isfinite(handle.get_tensor(key)).all():
                    raise VoicetuneError(
                        f"{path} has NaN/inf values in {key} (training diverged): retrain with a lower "
                        f"learning rate, or merge an earlier checkpoint"
                    )
    except SafetensorError as exc:
        raise VoicetuneError(f"{path} is damaged ({exc}): {fix}") from exc


def _pickle_shapes(path: Path, fix: str) -> dict[str, tuple[int, ...]]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise VoicetuneError(f"{path} is damaged ({type(exc).__name__}): {fix}") from exc
    return {key: tuple(value.shape) for key, value in state.items()}


def base_weight_files(base_dir: Path, allow_pickle: bool = False) -> list[Path]:
    """The base model's safetensors files (refusing pickled-only bases unless allowed)."""
    index = base_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (OSError, ValueError, KeyError) as exc:
            raise VoicetuneError(f"{index} is damaged ({exc}): copy the base model again") from exc
        return [base_dir / name for name in sorted(set(weight_map.values()))]
    files = sorted(base_dir.glob("*.safetensors"))
    if files:
        return files
    pickled = sorted([*base_dir.glob("*.bin"), *base_dir.glob("*.pt"), *base_dir.glob("*.pth")])
    if pickled and not allow_pickle:
        raise VoicetuneError(
            f"{pickled[0]} is a pickle file, which can run code when loaded: use a safetensors copy of "
            f"the base model or pass --allow-pickle if you trust it"
        )
    if pickled:
        return pickled
    raise VoicetuneError(f"no model weights in {base_dir}: expected *.safetensors files")


def base_tensor_shapes(base_dir: Path, allow_pickle: bool = False) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    fix = "the base model folder is damaged; copy it again"
    for path in base_weight_files(base_dir, allow_pickle):
        if path.suffix == ".safetensors":
            shapes.update(_tensor_shapes(read_safetensors_header(path, fix)))
        else:
            shapes.update(_pickle_shapes(path, fix))
    return shapes


def base_signature(base_dir: Path, allow_pickle: bool = False) -> str:
    """A cheap identity of the base weights: every file's header and first MiB (not a full hash).

    Two models with the same shapes (a base and its instruct version) differ in their first bytes.
    """
    parts = []
    for path in base_weight_files(base_dir, allow_pickle):
        with open(path, "rb") as handle:
            parts.append((path.name, path.stat().st_size, sha256_text(handle.read(1 << 20).hex())))
    config = base_dir / "config.json"
    if config.is_file():
        parts.append(("config.json", 0, sha256_file(config)))
    return fingerprint(parts)


def check_adapter_matches_base(adapter: AdapterInfo, base_dir: Path, allow_pickle: bool = False) -> None:
    """Refuse, in one line, an adapter whose target modules the base lacks or shapes it cannot hold."""
    shapes = base_tensor_shapes(base_dir, allow_pickle)
    declared = adapter.config.get("base_model_name_or_path") or "unknown"
    fan_in_fan_out = bool(adapter.config.get("fan_in_fan_out", False))
    hint = f"it was trained on {declared}; merge it with that base (--base DIR)"
    for module, parts in sorted(adapter.modules.items()):
        key = f"{module}.weight"
        if key not in shapes:
            raise VoicetuneError(
                f"adapter {adapter.weights.parent} does not belong to base {base_dir}: the base has no "
                f"{key} ({hint})"
            )
        if "A" in parts:
            rank_in, rank_out = parts["A"][0], parts["B"][1]
            expected = (parts["B"][0], parts["A"][1])
            if fan_in_fan_out:
                expected = expected[::-1]
        else:  # embedding LoRA: A is (r, num_embeddings), B is (embedding_dim, r)
            rank_in, rank_out = parts["EA"][0], parts["EB"][1]
            expected = (parts["EA"][1], parts["EB"][0])
        if rank_in != rank_out:
            raise VoicetuneError(
                f"{adapter.weights} is damaged ({module}: LoRA ranks {rank_in} and {rank_out} disagree): "
                f"run {TRAIN_SCRIPT} again"
            )
        actual = shapes[key]
        # The embedding may have been resized for added tokens: more rows in the adapter is fine.
        resized_embedding = "A" not in parts and actual[1:] == expected[1:] and expected[0] >= actual[0]
        if tuple(actual) != tuple(expected) and not resized_embedding:
            raise VoicetuneError(
                f"adapter {adapter.weights.parent} does not belong to base {base_dir}: {module} is "
                f"{tuple(expected)} in the adapter but {tuple(actual)} in the base ({hint})"
            )
    conflict = declared_base_conflict(str(adapter.config.get("base_model_name_or_path") or ""), base_dir)
    if conflict:
        raise VoicetuneError(conflict)


def _recorded_hub_id(base_dir: Path) -> str | None:
    """The hub id the base folder says it is, when it says one (config `_name_or_path`)."""
    try:
        config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = str(config.get("_name_or_path") or "")
    return value if _looks_like_hub_id(value) else None


def _looks_like_hub_id(value: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", value)) and not value.startswith((".", "/"))


def declared_base_conflict(declared: str, base_dir: Path) -> str | None:
    """A one-line refusal when adapter_config's base_model_name_or_path names a different model.

    Only when the name is informative: a local folder that still exists and holds other weights, or
    a hub id where the base also records one. A moved project (path gone) is not a conflict.
    """
    if not declared:
        return None
    declared_path = Path(declared).expanduser()
    if declared_path.is_dir():
        if declared_path.resolve() == base_dir.resolve():
            return None
        try:
            same = base_signature(declared_path, allow_pickle=True) == base_signature(base_dir, True)
        except VoicetuneError:
            return None
        if same:
            return None
        return (
            f"the adapter was trained on {declared_path}, but the base given is {base_dir} with other "
            f"weights: merge with --base {declared_path}"
        )
    hub_id = _recorded_hub_id(base_dir)
    # Same model name under another org (a mirror) or a relative path to this folder: not a conflict.
    same_name = hub_id is not None and hub_id.lower().split("/")[-1] == declared.lower().split("/")[-1]
    relative_path = base_dir.as_posix().endswith(declared.rstrip("/"))
    if _looks_like_hub_id(declared) and hub_id and not same_name and not relative_path:
        return (
            f"the adapter was trained on {declared}, but {base_dir} is {hub_id}: merge it with the base "
            f"it was trained on (--base DIR)"
        )
    return None


def resolve_dtype(requested: str, base_dir: Path) -> str:
    """'auto' -> the base model's stored dtype (config.json), bf16 when it does not say."""
    if requested != "auto":
        return requested
    try:
        config = json.loads((base_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "bf16"
    stored = str(config.get("dtype") or config.get("torch_dtype") or "")
    return CONFIG_DTYPES.get(stored, "bf16")


def estimate_output_bytes(base_dir: Path, out_dtype: str, allow_pickle: bool = False) -> int:
    """Bytes the merged folder will take: base parameters at the output dtype plus tokenizer files."""
    total = 0
    fix = "the base model folder is damaged; copy it again"
    for path in base_weight_files(base_dir, allow_pickle):
        if path.suffix != ".safetensors":
            total += path.stat().st_size
            continue
        for name, meta in read_safetensors_header(path, fix).items():
            if name == "__metadata__":
                continue
            count = 1
            for dim in meta["shape"]:
                count *= int(dim)
            floating = meta["dtype"] in ("F32", "F16", "BF16", "F64")
            total += count * (
                DTYPE_BYTES[out_dtype] if floating else SAFETENSORS_DTYPE_BYTES.get(meta["dtype"], 4)
            )
    total += sum(
        p.stat().st_size for p in base_dir.iterdir() if p.is_file() and p.suffix in (".json", ".model")
    )
    return total


def check_free_disk(target: Path, needed_bytes: int) -> None:
    """Refuse before writing when the output's file system has less room than the merged model needs."""
    probe = target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    # 5% + 64 MiB of headroom: the manifest, the tokenizer copy and file-system overhead.
    wanted = int(needed_bytes * 1.05) + (64 << 20)
    if free < wanted:
        raise VoicetuneError(
            f"not enough disk space for {target}: the merged model needs about {wanted / 2**30:.2f} GiB "
            f"and {probe} has {free / 2**30:.2f} GiB free: free some space or pass --out on a bigger disk"
        )


def adapter_hashes(adapter_dir: Path) -> dict[str, str]:
    """sha256 of the adapter folder's own files (not Axolotl's checkpoint-*/ subfolders, nor a
    checkpoint's resume state: optimizer, scheduler, RNG)."""
    return {
        p.name: sha256_file(p)
        for p in sorted(adapter_dir.iterdir())
        if p.is_file() and not p.name.startswith(TRAINER_STATE_FILES)
    }


def merge_fingerprint(
    settings: Mapping[str, Any],
    adapter: Mapping[str, str],
    base_identity: str,
    prompts: Iterable[str],
    upstream: str | None,
) -> str:
    return fingerprint("merge", dict(settings), dict(adapter), base_identity, list(prompts), upstream)


# --------------------------------------------------------------------------------------- the merge


def merge_adapter(inputs: MergeInputs, settings: MergeSettings, out_dir: Path, force: bool = False) -> Path:
    """Check, merge, verify and write `out_dir` (skipped when up to date). Returns out_dir."""
    if settings.scale is None:  # not chosen by the caller: the adapter as trained
        settings = settings.model_copy(update={"scale": 1.0})
    started = time.monotonic()
    remove_stale_temporaries(out_dir.parent)
    adapter = validate_adapter_dir(inputs.adapter_dir, settings.allow_pickle)
    check_adapter_matches_base(adapter, inputs.base_dir, settings.allow_pickle)
    if settings.base_weights == "dequant-nf4" and not inputs.quantized_4bit:
        raise VoicetuneError(
            "--base-weights dequant-nf4 is for QLoRA adapters, and this run trained on full-precision "
            "weights (quantized_4bit: false): use --base-weights w16"
        )
    out_dtype = resolve_dtype(settings.dtype, inputs.base_dir)
    work = "fp32" if settings.merge_precision == "fp32" else out_dtype
    tolerance = settings.tolerance if settings.tolerance is not None else parity.DEFAULT_TOLERANCE[work]
    prompts = parity.select_prompts(
        inputs.data_dir / "texts" / "test" if inputs.data_dir else None, settings.parity_prompts
    )
    resolved = {
        **settings.model_dump(exclude={"device"}),
        "dtype": out_dtype,
        "tolerance": tolerance,
        "quantized_4bit": inputs.quantized_4bit,
        "checkpoint": inputs.adapter_label,  # which adapter "best" resolved to
    }
    adapter_files = adapter_hashes(inputs.adapter_dir)
    signature = base_signature(inputs.base_dir, settings.allow_pickle)
    key = merge_fingerprint(
        resolved,
        adapter_files,
        signature,
        prompts,
        inputs.training.get("fingerprint"),
    )
    if not force and is_up_to_date(out_dir, key):
        say(f"merge: up to date at {out_dir} (same adapter, base and settings); --force merges again")
        return out_dir
    check_free_disk(out_dir, estimate_output_bytes(inputs.base_dir, out_dtype, settings.allow_pickle))

    header(f"merge: {inputs.adapter_dir} into {inputs.base_dir} -> {out_dir}")
    if inputs.quantized_4bit:
        if settings.base_weights == "w16":
            say(
                "QLoRA adapter: merging into the base loaded in full precision (16/32-bit weights), not into "
                "4-bit weights; --base-weights dequant-nf4 merges into the dequantised 4-bit weights instead"
            )
        else:
            say("QLoRA adapter: merging into dequant(nf4(base)), the weights the adapter was trained against")
    say(
        f"dtype: merge in {work}, save as {out_dtype}; parity tolerance {tolerance:g}, {len(prompts)} prompts"
    )

    with exclusive_lock(out_dir, "merging into"), atomic_output_dir(out_dir) as tmp:
        report = _merge_into(tmp, inputs, settings, adapter, out_dtype, work, tolerance, prompts)
        outputs = {
            p.relative_to(tmp).as_posix(): sha256_file(p)
            for p in progress(sorted(q for q in tmp.rglob("*") if q.is_file()), desc="checksums", unit="file")
        }
        manifest = build_manifest(
            "merge",
            key,
            settings=resolved,
            inputs={
                "checkpoint": stored_path(inputs.checkpoint_dir, out_dir),
                "training_fingerprint": inputs.training.get("fingerprint"),
                "adapter": adapter_files,
                "base_signature": signature,
            },
            outputs=outputs,
            libraries=LIBRARIES,
            run=inputs.run,
            # relative to the merged folder, so a moved project still finds them
            base_model=stored_path(inputs.base_dir, out_dir),
            adapter_dir=stored_path(inputs.adapter_dir, out_dir),
            data_dir=stored_path(inputs.data_dir, out_dir),
            quantized_4bit=inputs.quantized_4bit,
            profile=inputs.training.get("profile"),
            dtype=out_dtype,
            base_weights=settings.base_weights if inputs.quantized_4bit else "w16",
            checkpoint=inputs.adapter_label,
            checkpoint_why=inputs.adapter_why,
            lora_scale=settings.scale,
            merge_precision=work,
            parity=report["parity"],
            seconds={**report["seconds"], "total": round(time.monotonic() - started, 2)},
        )
        write_manifest(tmp, manifest)
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    shards = len(list(out_dir.glob("*.safetensors")))
    say(
        f"merged: {out_dir} ({shards} safetensors file(s), {size / 2**30:.2f} GiB, {out_dtype}) "
        f"in {time.monotonic() - started:.1f} s"
    )
    return out_dir


def fold_adapter(peft_model: Any) -> Any:
    """PEFT's merge: W <- W + scale * B @ A in every LoRA layer, then drop the LoRA wrappers."""
    return peft_model.merge_and_unload(safe_merge=True)


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def choose_device(requested: str, bytes_needed: int) -> str:
    """cuda when asked or when it has room for the work copy; cpu otherwise (or a clear refusal)."""
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise VoicetuneError("--device cuda was asked for, but torch sees no CUDA GPU: use --device cpu")
    if requested == "cpu" or not has_cuda:
        return "cpu"
    if requested == "auto":
        free, _total = torch.cuda.mem_get_info()
        if free < bytes_needed * 1.2:
            say(
                f"merge: the GPU has {free / 2**30:.1f} GiB free and the merge needs "
                f"{bytes_needed / 2**30:.1f} GiB: using the CPU"
            )
            return "cpu"
    return "cuda"


def check_ram(bytes_needed: int, precision: str) -> None:
    import psutil

    available = psutil.virtual_memory().available
    if available < bytes_needed:
        hint = " or use --merge-precision out (half the memory)" if precision == "fp32" else ""
        raise VoicetuneError(
            f"the merge needs about {bytes_needed / 2**30:.1f} GiB of memory in {precision} and "
            f"{available / 2**30:.1f} GiB is available: close other programs, merge on a GPU{hint}"
        )


def _merge_into(
    tmp: Path,
    inputs: MergeInputs,
    settings: MergeSettings,
    adapter: AdapterInfo,
    out_dtype: str,
    work: str,
    tolerance: float,
    prompts: list[str],
) -> dict[str, Any]:
    """Load, merge, compare, save, reload, compare. Raises VoicetuneError when parity fails."""
    from voicetune.core.privacy import apply_private_env

    apply_private_env()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    seconds: dict[str, float] = {}
    clock = time.monotonic()
    use_safetensors = base_weight_files(inputs.base_dir, settings.allow_pickle)[0].suffix == ".safetensors"
    work_bytes = estimate_output_bytes(inputs.base_dir, work, settings.allow_pickle)
    device = choose_device(settings.device, work_bytes)
    if device == "cpu":
        check_ram(int(work_bytes * 1.3), work)

    tokenizer_dir = (
        inputs.adapter_dir if (inputs.adapter_dir / "tokenizer_config.json").is_file() else inputs.base_dir
    )
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=False)
    encoded = parity.encode_prompts(tokenizer, prompts, settings.parity_max_tokens)

    as_trained: list[torch.Tensor] | None = None
    as_trained_how = None
    if inputs.quantized_4bit and device == "cuda" and _bnb_cuda_available():
        say("parity: model as trained = 4-bit nf4 base (bitsandbytes, GPU) + adapter")
        as_trained = _real_4bit_logits(inputs, encoded)
        as_trained_how = "bitsandbytes 4-bit nf4 on GPU"

    model = AutoModelForCausalLM.from_pretrained(
        str(inputs.base_dir),
        dtype=_torch_dtype(work),
        use_safetensors=use_safetensors,
        trust_remote_code=False,
        low_cpu_mem_usage=True,
    ).to(device)
    model.eval()
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    # Captured before PEFT wraps them: the same module objects become the LoRA layers' base_layer.
    quantizable = _quantizable_linears(model)
    peft_model = PeftModel.from_pretrained(model, str(inputs.adapter_dir), is_trainable=False)
    if settings.scale != 1.0:
        # Before any logits: parity then holds the merge to base + the *scaled* adapter.
        from voicetune.model.loading import scale_lora_

        scale_lora_(peft_model, settings.scale)
    peft_model.eval()
    seconds["load"] = round(time.monotonic() - clock, 2)

    clock = time.monotonic()
    if settings.base_weights == "dequant-nf4" and inputs.quantized_4bit:
        dequantize_nf4_(quantizable, _training_compute_dtype(inputs))
        with peft_model.disable_adapter():
            base_logits = parity.collect_logits(peft_model, encoded)
        reference = parity.collect_logits(peft_model, encoded)
        if as_trained is None:
            as_trained, as_trained_how = reference, "dequant(nf4(W)) + adapter, emulated"
    else:
        with peft_model.disable_adapter():
            base_logits = parity.collect_logits(peft_model, encoded)
        reference = parity.collect_logits(peft_model, encoded)
        if inputs.quantized_4bit and as_trained is None:
            dequantize_nf4_(quantizable, _training_compute_dtype(inputs))
            as_trained = parity.collect_logits(peft_model, encoded)
            as_trained_how = "dequant(nf4(W)) + adapter, emulated on CPU"
            restore_weights_(quantizable, inputs.base_dir, settings.allow_pickle)

    merged = fold_adapter(peft_model)
    merged_logits = parity.collect_logits(merged, encoded)
    seconds["merge_and_parity"] = round(time.monotonic() - clock, 2)

    comparisons = _check_parity(
        merged_logits, reference, base_logits, as_trained, as_trained_how, work, tolerance
    )
    gate = comparisons[0]

    clock = time.monotonic()
    _cast_parameters_(merged, _torch_dtype(out_dtype))
    cast_logits = merged_logits if out_dtype == work else parity.collect_logits(merged, encoded)
    merged.config.dtype = _torch_dtype(out_dtype)
    merged.save_pretrained(str(tmp), safe_serialization=True, max_shard_size=settings.max_shard_size)
    tokenizer.save_pretrained(str(tmp))
    if tokenizer.chat_template is None:
        say(
            f"warning: the tokenizer in {tokenizer_dir} has no chat template; generate will use plain prompts"
        )
    del merged, peft_model, model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    seconds["save"] = round(time.monotonic() - clock, 2)

    clock = time.monotonic()
    comparisons += _verify_saved(tmp, out_dtype, work, device, encoded, cast_logits, reference)
    seconds["verify"] = round(time.monotonic() - clock, 2)
    return {
        "parity": {
            "max_abs_logit_diff": gate.max_abs_diff,
            "tolerance": tolerance,
            "passed": True,
            "prompts": len(prompts),
            "tokens": sum(int(ids.shape[1]) for ids in encoded),
            "max_abs_logit": parity.max_abs_logit(reference),
            "comparisons": [item.as_dict() for item in comparisons],
            "device": device,
        },
        "seconds": seconds,
    }


def _check_parity(
    merged_logits: Any,
    reference: Any,
    base_logits: Any,
    as_trained: Any,
    as_trained_how: str | None,
    work: str,
    tolerance: float,
) -> list[parity.Comparison]:
    """The merged model against base + adapter (the gate: raises past the tolerance), the adapter's own
    effect (a warning when parity could not tell a merge from none) and, where known, the model as
    trained; each said in a line."""
    comparisons = [
        parity.Comparison(
            f"merged ({work}) vs base + adapter ({work})",
            parity.max_abs_diff(merged_logits, reference),
            tolerance,
        ),
        parity.Comparison(
            "adapter effect: base + adapter vs base alone", parity.max_abs_diff(reference, base_logits), None
        ),
    ]
    if as_trained is not None:
        comparisons.append(
            parity.Comparison(
                f"merged vs model as trained ({as_trained_how})",
                parity.max_abs_diff(merged_logits, as_trained),
                None,
            )
        )
    gate = comparisons[0]
    for item in comparisons:
        say(f"parity: {item.line()}")
    if not gate.passed:
        raise VoicetuneError(
            f"parity check failed: the merged model differs from base + adapter by {gate.max_abs_diff:.3g} "
            f"(tolerance {tolerance:g}); nothing was written. Check the adapter and base, or raise "
            f"--tolerance if the difference is expected"
        )
    if comparisons[1].max_abs_diff < 2 * tolerance:
        say(
            f"warning: the adapter changes logits by at most {comparisons[1].max_abs_diff:.3g}, close to the "
            f"tolerance: parity cannot tell this merge from no merge (was the adapter trained?)"
        )
    return comparisons


def _verify_saved(
    tmp: Path, out_dtype: str, work: str, device: str, encoded: Any, cast_logits: Any, reference: Any
) -> list[parity.Comparison]:
    """Reload the written folder and compare: the files must reproduce the merged model in memory (else
    raises); how far rounding to out_dtype moved it from base + adapter is reported."""
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(
        str(tmp), dtype=_torch_dtype(out_dtype), use_safetensors=True, trust_remote_code=False
    ).to(device)
    reloaded.eval()
    reloaded_logits = parity.collect_logits(reloaded, encoded)
    del reloaded
    gc.collect()
    saved = parity.Comparison(
        f"saved files ({out_dtype}, reloaded) vs merged model in memory",
        parity.max_abs_diff(reloaded_logits, cast_logits),
        parity.DEFAULT_TOLERANCE["fp32"],
    )
    rounding = parity.Comparison(
        f"saved model ({out_dtype}) vs base + adapter ({work})",
        parity.max_abs_diff(reloaded_logits, reference),
        None,
    )
    for item in (saved, rounding):
        say(f"parity: {item.line()}")
    if not saved.passed:
        raise VoicetuneError(
            f"the saved merged model does not reproduce the merged model (max |logit diff| "
            f"{saved.max_abs_diff:.3g}); nothing was written: check the disk and run again"
        )
    return [saved, rounding]


def _cast_parameters_(model: Any, dtype: torch.dtype) -> None:
    """Cast weights only: `model.to(dtype)` would also cast buffers such as RoPE's inv_freq, which a
    model loaded from disk keeps in fp32, and the in-memory model would then compute differently."""
    import torch

    with torch.no_grad():
        for param in model.parameters():
            param.data = param.data.to(dtype)


def _quantizable_linears(model: Any) -> dict[str, Any]:
    """The nn.Linear layers bitsandbytes quantises for QLoRA: all but the output head."""
    import torch

    head = model.get_output_embeddings()
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head
    }


def _training_compute_dtype(inputs: MergeInputs) -> str:
    recorded = str(
        inputs.training.get("compute_dtype") or inputs.training.get("settings", {}).get("compute_dtype") or ""
    )
    return recorded if recorded in DTYPE_BYTES else "bf16"


def dequantize_nf4_(linears: Mapping[str, Any], source_dtype: str = "bf16", blocksize: int = 64) -> None:
    """Replace each weight W by dequant(nf4(W)): exactly the weights a QLoRA run computes with.

    Same recipe as transformers' bitsandbytes loading with Axolotl's defaults: the weight cast to the
    training dtype, nf4, block size 64, double quantisation of the scales.
    """
    import bitsandbytes.functional as bnbf
    import torch

    with torch.no_grad():
        for _name, module in progress(
            linears.items(), desc="nf4 round trip", total=len(linears), unit="layer"
        ):
            weight = module.weight.data
            source = weight.to(_torch_dtype(source_dtype)).contiguous()
            packed, state = bnbf.quantize_4bit(
                source, blocksize=blocksize, quant_type="nf4", compress_statistics=True
            )
            module.weight.data = bnbf.dequantize_4bit(packed, state).to(weight.dtype).reshape(weight.shape)


def restore_weights_(linears: Mapping[str, Any], base_dir: Path, allow_pickle: bool = False) -> None:
    """Put the base's stored weights back into the given layers (reads only those tensors from disk)."""
    import torch
    from safetensors import safe_open

    wanted = {f"{name}.weight": module for name, module in linears.items()}
    found = 0
    with torch.no_grad():
        for path in base_weight_files(base_dir, allow_pickle):
            if path.suffix != ".safetensors":
                state = torch.load(path, map_location="cpu", weights_only=True)
                for key, tensor in state.items():
                    if key in wanted:
                        module = wanted[key]
                        module.weight.data = tensor.to(module.weight.dtype).to(module.weight.device)
                        found += 1
                continue
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118
                    if key in wanted:
                        module = wanted[key]
                        tensor = handle.get_tensor(key)
                        module.weight.data = tensor.to(module.weight.dtype).to(module.weight.device)
                        found += 1
    if found != len(wanted):
        raise VoicetuneError(
            f"could not restore {len(wanted) - found} base weights from {base_dir} after the 4-bit "
            f"comparison: use --base-weights dequant-nf4, or report this model layout"
        )


def _bnb_cuda_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _real_4bit_logits(inputs: MergeInputs, encoded: list[torch.Tensor]) -> list[torch.Tensor]:
    """Logits of the model exactly as QLoRA trained it: bitsandbytes nf4 base + adapter, on the GPU."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    compute = _torch_dtype(_training_compute_dtype(inputs))
    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )
    base = AutoModelForCausalLM.from_pretrained(
        str(inputs.base_dir),
        quantization_config=quant,
        dtype=compute,
        device_map={"": 0},
        use_safetensors=True,
        trust_remote_code=False,
    )
    model = PeftModel.from_pretrained(base, str(inputs.adapter_dir), is_trainable=False)
    model.eval()
    logits = parity.collect_logits(model, encoded)
    del model, base
    gc.collect()
    torch.cuda.empty_cache()
    return logits


def read_merged_manifest(folder: Path) -> dict[str, Any] | None:
    """The merge manifest of a merged model folder (None when it is not one)."""
    merged = MergedModel.find(folder)
    return merged.manifest if merged else None
