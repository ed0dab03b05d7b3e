"""Preflight: everything that can fail a training run, checked in seconds before any model loads.

1. the known mistakes, each with its fix in one line (instant, no imports);
2. Axolotl's own config schema (its pydantic models, through `axolotl.utils.config.validate_config`),
   plus keys Axolotl would ignore silently (typos);
3. the dataset: files exist, parse, and fit `sequence_len` after the chat template, counted with the
   base model's own tokenizer (Axolotl drops over-long examples with one progress line);
4. free disk for checkpoints;
5. the machine: a CPU cannot run 4-bit/bf16/Triton kernels; on a GPU, the VRAM estimate
   (voicetune.train.vram) against the card's free memory.

GPU facts come from nvidia-smi (voicetune.machine.gpu) and one short subprocess that imports torch, so this
process never holds a CUDA context (and its memory) while Axolotl trains.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from voicetune.core.artifacts import SCRIPTS
from voicetune.core.errors import VoicetuneError
from voicetune.core.progress import progress, say
from voicetune.train import vram

GIB = vram.GIB
PREPARE_SCRIPT = SCRIPTS["prepare"]
DROP_ERROR_SHARE = 0.01  # over-long training examples beyond this share are an error, below a warning
ROLES = {"system", "user", "assistant", "tool"}


# ----------------------------------------------------------------------------------------- GPU facts


@dataclass(frozen=True)
class GpuInfo:
    name: str
    count: int
    free_bytes: int
    total_bytes: int
    compute_capability: tuple[int, int] | None
    torch_cuda: bool  # can the venv's torch use it?
    source: str  # "torch", "nvidia-smi", or "fake: <dir>"
    flash_attn_ok: bool = False
    flash_attn_reason: str = "flash-attn is not installed"

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    @property
    def older_than_ampere(self) -> bool:
        """Known to be below compute capability 8.0 (Turing, Volta): no bf16, no flash-attn 2."""
        return self.compute_capability is not None and self.compute_capability < (8, 0)

    @property
    def sm(self) -> str | None:
        cc = self.compute_capability
        return f"sm_{cc[0]}{cc[1]}" if cc else None

    def describe(self) -> str:
        count = f"{self.count} x " if self.count > 1 else ""
        return (
            f"{count}{self.name} ({self.total_gib:.1f} GiB, {self.free_bytes / GIB:.1f} GiB free"
            f"{', ' + self.sm if self.sm else ''}; from {self.source})"
        )


_PROBE = r"""
import json, sys
out = {"cuda": False}
try:
    import torch
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(0)
        p = torch.cuda.get_device_properties(0)
        out.update(cuda=True, count=torch.cuda.device_count(), name=p.name, free=free, total=total,
                   cc=[p.major, p.minor])
        flash = {"ok": False, "reason": "flash-attn is not installed"}
        if sys.argv[1] == "1":
            try:
                from flash_attn import flash_attn_func
                dt = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
                q = torch.randn(1, 256, 8, 64, device="cuda", dtype=dt, requires_grad=True)
                flash_attn_func(q, q, q, causal=True).float().sum().backward()
                torch.cuda.synchronize()
                flash = {"ok": True, "reason": "flash-attn passed a forward/backward on this GPU"}
            except Exception as exc:  # an import is not proof: sm_120 builds fail here, not at import
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
                flash = {"ok": False, "reason": f"flash-attn failed a forward/backward here ({first})"}
        out["flash"] = flash
except Exception as exc:
    out["error"] = str(exc)[:200]
