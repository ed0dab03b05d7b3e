"""Render the Axolotl config of one training run: a profile YAML + the run's own keys.

A profile (configs/axolotl/<name>.yaml, or any Axolotl YAML the user passes with `--profile FILE`)
holds the recipe in Axolotl's own schema. This module adds what only the run knows, in this order
(later wins): the profile; the run keys (base_model, datasets, test_datasets, output_dir,
dataset_prepared_path); derived keys (num_epochs from the corpus size unless the recipe of
voicetune.train.recipe planned the run, attention backend, tracking);
the flags (--max-steps, --epochs, --sequence-len, --micro-batch, --grad-accum, --lr); `--set
key=value` overrides; the multi-GPU keys. Pure: no torch, no Axolotl import, so it renders anywhere
and tests in milliseconds.
"""

from __future__ import annotations

import copy
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from voicetune.core.errors import VoicetuneError
from voicetune.core.paths import configs_dir

PROFILES = ("cpu-demo", "8gb", "16gb", "24gb", "32gb-rtx5090", "80gb")
ALIASES = {"32gb": "32gb-rtx5090", "cpu": "cpu-demo"}
# Preference training on `voicetune blind-test --export-dpo` pairs (data format "dpo"): used as written.
PREFERENCE_PROFILES = ("dpo",)
# Nominal card size (GiB) -> profile; a card qualifies when it reports at least 95% of the size.
GPU_PROFILES = ((80, "80gb"), (32, "32gb-rtx5090"), (24, "24gb"), (16, "16gb"), (8, "8gb"))
# Keys voicetune owns: the run folder layout depends on them, so `--set` may not change them.
RUN_KEYS = ("base_model", "datasets", "test_datasets", "output_dir", "dataset_prepared_path")
EVAL_KEYS = (
    "eval_steps",
    "evals_per_epoch",
    "early_stopping_patience",
    "load_best_model_at_end",
    "eval_strategy",
    "metric_for_best_model",
)
DATA_FORMATS = {
    "chat_template": "chat_template",
    "chat": "chat_template",
    "messages": "chat_template",
    "completion": "completion",
    "text": "completion",
    "dpo": "dpo",  # chosen/rejected pairs from `voicetune blind-test --export-dpo`
}
CHARS_PER_TOKEN = 4.0  # rough, deterministic: only the epoch rule uses it


@dataclass
class RunSpec:
    """Everything run-specific that goes into the rendered config."""

    run_name: str
    run_dir: Path
    base_model: Path
    data_dir: Path
    data_format: str = "chat_template"
    data_sequence_len: int | None = None
    train_tokens: int | None = None
    has_val: bool = True
    val_file: Path | None = None  # default: data_dir/val.jsonl (a CPU run evaluates on a sample)
    val_examples: int | None = None  # examples in the val file, to size the eval batch
    max_steps: int | None = None
    epochs: float | None = None
    sequence_len: int | None = None
    micro_batch: int | None = None
    grad_accum: int | None = None
    lr: float | None = None
    wandb: str = "off"
    attention: str | None = None  # resolved backend, used when the profile leaves it open
    resume_from: Path | None = None
    gpus: int = 1
    multi_gpu: str = "deepspeed"
    overrides: dict[str, Any] = field(default_factory=dict)
    fit_eval_to_memory: bool = False  # on a GPU: size the eval batch so evaluation fits like training
    train_file: Path | None = None  # default: data_dir/train.jsonl (the recipe may re-mix the pair modes)
    planned: bool = False  # the recipe (voicetune.train.recipe) set epochs/steps: no epoch rule here
    notes: list[str] = field(default_factory=list)  # what was derived, to tell the user


def canonical_profile(name: str) -> str:
    return ALIASES.get(name, name)