print(json.dumps(out))
"""


def read_gpu() -> GpuInfo | None:
    """The GPU(s) training would use, or None on a machine without an NVIDIA GPU."""
    from voicetune.machine import gpu as machine

    readings = machine.read_machine()
    fake = os.environ.get(machine.FAKE_DIR_ENV)
    if fake:
        if not readings.gpus:
            return None
        first = readings.gpus[0]
        total = first.memory_total_mib * 2**20
        used = (first.memory_used_mib or 0) * 2**20
        return GpuInfo(
            first.name,
            len(readings.gpus),
            total - used,
            total,
            first.compute_capability,
            torch_cuda=True,
            source=f"fake: {fake}",
            flash_attn_reason="a fake GPU cannot run flash-attn",
        )
    if not readings.gpus:
        return None
    first = readings.gpus[0]
    want_flash = importlib.util.find_spec("flash_attn") is not None
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, "1" if want_flash else "0"],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        probe = json.loads(proc.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        probe = {"cuda": False}
    if probe.get("cuda"):
        flash = probe.get("flash", {})
        return GpuInfo(
            probe["name"],
            int(probe["count"]),
            int(probe["free"]),
            int(probe["total"]),
            tuple(probe["cc"]),
            torch_cuda=True,
            source="torch",  # type: ignore[arg-type]
            flash_attn_ok=bool(flash.get("ok")),
            flash_attn_reason=str(flash.get("reason", "")),
        )
    total = first.memory_total_mib * 2**20
    return GpuInfo(
        first.name,
        len(readings.gpus),
        total - (first.memory_used_mib or 0) * 2**20,
        total,
        first.compute_capability,
        torch_cuda=False,
        source="nvidia-smi",
    )


def attention_for(gpu: GpuInfo | None) -> tuple[str, str]:
    """(attn_implementation, why): flash-attn when it really runs on this card, else SDPA."""
    if gpu is None or not gpu.torch_cuda:
        return "sdpa", "no CUDA GPU: PyTorch SDPA"
    if gpu.older_than_ampere:
        return "sdpa", f"{gpu.name} is older than Ampere (flash-attn needs 8.0+): PyTorch SDPA"
    if gpu.flash_attn_ok:
        return "flash_attention_2", gpu.flash_attn_reason
    return "sdpa", f"{gpu.flash_attn_reason}: PyTorch SDPA"


def capabilities_for(gpu: GpuInfo | None, gpus: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Axolotl's (capabilities, env_capabilities) for validate_config, for the machine we train on."""
    cc = gpu.compute_capability if gpu and gpu.torch_cuda else None
    ampere = bool(cc and cc >= (8, 0))
    try:
        torch_version = metadata.version("torch").split("+", 1)[0]
    except metadata.PackageNotFoundError:
        torch_version = "0"
    capabilities = {
        "bf16": ampere,
        "fp8": bool(cc and cc >= (9, 0)),
        "tf32": ampere,
        "n_gpu": gpus,
        "compute_capability": f"sm_{cc[0]}{cc[1]}" if cc else None,
    }
    return capabilities, {"torch_version": torch_version}


# ----------------------------------------------------------------------------------------- findings


@dataclass
class DataStats:
    train_examples: int = 0
    val_examples: int = 0
    train_tokens: int = 0
    val_tokens: int = 0
    longest: int = 0
    over_train: int = 0
    over_val: int = 0
    sequence_len: int = 0

    def line(self) -> str:
        dropped = (
            f"{self.over_train} train / {self.over_val} val examples longer than sequence_len "
            f"{self.sequence_len}"
            if self.over_train or self.over_val
            else "none dropped"
        )
        return (
            f"data: {self.train_examples} train / {self.val_examples} val examples, "
            f"{self.train_tokens:,} training tokens, longest {self.longest} of {self.sequence_len}: {dropped}"
        )


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info: list[str] = field(default_factory=list)
    estimate: vram.Estimate | None = None
    data: DataStats | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "errors": self.errors,
            "warnings": self.warnings,
            "data": self.data.__dict__ if self.data else None,
            "vram_estimate": self.estimate.to_json() if self.estimate else None,
            "seconds": round(self.seconds, 1),
        }


def known_mistakes(cfg: dict[str, Any]) -> list[str]:
    """The mistakes people make with Axolotl configs, each with its fix. Pure and instant."""
    problems: list[str] = []
    pairs = (
        ("evals_per_epoch", "eval_steps", "evaluations per epoch", "evaluate every N steps (or a 0-1 share)"),
        ("warmup_ratio", "warmup_steps", "a share of the run", "a fixed number of steps"),
        ("saves_per_epoch", "save_steps", "saves per epoch", "save every N steps (or a 0-1 share)"),
    )
    for a, b, a_means, b_means in pairs:
        if cfg.get(a) is not None and cfg.get(b) is not None:
            problems.append(
                f"{a} ({cfg[a]}) and {b} ({cfg[b]}) are both set and Axolotl refuses that: keep one "
                f"(delete {a}: {a_means}, or delete {b}: {b_means}; `--set {a}=null` removes it)"
            )
    if cfg.get("micro_batch_size") is None:
        problems.append(
            "micro_batch_size is missing (Axolotl would silently use 1): add `micro_batch_size: 2` "
            "or pass --micro-batch N"
        )
    if cfg.get("early_stopping_patience") and not (cfg.get("save_steps") and cfg.get("eval_steps")):
        problems.append(
            "early_stopping_patience needs both eval_steps and save_steps (save_steps a multiple "
            "of eval_steps): set them, or remove early_stopping_patience"
        )
    if cfg.get("adapter") == "qlora" and not cfg.get("load_in_4bit"):
        problems.append(
            "adapter: qlora without load_in_4bit: true trains a plain LoRA on a 16-bit model: "
            "set load_in_4bit: true, or adapter: lora"
        )
    if cfg.get("load_in_4bit") and cfg.get("load_in_8bit"):
        problems.append("load_in_4bit and load_in_8bit are both true: keep one (4-bit is QLoRA)")
    if cfg.get("sample_packing") and cfg.get("eval_sample_packing") is False and cfg.get("eval_table_size"):
        problems.append("eval_table_size does not work with sample_packing: remove eval_table_size")
    return problems


def hardware_problems(cfg: dict[str, Any], gpu: GpuInfo | None, gpus: int) -> list[str]:
    """What this machine cannot run (on a CPU: 4-bit, bf16/fp16, Triton kernels, flash-attn)."""
    problems: list[str] = []
    if gpu is not None and not gpu.torch_cuda:
        problems.append(
            f"nvidia-smi sees {gpu.name} but the venv's PyTorch has no CUDA: run "
            f"setup/1_install_pytorch.sh (or train on the CPU with --profile cpu-demo)"
        )
        return problems
    if gpu is None:
        if cfg.get("load_in_4bit") or cfg.get("load_in_8bit"):
            problems.append(
                "this profile loads the model in 4/8-bit with bitsandbytes, which needs an NVIDIA "
                "GPU, and none is visible: use --profile cpu-demo (or auto)"
            )
        if cfg.get("bf16") is True or cfg.get("fp16") is True:
            problems.append(
                "bf16/fp16 training needs a GPU: set bf16: false and fp16: false (or --profile cpu-demo)"
            )
        kernels = [
            k
            for k in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "lora_embedding_kernel")
            if cfg.get(k) is not False and cfg.get("adapter") in ("lora", "qlora")
        ]
        if kernels:
            problems.append(
                f"on a CPU Axolotl's Triton LoRA kernels fail (they allocate on cuda): set "
                f"{', '.join(f'{k}: false' for k in kernels)}"
            )
        if str(cfg.get("attn_implementation", "")).startswith("flash") or cfg.get("flash_attention"):
            problems.append("flash-attention needs an NVIDIA GPU: use attn_implementation: sdpa")
        if gpus > 1:
            problems.append(f"--gpus {gpus} but no GPU is visible: drop --gpus")
    else:
        if gpus > gpu.count:
            problems.append(f"--gpus {gpus} but only {gpu.count} GPU(s) are visible: use --gpus {gpu.count}")
        if fp16_adapters_fail(cfg, gpu):
            problems.append(
                f"{gpu.name} has no bf16, so training runs in fp16, and LoRA weights kept in fp16 fail "
                f'under fp16\'s gradient scaler ("Attempting to unscale FP16 gradients"): set '
                f"peft_autocast_adapter_dtype: true (--set peft_autocast_adapter_dtype=true)"
            )
    return problems