def profile_path(name_or_file: str) -> Path:
    """configs/axolotl/<name>.yaml for a profile name (aliases allowed), or the file itself."""
    name = canonical_profile(name_or_file)
    if name in PROFILES or name in PREFERENCE_PROFILES:
        return configs_dir() / "axolotl" / f"{name}.yaml"
    path = Path(name_or_file).expanduser()
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise VoicetuneError(
                f"profile file {path} not found: give an existing Axolotl YAML or one of "
                f"{', '.join(PROFILES)}"
            )
        return path.resolve()
    close = difflib.get_close_matches(name, [*PROFILES, *ALIASES, "auto"], n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise VoicetuneError(
        f"unknown profile '{name_or_file}'{hint}: use auto, {', '.join(PROFILES)}, 32gb, "
        f"or a path to an Axolotl YAML"
    )


def load_yaml_mapping(path: Path, what: str = "Axolotl config") -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise VoicetuneError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise VoicetuneError(f"{path}{where} is not valid YAML: fix the syntax and run again") from exc
    if not isinstance(data, dict):
        raise VoicetuneError(f"{path} must be a mapping of Axolotl keys (key: value lines)")
    return data


def load_profile(name_or_file: str) -> dict[str, Any]:
    return load_yaml_mapping(profile_path(name_or_file), "profile")


def profile_for_gpu(total_gib: float) -> str:
    """The largest profile whose nominal card size this GPU has (the smallest one below 16 GB)."""
    for nominal, name in GPU_PROFILES:
        if total_gib >= 0.95 * nominal:
            return name
    return GPU_PROFILES[-1][1]


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """`key=value` pairs; the value is YAML (so 1e-4, true, [a, b] and null mean what they look like).

    Dotted keys reach into mappings: `bnb_config_kwargs.bnb_4bit_quant_type=fp4`. `null` removes a key.
    """
    result: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise VoicetuneError(f"--set expects key=value, got '{item}': e.g. --set learning_rate=2e-4")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise VoicetuneError(f"--set {item}: the value is not valid YAML: quote it") from exc
        value = _yaml11_number(value)
        target = result
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise VoicetuneError(f"--set {item}: '{part}' is set to a value and also used as a mapping")
        target[parts[-1]] = value
    return result


def _yaml11_number(value: Any) -> Any:
    """PyYAML reads `1e-4` (no dot) as a string: take it as the number the person meant."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if any(c in value.lower() for c in ".e") else value
    return value


def merge_overrides(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge two override mappings (second wins), keeping None values (they mean "remove")."""
    out = copy.deepcopy(first)
    for key, value in second.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_overrides(cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge overrides into cfg (a copy); a None value deletes the key."""
    out = copy.deepcopy(cfg)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = apply_overrides(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def epochs_for_corpus(train_tokens: int) -> int:
    """Passes over the data: few for big corpora, more for small ones, never enough to memorise.

    With the reference recipe (lr 1e-4, r 64) a few hundred thousand tokens of one author's prose
    overfit after about three epochs (val loss turns up); early stopping catches what this misses.
    """
    if train_tokens < 200_000:
        return 3
    if train_tokens < 2_000_000:
        return 2
    return 1


def detect_format(data_dir: Path, declared: str | None) -> str:
    """'chat_template' or 'completion': the manifest's word, else the first line of train.jsonl."""
    if declared:
        fmt = DATA_FORMATS.get(str(declared).lower())
        if fmt is None:
            raise VoicetuneError(
                f"{data_dir / 'manifest.json'}: unknown data format '{declared}': expected one of "
                f"{sorted(set(DATA_FORMATS))}; re-run training/1_prepare_data.sh"
            )
        return fmt
    try:
        with open(data_dir / "train.jsonl", encoding="utf-8") as handle:
            first = json.loads(handle.readline() or "{}")
    except (OSError, ValueError):
        first = {}
    return (
        "completion"
        if isinstance(first, dict) and "text" in first and "messages" not in first
        else "chat_template"
    )


def approx_train_tokens(data_dir: Path) -> int:
    """Characters of the training text / 4: a deterministic size for the epoch rule."""
    path = data_dir / "train.jsonl"
    try:
        return int(path.stat().st_size / CHARS_PER_TOKEN)
    except OSError:
        return 0


# Where the end-of-turn token is trained (Axolotl's per-dataset `train_on_eos`). voicetune's pairs are
# passages cut from longer texts: the end of a passage is where the chunker cut, not where the writer
# stopped. Trained on, it taught the demo model to stop after a line of dialogue (on an unseen writer
# 46.7 words a continuation against the base model's 59.6, a quarter of them ending early:
# benchmarks/results/recipe-trials/gpu-h200-train-on-eos/lengths.json). "none" leaves stopping to
# the base model and the length budget. A profile (or --set train_on_eos=turn) can say otherwise.
DEFAULT_TRAIN_ON_EOS = "none"


def dataset_entry(path: Path, data_format: str, train_on_eos: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": str(path), "ds_type": "json", "split": "train"}
    if data_format == "completion":
        entry.update(type="completion", field="text")
    elif data_format == "dpo":  # Axolotl's DPO type that renders with the model's own chat template
        entry.update(
            type="chat_template.default",
            field_messages="messages",
            field_chosen="chosen",
            field_rejected="rejected",
        )
    else:
        entry.update(type="chat_template", field_messages="messages")
        if train_on_eos is not None:
            entry["train_on_eos"] = train_on_eos
    return entry


def layer_class_for(base_model: Path) -> str | None:
    """FSDP's wrap class from config.json: LlamaForCausalLM -> LlamaDecoderLayer."""
    try:
        config = json.loads((base_model / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    archs = config.get("architectures") or []
    if archs and str(archs[0]).endswith("ForCausalLM"):
        return str(archs[0])[: -len("ForCausalLM")] + "DecoderLayer"
    return None


def render(profile: dict[str, Any], spec: RunSpec) -> dict[str, Any]:
    """The full Axolotl config for this run (a new dict; `profile` is not changed)."""
    cfg = copy.deepcopy(profile)
    notes = spec.notes

    forbidden = [key for key in spec.overrides if key in RUN_KEYS]
    if forbidden:
        raise VoicetuneError(
            f"--set {forbidden[0]}=... is not allowed: voicetune sets {forbidden[0]} from --data/--run/"
            f"--base-model (use those flags)"
        )
    if bool(cfg.get("rl")) != (spec.data_format == "dpo"):
        raise VoicetuneError(
            f"profile with rl: {cfg['rl']} trains on preference pairs, and {spec.data_dir} holds writing: "
            f"give --data <run>-dpo (made by voicetune blind-test --export-dpo)"
            if cfg.get("rl")
            else f"{spec.data_dir} holds preference pairs: train them with --profile dpo"
        )

    # run keys: where things are
    cfg["base_model"] = str(spec.base_model)
    # a dataset key, accepted at the top of a profile or from --set and put on every dataset
    eos = spec.overrides.get("train_on_eos", cfg.pop("train_on_eos", DEFAULT_TRAIN_ON_EOS))
    train_file = spec.train_file or spec.data_dir / "train.jsonl"
    cfg["datasets"] = [dataset_entry(train_file, spec.data_format, eos)]
    cfg["val_set_size"] = 0.0
    if spec.has_val:
        val_file = spec.val_file or spec.data_dir / "val.jsonl"
        cfg["test_datasets"] = [dataset_entry(val_file, spec.data_format, eos)]
    else:
        cfg.pop("test_datasets", None)
        dropped = [key for key in EVAL_KEYS if cfg.pop(key, None) is not None]
        if dropped:
            notes.append(
                f"no validation examples in {spec.data_dir / 'val.jsonl'}: evaluation and early "
                f"stopping are off ({', '.join(dropped)} removed)"
            )
    cfg["output_dir"] = str(spec.run_dir / "output")
    cfg["dataset_prepared_path"] = str(spec.run_dir / "prepared")

    # derived keys
    if spec.data_sequence_len and int(cfg.get("sequence_len") or 0) < spec.data_sequence_len:
        notes.append(
            f"sequence_len raised from {cfg.get('sequence_len')} to {spec.data_sequence_len}: the "
            f"data was chunked for {spec.data_sequence_len} tokens"
        )
        cfg["sequence_len"] = spec.data_sequence_len
    if (
        not spec.planned
        and "max_steps" not in cfg
        and spec.epochs is None
        and spec.max_steps is None
        and spec.train_tokens
    ):
        epochs = epochs_for_corpus(spec.train_tokens)
        if cfg.get("num_epochs") != epochs:
            notes.append(
                f"num_epochs {epochs} for ~{spec.train_tokens:,} training tokens (guard against "
                f"overfitting a small corpus; --epochs N to choose)"
            )
        cfg["num_epochs"] = epochs
    if spec.attention and not _attention_set(cfg):
        cfg["attn_implementation"] = spec.attention
    cfg["use_tensorboard"] = True
    _tracking(cfg, spec)

    # flags
    if spec.max_steps is not None:
        cfg["max_steps"] = spec.max_steps
    if spec.epochs is not None:
        cfg["num_epochs"] = spec.epochs
        if spec.max_steps is None:
            cfg.pop("max_steps", None)
    for key, value in (
        ("sequence_len", spec.sequence_len),
        ("micro_batch_size", spec.micro_batch),
        ("gradient_accumulation_steps", spec.grad_accum),
        ("learning_rate", spec.lr),
    ):
        if value is not None:
            cfg[key] = value

    cfg = apply_overrides(cfg, spec.overrides)
    cfg.pop("train_on_eos", None)  # on the datasets above

    if spec.resume_from is not None:
        cfg["resume_from_checkpoint"] = str(spec.resume_from)
    else:
        cfg.pop("resume_from_checkpoint", None)
    if spec.gpus > 1:
        cfg = multi_gpu_keys(cfg, spec)
    _fit_eval_batch(cfg, spec, notes)
    if spec.fit_eval_to_memory:
        _fit_eval_batch_to_memory(cfg, spec, notes)
    return cfg


def _fit_eval_batch_to_memory(cfg: dict[str, Any], spec: RunSpec, notes: list[str]) -> None:
    """Shrink the eval batch until evaluation needs no more GPU memory than a training step (see
    vram.eval_batch_within_training_peak). An eval_batch_size set with --set is left alone."""
    from voicetune.train import vram

    if "eval_batch_size" in spec.overrides or "test_datasets" not in cfg:
        return
    if cfg.get("adapter") not in ("lora", "qlora"):
        return
    try:
        shape = vram.ModelShape.from_model_dir(spec.base_model)
        plan = vram.plan_from_axolotl(cfg)
    except (OSError, ValueError, KeyError, TypeError):
        return  # not a model folder the estimator reads: preflight says so
    current = plan.eval_micro_batch_size or plan.micro_batch_size
    fitted = vram.eval_batch_within_training_peak(shape, plan)
    if fitted < current:
        cfg["eval_batch_size"] = fitted
        full = vram.estimate(shape, plan).eval_peak / vram.GIB
        notes.append(
            f"eval_batch_size {fitted}: evaluation builds the full logits (no fused loss), "
            f"{full:.1f} GiB at eval batch {current}; {fitted} keeps it within a training step's memory"
        )


def _fit_eval_batch(cfg: dict[str, Any], spec: RunSpec, notes: list[str]) -> None:
    """Keep the eval batch within the val split. Axolotl's eval dataloader drops an incomplete last
    batch (always when packing), so a batch larger than the split per GPU gives no batch at all:
    eval_loss goes missing and early stopping crashes the run (seen on an H100 with micro batch 16
    and a 15-example val split, and on 2 x H200)."""
    if not spec.has_val or not spec.val_examples or "test_datasets" not in cfg:
        return
    per_gpu = max(1, spec.val_examples // max(1, spec.gpus))
    batch = int(cfg.get("eval_batch_size") or cfg.get("micro_batch_size") or 1)
    if cfg.get("sample_packing"):
        # Axolotl's packed eval dataloader can come out empty on a val split of a writer's size
        # (15 examples at eval batch 1 on an H200: no batch, no eval_loss); unpacked, every example
        # counts once, and the fused eval loss keeps its padding cheap.
        cfg.setdefault("eval_sample_packing", False)
    if batch > per_gpu:
        cfg["eval_batch_size"] = per_gpu
        notes.append(
            f"eval_batch_size {per_gpu}: the val split has {spec.val_examples} examples"
            + (f" for {spec.gpus} GPUs" if spec.gpus > 1 else "")
        )


def _attention_set(cfg: dict[str, Any]) -> bool:
    legacy = ("flash_attention", "sdp_attention", "xformers_attention", "flex_attention", "eager_attention")
    return bool(cfg.get("attn_implementation")) or any(cfg.get(key) is not None for key in legacy)


def _tracking(cfg: dict[str, Any], spec: RunSpec) -> None:
    """TensorBoard always; wandb only when asked for (offline: local files; online: wandb.ai)."""
    if spec.wandb == "off":
        for key in [k for k in cfg if k.startswith("wandb_")]:
            cfg.pop(key)
        return
    if not cfg.get("wandb_project"):  # Axolotl's examples leave it empty: no project, no wandb
        cfg["wandb_project"] = "voicetune"
    cfg["wandb_name"] = spec.run_name
    cfg["wandb_mode"] = spec.wandb


def multi_gpu_keys(cfg: dict[str, Any], spec: RunSpec) -> dict[str, Any]:
    """DeepSpeed ZeRO-2 (default) or FSDP2 keys from configs/deepspeed/."""
    folder = configs_dir() / "deepspeed"
    if spec.multi_gpu == "fsdp":
        fsdp = load_yaml_mapping(folder / "fsdp2.yaml", "FSDP config")
        cfg = apply_overrides(cfg, fsdp)
        fsdp_cfg = cfg.setdefault("fsdp_config", {})
        if not fsdp_cfg.get("transformer_layer_cls_to_wrap"):
            layer = layer_class_for(spec.base_model)
            if layer:
                fsdp_cfg["transformer_layer_cls_to_wrap"] = layer
            else:
                fsdp_cfg.pop("transformer_layer_cls_to_wrap", None)
        cfg.pop("deepspeed", None)
    else:
        cfg["deepspeed"] = str((folder / "zero2.json").resolve())
    # A small val split packed into few rows leaves some ranks without an eval batch: eval_loss then
    # goes missing and early stopping crashes the run (seen on 2 x H200). Unpacked eval feeds every rank.
    cfg.setdefault("eval_sample_packing", False)
    return cfg


def dump_yaml(cfg: dict[str, Any], header: list[str] | None = None) -> str:
    """YAML text with the run's own keys first, then the recipe in the profile's order."""
    lines = [f"# {line}" for line in header or []]
    first = (
        "base_model",
        "datasets",
        "test_datasets",
        "val_set_size",
        "output_dir",
        "dataset_prepared_path",
        "resume_from_checkpoint",
    )
    ordered = {k: cfg[k] for k in first if k in cfg} | {k: v for k, v in cfg.items() if k not in first}
    body = yaml.safe_dump(ordered, sort_keys=False, default_flow_style=None, width=110, allow_unicode=True)
    return "\n".join([*lines, body]) if lines else body


def fingerprint_view(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config without what does not change the trained adapter: paths of this folder, tracking,
    and the resume pointer. Inputs (data, base model) are fingerprinted by content elsewhere."""
    view = {k: v for k, v in cfg.items() if not k.startswith("wandb_")}
    # attn_implementation: flash-attn or SDPA compute the same thing; installing flash-attn later
    # must not turn a finished run into "settings changed"
    for key in (
        "resume_from_checkpoint",
        "output_dir",
        "dataset_prepared_path",
        "base_model",
        "use_tensorboard",
        "logging_steps",
        "attn_implementation",
    ):
        view.pop(key, None)
    for key in ("datasets", "test_datasets"):
        if key in view:
            view[key] = [{k: (Path(v).name if k == "path" else v) for k, v in d.items()} for d in view[key]]
    if "deepspeed" in view:
        path = Path(str(view["deepspeed"]))
        try:
            view["deepspeed"] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            view["deepspeed"] = path.name
    return view