def fp16_adapters_fail(cfg: dict[str, Any], gpu: GpuInfo) -> bool:
    """A profile that keeps LoRA weights in the compute dtype (peft_autocast_adapter_dtype: false),
    on a card without bf16 (compute capability below 8.0: Turing, Volta), where that dtype is fp16."""
    half_precision = cfg.get("bf16") in (True, "auto") or cfg.get("fp16") is True
    return gpu.older_than_ampere and half_precision and cfg.get("peft_autocast_adapter_dtype") is False


# ----------------------------------------------------------------------------------- Axolotl schema


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    names = (
        "axolotl",
        "torchao",
        "torch",
        "torch.utils._pytree",
        "bitsandbytes",
        "transformers",
        "py.warnings",
    )
    saved = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def schema_problems(
    cfg: dict[str, Any],
    capabilities: dict[str, Any],
    env_capabilities: dict[str, Any],
    warnings: list[str] | None = None,
) -> list[str]:
    """Validate with Axolotl's own models; unknown keys (which Axolotl drops silently) are problems too,
    except keys left empty (`debug:`, as Axolotl's own examples have), which go to `warnings`."""
    with _quiet_logs():
        try:
            from axolotl.utils.config import validate_config
            from axolotl.utils.dict import DictDefault
            from axolotl.utils.schemas.config import AxolotlConfigWCapabilities
        except ImportError as exc:
            raise VoicetuneError(
                f"Axolotl is not importable ({exc}): run setup/2_install_axolotl.sh"
            ) from exc
        from pydantic import ValidationError

        model: Any = AxolotlConfigWCapabilities
        problems: list[str] = []
        if cfg.get("plugins"):
            try:
                from axolotl.cli.config import prepare_plugins
                from axolotl.integrations.config import merge_input_args

                prepare_plugins(DictDefault(copy_cfg(cfg)))
                model, _ = merge_input_args()
            except Exception as exc:
                problems.append(
                    f"plugins {cfg['plugins']} could not be loaded ({_first_line(exc)}): check the names"
                )
        known = _field_names(model)
        problems += unknown_keys(cfg, known)
        if warnings is not None:
            warnings += empty_unknown_keys(cfg, known)
        try:
            validate_config(
                DictDefault(copy_cfg(cfg)), capabilities=capabilities, env_capabilities=env_capabilities
            )
        except ValidationError as exc:
            problems += [_pydantic_line(err) for err in exc.errors()]
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(f"Axolotl rejects the config: {_first_line(exc)}")
    return problems


def copy_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(cfg, default=str))


def _field_names(model: Any) -> set[str]:
    names = set(model.model_fields)
    for name, info in model.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        for choice in getattr(alias, "choices", ()) or ():
            if isinstance(choice, str):
                names.add(choice)
        if info.alias:
            names.add(info.alias)
        del name
    return names


def unknown_keys(cfg: dict[str, Any], known: set[str]) -> list[str]:
    """Keys Axolotl does not know and would drop silently, with a value: likely typos of a real key."""
    problems = []
    for key, value in cfg.items():
        if key in known or value is None:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        hint = f"did you mean '{close[0]}'? " if close else ""
        problems.append(f"unknown key '{key}': Axolotl 0.19 would ignore it silently: {hint}fix or remove it")
    return problems


def empty_unknown_keys(cfg: dict[str, Any], known: set[str]) -> list[str]:
    """Unknown keys left empty (`debug:` in Axolotl's own examples): Axolotl ignores them, and so
    would a typo's null, so they are harmless either way; one warning names them all."""
    empty = [key for key, value in cfg.items() if value is None and key not in known]
    if not empty:
        return []
    return [f"{len(empty)} key(s) Axolotl 0.19 does not know, left empty, are ignored: {', '.join(empty)}"]


def _pydantic_line(err: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in err.get("loc", ()) if part != "__root__")
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if loc:
        shown = err.get("input")
        got = f" (got {shown!r})" if not isinstance(shown, dict | list) else ""
        return f"key '{loc}': {msg}{got}: fix the value"
    return f"Axolotl rejects the config: {msg}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:240]


# ------------------------------------------------------------------------------------------ dataset


def read_jsonl(path: Path, data_format: str) -> tuple[list[Any], list[str]]:
    """The examples of one split (messages lists, or texts) and the problems found, each one line."""
    examples: list[Any] = []
    problems: list[str] = []
    key = "text" if data_format == "completion" else "messages"
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                problems.append(
                    f"{path} line {number} is not valid JSON ({exc.msg}): re-run {PREPARE_SCRIPT}"
                )
                break
            value = row.get(key) if isinstance(row, dict) else None
            if data_format == "dpo" and isinstance(value, list):
                # a preference pair: its prompt turns + the longer answer (what must fit sequence_len)
                answers = [a for a in (row.get("chosen"), row.get("rejected")) if isinstance(a, dict)]
                value = [*value, *sorted(answers, key=lambda a: len(str(a.get("content"))))[-1:]]
            if data_format == "completion":
                ok = isinstance(value, str) and bool(value.strip())
            else:
                ok = (
                    isinstance(value, list)
                    and bool(value)
                    and all(
                        isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
                        for m in value
                    )
                    and any(m.get("role") == "assistant" for m in value)
                )
            if not ok:
                shape = (
                    '{"text": "..."}'
                    if data_format == "completion"
                    else '{"messages": [{"role": "user"|"assistant"|"system", "content": "..."}, ...]}'
                )
                problems.append(
                    f"{path} line {number} is not {shape} with an assistant turn: re-run {PREPARE_SCRIPT}"
                )
                break
            examples.append(value)
    return examples, problems


def check_data(
    data_dir: Path, data_format: str, tokenizer_dir: Path, sequence_len: int
) -> tuple[DataStats, list[str], list[str]]:
    """(stats, errors, warnings) for train.jsonl and val.jsonl, with token counts from the real tokenizer."""
    stats = DataStats(sequence_len=sequence_len)
    errors: list[str] = []
    warnings: list[str] = []
    splits: dict[str, list[Any]] = {}
    for split in ("train", "val"):
        path = data_dir / f"{split}.jsonl"
        if not path.is_file():
            if split == "train":
                errors.append(f"{path} is missing: re-run {PREPARE_SCRIPT}")
            splits[split] = []
            continue
        examples, problems = read_jsonl(path, data_format)
        errors += problems
        splits[split] = examples
    if errors:
        return stats, errors, warnings
    if not splits["train"]:
        return (
            stats,
            [
                f"{data_dir / 'train.jsonl'} has no examples: add writing to data/raw/ and "
                f"re-run {PREPARE_SCRIPT}"
            ],
            warnings,
        )

    lengths = _token_lengths(tokenizer_dir, splits, data_format, errors)
    if errors:
        return stats, errors, warnings
    train_len, val_len = lengths["train"], lengths["val"]
    stats.train_examples, stats.val_examples = len(train_len), len(val_len)
    stats.train_tokens = sum(n for n in train_len if n <= sequence_len)
    stats.val_tokens = sum(n for n in val_len if n <= sequence_len)
    stats.longest = max(train_len + val_len)
    stats.over_train = sum(n > sequence_len for n in train_len)
    stats.over_val = sum(n > sequence_len for n in val_len)
    if stats.over_train:
        share = stats.over_train / len(train_len)
        line = (
            f"{stats.over_train} of {len(train_len)} training examples ({share:.1%}) are longer than "
            f"sequence_len {sequence_len} tokens after the chat template (longest {max(train_len)}) and "
            f"Axolotl would drop them silently: raise --sequence-len to {_round_up(max(train_len))} or "
            f"re-run {PREPARE_SCRIPT} with a smaller chunk size"
        )
        (errors if share >= DROP_ERROR_SHARE else warnings).append(line)
    if stats.over_val:
        warnings.append(
            f"{stats.over_val} of {len(val_len)} validation examples are longer than sequence_len "
            f"{sequence_len}: evaluation will skip them"
        )
    return stats, errors, warnings


def _round_up(n: int) -> int:
    step = 64
    return -(-n // step) * step


def _token_lengths(
    tokenizer_dir: Path, splits: dict[str, list[Any]], data_format: str, errors: list[str]
) -> dict[str, list[int]]:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with _quiet_logs():
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        except (OSError, ValueError) as exc:
            errors.append(
                f"cannot load the tokenizer of {tokenizer_dir} ({_first_line(exc)}): is it a model folder?"
            )
            return {}
    if data_format in ("chat_template", "dpo") and not tokenizer.chat_template:
        errors.append(
            f"{tokenizer_dir} has no chat template, which chat data needs: use a model with one "
            f"(tokenizer_config.json chat_template / chat_template.jinja), or prepare completion data"
        )
        return {}
    lengths: dict[str, list[int]] = {}
    total = sum(len(v) for v in splits.values())
    counted = iter(progress(range(total), desc="preflight: counting tokens", total=total, unit="ex"))
    for split, examples in splits.items():
        out = []
        for example in examples:
            next(counted, None)
            if data_format == "completion":
                out.append(len(tokenizer(example)["input_ids"]) + 1)  # + EOS
            else:
                ids = tokenizer.apply_chat_template(example, tokenize=True)
                ids = ids["input_ids"] if hasattr(ids, "keys") else ids
                out.append(len(ids))
        lengths[split] = out
    for _ in counted:
        pass
    return lengths


# ------------------------------------------------------------------------------------- disk & VRAM


def disk_need_bytes(cfg: dict[str, Any], shape: vram.ModelShape | None, data_bytes: int) -> int:
    """Checkpoints (adapter + optimizer state) kept at once, the final adapter, the tokenised data."""
    plan = vram.plan_from_axolotl(cfg)
    targets = (
        tuple(t for t in plan.lora_target_modules if t in vram.LLAMA_PROJECTIONS) or vram.LLAMA_PROJECTIONS
    )
    lora = vram.lora_param_count(shape, plan.lora_r, targets) if shape else 50_000_000
    state, _ = vram.optimizer_bytes_per_param(plan.optimizer)
    per_checkpoint = lora * (4 + state) + 32 * 2**20  # weights fp32 + optimizer + tokenizer/state files
    kept = int(cfg.get("save_total_limit") or 4) + 1  # + the best one, when early stopping keeps it
    return kept * per_checkpoint + lora * 4 + 3 * data_bytes + 256 * 2**20


def check_disk(run_dir: Path, need: int) -> list[str]:
    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        return [
            f"only {free / GIB:.1f} GiB free on the disk of {probe}, training needs about "
            f"{need / GIB:.1f} GiB for checkpoints: free some space, or lower save_total_limit "
            f"(--set save_total_limit=1)"
        ]
    return []


def check_vram(
    cfg: dict[str, Any], shape: vram.ModelShape, gpu: GpuInfo
) -> tuple[vram.Estimate, list[str], list[str]]:
    """(estimate, problems, warnings): a problem when even the bare peak does not fit, a warning when
    it fits only without the allocator's slack."""
    est = vram.estimate(shape, vram.plan_from_axolotl(cfg))
    free = gpu.free_bytes / GIB
    lower = (
        f"lower --micro-batch (now {cfg.get('micro_batch_size')}) or --sequence-len (now "
        f"{cfg.get('sequence_len')})"
    )
    if est.minimum > gpu.free_bytes:
        return (
            est,
            [
                f"estimated {est.minimum / GIB:.1f} GiB of GPU memory needed at least (peak "
                f"{est.highest_peak / GIB:.1f} GiB + CUDA context) but {gpu.name} has "
                f"{free:.1f} GiB free: use --profile auto, or {lower}"
            ],
            [],
        )
    if est.required > gpu.free_bytes:
        return (
            est,
            [],
            [
                f"tight: estimated {est.minimum / GIB:.1f} GiB needed at least, {est.required / GIB:.1f} GiB "
                f"with the allocator's slack, and {gpu.name} has {free:.1f} GiB free: it may run out of "
                f"memory; close other GPU programs or {lower}"
            ],
        )
    return est, [], []


# ------------------------------------------------------------------------------------------- driver


@dataclass
class Context:
    yaml_path: Path
    run_dir: Path
    data_dir: Path
    data_format: str
    base_model: Path
    gpu: GpuInfo | None
    gpus: int = 1
    dry_run: bool = False


def run_preflight(cfg: dict[str, Any], ctx: Context) -> Report:
    """Run every check; print one line per finding; raise one VoicetuneError if any check failed."""
    started = time.monotonic()
    report = Report()
    report.errors += known_mistakes(cfg)
    hardware = hardware_problems(cfg, ctx.gpu, ctx.gpus)
    if ctx.dry_run:
        report.warnings += [f"on this machine: {line}" for line in hardware]
    else:
        report.errors += hardware
    if not report.errors:
        say("preflight: validating with Axolotl's config schema ...")
        report.errors += schema_problems(cfg, *capabilities_for(ctx.gpu, ctx.gpus), report.warnings)
    if not report.errors:
        data, errors, warnings = check_data(
            ctx.data_dir, ctx.data_format, ctx.base_model, int(cfg["sequence_len"])
        )
        report.data = data
        report.errors += errors
        report.warnings += warnings
        if not errors:
            report.info.append(data.line())
            report.warnings += eval_size_warnings(cfg, data)
    shape = _shape_or_none(ctx.base_model)
    data_bytes = sum(p.stat().st_size for p in ctx.data_dir.glob("*.jsonl"))
    report.errors += check_disk(ctx.run_dir, disk_need_bytes(cfg, shape, data_bytes))
    if (
        shape is not None
        and ctx.gpu is not None
        and ctx.gpu.torch_cuda
        and cfg.get("adapter") in ("lora", "qlora")
    ):
        est, problems, tight = check_vram(cfg, shape, ctx.gpu)
        report.estimate = est
        report.info.append(f"VRAM estimate on {ctx.gpu.describe()}:")
        report.info += [f"  {line}" for line in est.lines()]
        (report.warnings if ctx.dry_run else report.errors).extend(problems)
        report.warnings.extend(tight)
    report.seconds = time.monotonic() - started
    for line in report.info:
        say(f"preflight: {line}")
    for line in report.warnings:
        say(f"preflight: warning: {line}")
    for line in report.errors:
        print(f"preflight: error: {line}", file=sys.stderr, flush=True)
    if report.errors:
        raise VoicetuneError(
            f"preflight found {len(report.errors)} problem(s) with {ctx.yaml_path} (listed above): "
            f"fix them and run again"
        )
    say(f"preflight: passed in {report.seconds:.0f} s")
    return report


def eval_size_warnings(cfg: dict[str, Any], data: DataStats) -> list[str]:
    """With sample packing, Axolotl drops a last eval batch that is not full: a val split smaller than
    one batch (micro_batch_size rows of sequence_len tokens) evaluates nothing, silently."""
    if not cfg.get("test_datasets") or not cfg.get("sample_packing") or not data.val_examples:
        return []
    batch_tokens = int(cfg.get("micro_batch_size") or 1) * int(cfg["sequence_len"])
    if data.val_tokens < 1.2 * batch_tokens:
        return [
            f"the val split ({data.val_tokens:,} tokens) may not fill one packed eval batch "
            f"({batch_tokens:,} tokens): Axolotl would then report no eval loss; add validation text "
            f"or lower --micro-batch"
        ]
    return []


def _shape_or_none(base_model: Path) -> vram.ModelShape | None:
    try:
        return vram.ModelShape.from_model_dir(base_model)
    except (OSError, ValueError):
        return None
