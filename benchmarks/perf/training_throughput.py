#!/usr/bin/env python3
"""Training throughput on one GPU: the plain QLoRA a user would write, Axolotl's defaults, and
voicetune's profile through Axolotl — same model shape, data, sequence length, optimizer steps and
tokens.

Arms (each in a fresh process, so memory peaks and CUDA state never leak from one to the next):
  a        transformers + PEFT + bitsandbytes QLoRA with the HF Trainer (benchmarks/perf/plain_qlora.py)
  b        Axolotl with only the keys a QLoRA run needs (benchmarks/perf/configs/arm-b-axolotl-defaults.yaml)
  c        the profile (configs/axolotl/<profile>.yaml) + benchmarks/perf/configs/arm-c-voicetune.yaml,
           micro batch from voicetune.train.vram's estimator
  c:NAME   arm (c) with benchmarks/perf/configs/variants/NAME.yaml on top (8gb, offload, compile, ...)

Models: `8b` is a randomly initialised Llama-3.1-8B-shaped model (built on the GPU, saved once to
--workdir, reused by every arm); `smol` is the real SmolLM2-135M demo base (models/base) when it is
there, else a random model of its shape (the results say which).

Data: the bundled demo author (data/demo/author), licence text cut, tokenised into one stream and
cut into windows of exactly --seq-len tokens. Every arm trains on the same windows in the same order
(pre-tokenised JSONL, sequential sampling), so token counts are equal by construction; the last
--eval-seqs windows are held out and scored after training by the same code for every arm.

Measured for every arm by one shared TrainerCallback: time per optimizer step after a CUDA sync
(the first --warmup-steps are not timed), tokens and trainable tokens of each step (counted from
the batches the model actually received), peak allocated/reserved memory (torch allocator, process
and training-only), peak `nvidia-smi` memory of the process, the training loss of every step and the
held-out loss at the end. MFU uses the card's dense bf16 peak and two FLOP conventions (see
voicetune/throughput.py): 6N as the issue asks, and the more honest 4N + 6N_lora for QLoRA.

Results: <out-dir>/throughput-<gpu>.json and .md (rewritten after every arm, so a run cut short
still leaves its figures), worker logs under <out-dir>/throughput-logs/.

  python benchmarks/perf/training_throughput.py --dry-run                    # the plan, no GPU needed
  python benchmarks/perf/training_throughput.py --models 8b --arms a,b,c     # on the GPU machine
  benchmarks/perf/gpu_throughput.sh                                            # the recipe for the lent GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import throughput as tp  # noqa: E402
import yaml  # noqa: E402

from voicetune.core.errors import VoicetuneError  # noqa: E402
from voicetune.core.manifest import library_versions, utc_now, write_json_atomic, write_text_atomic  # noqa: E402
from voicetune.core.privacy import apply_private_env  # noqa: E402
from voicetune.core.progress import header, progress, say  # noqa: E402
from voicetune.train import vram  # noqa: E402

BENCH_CONFIGS = REPO / "benchmarks" / "perf" / "configs"
ARM_B_YAML = BENCH_CONFIGS / "arm-b-axolotl-defaults.yaml"
ARM_C_YAML = BENCH_CONFIGS / "arm-c-voicetune.yaml"
VARIANTS_DIR = BENCH_CONFIGS / "variants"
DEMO_AUTHOR = REPO / "data" / "demo" / "author"
BASE_MODEL = REPO / "models" / "base"
DEFAULT_WORKDIR = Path("/tmp/voicetune-throughput")
DEFAULT_OUT = REPO / "benchmarks" / "results"
ASSUMED_GPU = ("NVIDIA H100 80GB HBM3", 81559)  # what --dry-run plans for when no GPU is visible

PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "axolotl",
    "liger_kernel",
    "trl",
    "datasets",
    "triton",
)
MIN_ARM_SECONDS = 60  # do not start an arm with less time than this left before --deadline-s
# `--device cpu` checks the whole pipeline (workers, Axolotl plugin, probe, results) without a GPU:
# what needs CUDA (bitsandbytes 4-bit, bf16 autocast, Triton kernels, Liger) is switched off. Its
# figures measure nothing; it exists so CI and a CPU box catch plumbing bugs before GPU time is spent.
CPU_SMOKE: dict[str, Any] = {
    "adapter": "lora",
    "load_in_4bit": False,
    "bnb_config_kwargs": None,
    "bf16": False,
    "fp16": False,
    "tf32": False,
    "optimizer": "adamw_torch",
    "lora_mlp_kernel": False,
    "lora_qkv_kernel": False,
    "lora_o_kernel": False,
    "lora_embedding_kernel": False,
    "plugins": None,
    "liger_rope": None,
    "liger_rms_norm": None,
    "liger_glu_activation": None,
    "liger_fused_linear_cross_entropy": None,
    "activation_offloading": None,
    "torch_compile": None,
    "dataloader_pin_memory": False,
}


# --- settings and plan (pure: no torch, no GPU) --------------------------------------------------


@dataclass(frozen=True)
class Settings:
    steps: int = 20
    warmup_steps: int = 3
    seq_len: int = 2048
    batch_seqs: int = 4  # sequences per optimizer step, every arm
    eval_seqs: int = 4
    learning_rate: float = 2e-4
    seed: int = 42
    profile_steps: int = 0  # extra steps after the timed ones, run under torch.profiler
    device: str = "cuda"  # "cpu": the plumbing smoke run (see CPU_SMOKE), nothing worth timing

    @property
    def tokens_per_step(self) -> int:
        return self.batch_seqs * self.seq_len

    @property
    def train_seqs(self) -> int:
        # two spare steps of windows: Axolotl's packing sampler may estimate one batch short, and
        # the last step must not wrap around to the first windows
        return (self.steps + self.profile_steps + 2) * self.batch_seqs


@dataclass
class RunSpec:
    model: str  # '8b' | 'smol'
    label: str  # 'a', 'b', 'c', 'c:8gb', ...
    arm: str  # 'a' | 'b' | 'c'
    variant: str | None
    micro_batch: int
    grad_accum: int
    axolotl: dict[str, Any] | None  # the exact Axolotl config (b, c)
    plain: dict[str, Any] | None  # plain_qlora.PlainSettings (a)
    estimator_gib: float | None
    estimator_note: str
    estimator_load_gib: float | None = None
    profile: str | None = None
    notes: list[str] = field(default_factory=list)
    allocator_cap_gib: float | None = None  # torch's caching allocator capped (an 8 GB card imitated)
    alloc_conf: str | None = None  # PYTORCH_ALLOC_CONF for the worker (e.g. expandable_segments:True)
    twin: str | None = None  # the label of the same run without the cap: losses compared step by step
    card_gib: float | None = None  # the card imitated: nvidia-smi must stay within it

    @property
    def slug(self) -> str:
        return f"{self.model}-{self.label.replace(':', '-')}"


@dataclass(frozen=True)
class ModelPlan:
    key: str
    shape: tp.ModelShape
    model_dir: Path
    source: str  # what the model is, for the report
    build: bool  # random init needed (not yet on disk)
    config: dict[str, Any]  # config.json-like mapping (for the estimator)


def parse_arms(text: str) -> list[str]:
    arms = [a.strip() for a in text.split(",") if a.strip()]
    for arm in arms:
        base, _, variant = arm.partition(":")
        if base not in ("a", "b", "c") or (variant and base != "c"):
            raise VoicetuneError(f"unknown arm {arm!r}: use a, b, c or c:<variant> (e.g. --arms a,b,c,c:8gb)")
        if variant and not (VARIANTS_DIR / f"{variant}.yaml").is_file():
            known = ", ".join(sorted(p.stem for p in VARIANTS_DIR.glob("*.yaml")))
            raise VoicetuneError(
                f"no variant file {VARIANTS_DIR / (variant + '.yaml')}: write it, or pick one of: {known}"
            )
    if not arms:
        raise VoicetuneError("--arms is empty: give e.g. --arms a,b,c")
    return arms


def parse_models(text: str) -> list[str]:
    models = [m.strip() for m in text.split(",") if m.strip()]
    for model in models:
        if model not in tp.SHAPES:
            raise VoicetuneError(f"unknown model {model!r}: use {', '.join(tp.SHAPES)}")
    return models


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """--set key=value for arm (c), parsed exactly as `voicetune train --set` parses it (YAML values,
    dotted keys into mappings, null removes a key)."""
    from voicetune.train import axolotl_config

    return axolotl_config.parse_set(pairs)


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise VoicetuneError(f"cannot read {path} ({exc}): fix or restore the file") from exc
    if not isinstance(data, dict):
        raise VoicetuneError(f"{path} must be a YAML mapping of Axolotl keys")
    return data


def overlay(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys of `top` replace those of `base`; a None value removes the key."""
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_profile(name: str, total_mib: int) -> Path:
    """A profile name (or 'auto': the one voicetune picks for this card's memory) -> its YAML."""
    from voicetune.train import axolotl_config

    if name == "auto":
        name = axolotl_config.profile_for_gpu(total_mib / 1024)
    return axolotl_config.profile_path(name)


def bench_keys(settings: Settings, model_dir: Path, packing: bool) -> dict[str, Any]:
    """What the benchmark sets on top of `voicetune train`'s rendering, for every Axolotl arm: the
    same order, schedule and seed as arm (a), no checkpoints, no TensorBoard (None removes a key)."""
    keys: dict[str, Any] = {
        "tokenizer_config": str(model_dir),
        "val_set_size": 0,
        "num_epochs": 1,
        "lr_scheduler": "cosine",
        "warmup_steps": 0,
        "warmup_ratio": None,
        "weight_decay": 0.0,
        "max_grad_norm": 1.0,
        "seed": settings.seed,
        "logging_steps": 1,
        "save_strategy": "no",
        "save_steps": None,
        "saves_per_epoch": None,
        "save_total_limit": None,
        "use_tensorboard": False,
        # the same windows in the same order as arm (a)
        "shuffle_merged_datasets": False,
        "curriculum_sampling": True,
        "dataset_num_proc": 1,
    }
    if packing:
        keys["sample_packing_sequentially"] = True
    return keys


def render_arm(
    recipe: dict[str, Any],
    settings: Settings,
    model: ModelPlan,
    workdir: Path,
    label: str,
    micro_batch: int,
    sets: dict[str, Any],
) -> dict[str, Any]:
    """The Axolotl config exactly as `voicetune train` renders it (voicetune.train.axolotl_config.render:
    recipe + run keys + flags + --set), then the benchmark's keys. The data are pre-tokenised rows
    (input_ids, attention_mask, labels), which Axolotl uses as they are, whatever the `type`."""
    from voicetune.train import axolotl_config

    run = axolotl_config.RunSpec(
        run_name=f"throughput-{model.key}-{label.replace(':', '-')}",
        run_dir=workdir / "runs" / f"{model.key}-{label.replace(':', '-')}",
        base_model=model.model_dir,
        data_dir=workdir / "data" / model.key,
        data_format="completion",
        has_val=False,
        max_steps=settings.steps + settings.profile_steps,
        sequence_len=settings.seq_len,
        micro_batch=micro_batch,
        grad_accum=settings.batch_seqs // micro_batch,
        lr=settings.learning_rate,
        wandb="off",
        overrides=sets,
    )
    cfg = axolotl_config.render(recipe, run)
    cfg = axolotl_config.apply_overrides(
        cfg, bench_keys(settings, model.model_dir, bool(cfg.get("sample_packing")))
    )
    if settings.device == "cpu":
        cfg = overlay(cfg, CPU_SMOKE)
    return cfg


def estimator_gib(axolotl_like: dict[str, Any], model_config: dict[str, Any]) -> tuple[float | None, str]:
    """voicetune.train.vram's peak-allocated prediction for a config, or (None, why not)."""
    try:
        shape = vram.ModelShape.from_config(model_config)
        est = vram.estimate(shape, vram.plan_from_axolotl(axolotl_like))
        return round(est.peak_allocated / tp.GIB, 2), "voicetune.train.vram.estimate"
    except Exception as exc:  # the estimator belongs to another module; never let it stop a run
        return None, f"estimator unavailable: {type(exc).__name__}: {exc}"


def estimator_load_gib(axolotl_like: dict[str, Any], model_config: dict[str, Any]) -> float | None:
    """voicetune.train.vram's loading-peak prediction for a config (None when it cannot say)."""
    try:
        shape = vram.ModelShape.from_config(model_config)
        return round(vram.load_peak_bytes(shape, vram.plan_from_axolotl(axolotl_like)) / tp.GIB, 2)
    except Exception:  # the estimator belongs to another module; never let it stop a run
        return None


def choose_micro_batch(
    cfg: dict[str, Any],
    model_config: dict[str, Any],
    settings: Settings,
    free_mib: int,
    budget_gib: float | None,
) -> tuple[int, str]:
    """Largest micro batch (dividing the sequences per step) the estimator fits; 1 if none does."""
    candidates = [
        m for m in (1, 2, 4, 8, 16, 32) if m <= settings.batch_seqs and settings.batch_seqs % m == 0
    ]
    try:
        shape = vram.ModelShape.from_config(model_config)
        if budget_gib is not None:
            best = 1
            for m in candidates:
                plan = vram.plan_from_axolotl(
                    {**cfg, "micro_batch_size": m, "sequence_len": settings.seq_len}
                )
                if vram.estimate(shape, plan).peak_allocated <= budget_gib * tp.GIB:
                    best = m
            return best, f"largest micro batch predicted under {budget_gib} GiB peak allocated"
        plan = vram.plan_from_axolotl({**cfg, "micro_batch_size": 1, "sequence_len": settings.seq_len})
        choice = vram.choose_batch_and_length(
            shape,
            plan,
            free_bytes=free_mib * tp.MIB,
            min_sequence_len=settings.seq_len,
            lengths=(settings.seq_len,),
            batches=tuple(candidates),
        )
        if choice is None:
            return 1, "estimator: nothing fits this card; micro batch 1"
        return choice.micro_batch_size, f"estimator: {choice.reason}"
    except Exception as exc:
        fallback = int(cfg.get("micro_batch_size") or 1)
        fallback = max(m for m in candidates if m <= fallback) if fallback >= 1 else 1
        return fallback, f"estimator unavailable ({type(exc).__name__}: {exc}); profile's micro batch"


def model_plan(key: str, workdir: Path) -> ModelPlan:
    shape = tp.SHAPES[key]
    if key == "smol" and (BASE_MODEL / "config.json").is_file() and any(BASE_MODEL.glob("*.safetensors")):
        config = json.loads((BASE_MODEL / "config.json").read_text(encoding="utf-8"))
        return ModelPlan(key, shape, BASE_MODEL, "real SmolLM2-135M-Instruct (models/base)", False, config)
    model_dir = workdir / "models" / key
    built = (model_dir / "bench-model.json").is_file()
    source = f"random init in bf16 (no download), saved once to {model_dir} and reused by every arm"
    if key == "smol":
        source += " (models/base was not on this machine)"
    return ModelPlan(key, shape, model_dir, source, not built, shape.llama_config_kwargs())


def plain_equivalent(settings: Settings, plain: dict[str, Any]) -> dict[str, Any]:
    """Arm (a) described in Axolotl keys, for the estimator."""
    return {
        "adapter": "qlora",
        "load_in_4bit": True,
        "bf16": True,
        "lora_r": plain["lora_r"],
        "lora_dropout": plain["lora_dropout"],
        "lora_target_modules": plain["lora_targets"],
        "optimizer": plain["optimizer"],
        "gradient_checkpointing": True,
        "attn_implementation": plain["attn_implementation"],
        "micro_batch_size": plain["micro_batch_size"],
        "gradient_accumulation_steps": plain.get("gradient_accumulation_steps", 1),
        "sequence_len": settings.seq_len,
        # not an Axolotl key: tells the estimator that prepare_model_for_kbit_training upcasts the
        # frozen embeddings, LM head and norms to fp32 (Axolotl does not)
        "upcast_frozen_fp32": True,
        # plain PEFT: a dropout copy per adapted module, no fused LoRA kernels
        **{key: False for key in vram.LORA_KERNEL_KEYS},
    }


def build_runs(
    arms: list[str],
    model: ModelPlan,
    settings: Settings,
    workdir: Path,
    gpu_mem_mib: int,
    profile: str,
    sets: dict[str, Any],
) -> list[RunSpec]:
    from plain_qlora import PlainSettings

    runs: list[RunSpec] = []
    for label in arms:
        arm, _, variant = label.partition(":")
        if arm == "a":
            plain = PlainSettings(
                micro_batch_size=1,
                gradient_accumulation_steps=settings.batch_seqs,
                max_steps=settings.steps + settings.profile_steps,
                learning_rate=settings.learning_rate,
                seed=settings.seed,
                **(
                    {"load_in_4bit": False, "bf16": False, "optimizer": "adamw_torch"}
                    if settings.device == "cpu"
                    else {}
                ),
            ).as_dict()
            est, note = estimator_gib(plain_equivalent(settings, plain), model.config)
            load = estimator_load_gib(plain_equivalent(settings, plain), model.config)
            runs.append(
                RunSpec(model.key, label, "a", None, 1, settings.batch_seqs, None, plain, est, note, load)
            )
            continue
        if arm == "b":
            cfg = render_arm(load_yaml(ARM_B_YAML), settings, model, workdir, label, 1, {})
            est, note = estimator_gib(cfg, model.config)
            load = estimator_load_gib(cfg, model.config)
            runs.append(
                RunSpec(model.key, label, "b", None, 1, settings.batch_seqs, cfg, None, est, note, load)
            )
            continue
        top = load_yaml(ARM_C_YAML)
        bench = dict(top.pop("_bench", None) or {})
        if variant:
            extra = load_yaml(VARIANTS_DIR / f"{variant}.yaml")
            bench.update(extra.pop("_bench", None) or {})
            top = overlay(top, extra)
        profile_path = resolve_profile(str(bench.get("profile") or profile), gpu_mem_mib)
        recipe = overlay(load_yaml(profile_path), top)
        budget = bench.get("vram_budget_gib")
        wanted = sets.get("micro_batch_size", bench.get("micro_batch", "estimator"))
        if wanted == "profile":
            wanted = int(recipe.get("micro_batch_size") or 1)
        if wanted == "estimator":
            micro, why = choose_micro_batch(
                overlay(recipe, sets),
                model.config,
                settings,
                gpu_mem_mib,
                float(budget) if budget is not None else None,
            )
        else:
            micro, why = int(wanted), "set by --set micro_batch_size, the variant or the profile"
        if settings.batch_seqs % micro:
            raise VoicetuneError(
                f"micro batch {micro} does not divide --batch-seqs {settings.batch_seqs}: change one of them"
            )
        overrides = {k: v for k, v in sets.items() if k != "micro_batch_size"}
        cfg = render_arm(recipe, settings, model, workdir, label, micro, overrides)
        est, note = estimator_gib(cfg, model.config)
        load = estimator_load_gib(cfg, model.config)
        spec = RunSpec(
            model.key,
            label,
            "c",
            variant or None,
            micro,
            settings.batch_seqs // micro,
            cfg,
            None,
            est,
            note,
            load,
        )
        spec.profile = (
            str(profile_path.relative_to(REPO)) if profile_path.is_relative_to(REPO) else str(profile_path)
        )
        spec.notes.append(f"micro batch {micro}: {why}")
        cap = bench.get("allocator_cap_gib")
        spec.allocator_cap_gib = float(cap) if cap is not None else None
        spec.alloc_conf = str(bench["alloc_conf"]) if bench.get("alloc_conf") else None
        spec.twin = f"c:{bench['twin']}" if bench.get("twin") else None
        spec.card_gib = float(bench["card_gib"]) if bench.get("card_gib") else None
        runs.append(spec)
    return runs


def model_summary(model: ModelPlan, settings: Settings, peak_tflops: float | None) -> dict[str, Any]:
    counts = tp.param_counts(model.shape)
    flops = tp.flops_per_token(counts)
    real = model.model_dir == BASE_MODEL
    summary: dict[str, Any] = {
        "description": "SmolLM2-135M-Instruct (real weights)"
        if real
        else f"{model.shape.description}, random init",
        "source": model.source,
        "model_dir": str(model.model_dir),
        "shape": asdict(model.shape),
        "params": counts.as_dict(),
        "flops_per_token": flops,
        "attention_flops_per_token": tp.attention_flops_per_token(model.shape, settings.seq_len),
    }
    if peak_tflops:
        summary["tokens_per_s_for_40pct_mfu_6n"] = round(
            tp.tokens_per_s_for_mfu(0.4, flops["6n"], peak_tflops)
        )
    return summary


# --- GPU detection (nvidia-smi through voicetune.machine.gpu) ---------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    name: str
    memory_total_mib: int
    driver: str | None
    detected: bool
    peak_tflops: float | None
    peak_source: str


def detect_gpu(
    name_override: str | None,
    mem_override_gib: float | None,
    peak_override: float | None,
    cpu: bool = False,
) -> GpuInfo:
    if cpu:
        return GpuInfo("cpu smoke run", 0, None, False, None, "none: a CPU run measures no GPU")
    from voicetune.machine.gpu import read_machine

    readings = read_machine()
    detected = readings.has_gpu
    if detected:
        gpu = readings.gpus[0]
        name, mem, driver = gpu.name, gpu.memory_total_mib, readings.driver_version
    else:
        name, mem, driver = ASSUMED_GPU[0], ASSUMED_GPU[1], None
    name = name_override or name
    mem = int(mem_override_gib * 1024) if mem_override_gib else mem
    if peak_override:
        peak, source = peak_override, "--peak-tflops"
    else:
        found = tp.peak_bf16_tflops(name)
        peak, source = (
            (found[0], f"dense bf16 of {found[1]}, vendor datasheet") if found else (None, "unknown card")
        )
    return GpuInfo(name, mem, driver, detected and not name_override, peak, source)


# --- data -----------------------------------------------------------------------------------------


def demo_text() -> str:
    files = sorted(DEMO_AUTHOR.glob("*.txt"))
    if not files:
        raise VoicetuneError(f"no demo texts in {DEMO_AUTHOR}: restore data/demo/author from git")
    try:
        from voicetune.data.clean import strip_licence
    except ImportError:  # the cleaner is another step's module; raw text still measures speed

        def strip_licence(text: str) -> tuple[str, int]:
            return text, 0

    parts = []
    for path in files:
        text, _ = strip_licence(path.read_text(encoding="utf-8", errors="replace"))
        parts.append(text.strip())
    return "\n\n".join(parts)


def ensure_tokenizer(workdir: Path) -> tuple[Path, str]:
    """The demo base model's tokenizer when it is here; else a byte-level BPE trained on the demo text."""
    if (BASE_MODEL / "tokenizer.json").is_file():
        return BASE_MODEL, "SmolLM2 tokenizer from models/base"
    target = workdir / "tokenizer"
    if (target / "tokenizer.json").is_file():
        return target, "byte-level BPE (32k) trained on the demo author (models/base absent)"
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=32000,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(demo_text().split("\n\n"), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.save_pretrained(str(target))
    return target, "byte-level BPE (32k) trained on the demo author (models/base absent)"


def prepare_data(workdir: Path, model_key: str, tokenizer_dir: Path, settings: Settings) -> dict[str, Any]:
    """train.jsonl / eval.jsonl of pre-tokenised windows of exactly seq_len tokens."""
    from transformers import AutoTokenizer

    out = workdir / "data" / model_key
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    ids = tokenizer(demo_text(), add_special_tokens=False)["input_ids"]
    windows = tp.cut_sequences(ids, settings.seq_len)
    try:
        train, held_out, passes = tp.split_train_eval(windows, settings.train_seqs, settings.eval_seqs)
    except ValueError as exc:
        raise VoicetuneError(
            f"demo text too short for --seq-len {settings.seq_len}: {exc}; lower --seq-len"
        ) from exc
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("eval.jsonl", held_out)):
        lines = [json.dumps({"input_ids": r, "attention_mask": [1] * len(r), "labels": r}) for r in rows]
        write_text_atomic(out / name, "\n".join(lines) + "\n")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    return {
        "source": "data/demo/author/*.txt, licence text cut, one token stream cut into full windows",
        "tokenizer": str(tokenizer_dir),
        "stream_tokens": len(ids),
        "windows": len(windows),
        "train_sequences": len(train),
        "eval_sequences": len(held_out),
        "train_passes": passes,
        "pad_token_id": pad,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "dir": str(out),
    }


# --- orchestration --------------------------------------------------------------------------------


def results_paths(out_dir: Path, gpu: GpuInfo) -> tuple[Path, Path]:
    stem = f"throughput-{tp.gpu_slug(gpu.name)}"
    return out_dir / f"{stem}.json", out_dir / f"{stem}.md"


def derive(run: dict[str, Any], model: dict[str, Any], peak_tflops: float | None) -> None:
    """MFU, estimator error: computed from the measured figures in place."""
    flops = model.get("flops_per_token") or {}
    tps = run.get("tokens_per_s")
    if tps and peak_tflops:
        run["mfu_6n"] = round(tp.mfu(tps, flops["6n"], peak_tflops), 4)
        run["mfu_honest"] = round(tp.mfu(tps, flops["honest"], peak_tflops), 4)
    run["estimator_error"] = tp.estimator_error(run.get("estimator_gib"), run.get("peak_alloc_train_gib"))
    run["estimator_load_error"] = tp.estimator_error(
        run.get("estimator_load_gib"), run.get("load_peak_alloc_gib")
    )


LOSS_TWIN_TOLERANCE = 0.02  # max |loss difference| at any step between a capped run and its twin


def compare(results: dict[str, Any]) -> None:
    """Speed-ups against (a) and (b) and issue 23's targets for every (c) run: a throughput run
    (no allocator cap) aims at >= 50% MFU (6N) and >= 2.0x plain PEFT; a capped run (an 8 GB card
    imitated) at no out-of-memory, nvidia-smi within the card and the loss curve of its uncapped twin."""
    results["targets"] = {}
    for model_key in results.get("models", {}):
        runs = [r for r in results["runs"] if r["model"] == model_key]
        by_label = {r["label"]: r for r in runs}
        a = (by_label.get("a") or {}).get("tokens_per_s")
        b = (by_label.get("b") or {}).get("tokens_per_s")
        twins = {r.get("twin") for r in runs if r.get("twin")}
        checks: list[dict[str, Any]] = []
        for run in runs:
            run["speedup_vs_a"] = tp.ratio(run.get("tokens_per_s"), a)
            run["speedup_vs_b"] = tp.ratio(run.get("tokens_per_s"), b)
            twin = by_label.get(str(run.get("twin")))
            if twin is not None:
                run["loss_max_abs_diff_vs_twin"] = tp.max_loss_difference(run.get("steps"), twin.get("steps"))
                mine, theirs = run.get("loss_last_mean"), twin.get("loss_last_mean")
                run["loss_last_mean_diff_vs_twin"] = (
                    round(abs(mine - theirs), 4) if mine is not None and theirs is not None else None
                )
            if run["arm"] != "c":
                continue
            tag = run["label"]
            cap = run.get("allocator_cap_gib")
            if cap is not None:
                card = run.get("card_gib") or 8.0
                checks += [
                    _check(
                        f"{tag} (cap {cap} GiB) runs every step",
                        run.get("status") == "ok",
                        "no OOM",
                        bool,
                        "",
                    ),
                    _check(
                        f"{tag} nvidia-smi peak",
                        run.get("smi_peak_gib"),
                        f"<= {card} GiB",
                        lambda v, card=card: v <= card,
                        " GiB",
                    ),
                    _check(
                        f"{tag} loss vs uncapped {run.get('twin')}, every step",
                        run.get("loss_max_abs_diff_vs_twin"),
                        f"max |diff| <= {LOSS_TWIN_TOLERANCE}",
                        lambda v: v <= LOSS_TWIN_TOLERANCE,
                        "",
                    ),
                    _check(
                        f"{tag} loss vs uncapped {run.get('twin')}, mean of the last 3 steps",
                        run.get("loss_last_mean_diff_vs_twin"),
                        f"|diff| <= {LOSS_TWIN_TOLERANCE}",
                        lambda v: v <= LOSS_TWIN_TOLERANCE,
                        "",
                    ),
                ]
            elif run.get("status") == "ok" and tag not in twins:
                checks += [
                    _check(f"{tag} tokens/s vs (a)", run["speedup_vs_a"], ">= 2.0x", lambda v: v >= 2.0, "x"),
                    _check(f"{tag} tokens/s vs (b)", run["speedup_vs_b"], ">= 1.6x", lambda v: v >= 1.6, "x"),
                    _check(f"{tag} MFU (6N)", run.get("mfu_6n"), ">= 50%", lambda v: v >= 0.50, "%"),
                ]
            if run.get("status") == "ok" and run.get("estimator_error") is not None:
                checks.append(
                    _check(
                        f"{tag} estimator error",
                        run.get("estimator_error"),
                        "within 10%",
                        lambda v: abs(v) <= 0.10,
                        "%",
                    )
                )
        results["targets"][model_key] = checks


def _check(what: str, value: float | bool | None, target: str, ok: Any, unit: str) -> dict[str, Any]:
    if value is None:
        shown = None
    elif isinstance(value, bool):
        shown = "yes" if value else "no"
    elif unit == "%":
        shown = f"{100 * value:+.1f}%" if "error" in what else f"{100 * value:.1f}%"
    else:
        shown = f"{value:.2f}{unit}"
    return {
        "what": what,
        "measured": shown,
        "target": target,
        "met": None if value is None else bool(ok(value)),
    }


def merge_results(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """new's runs replace old's runs of the same model and label; everything else is kept."""
    merged = copy.deepcopy(old)
    keys = {(r["model"], r["label"]) for r in new.get("runs", [])}
    merged["runs"] = [r for r in old.get("runs", []) if (r["model"], r["label"]) not in keys] + new.get(
        "runs", []
    )
    merged.setdefault("models", {}).update(new.get("models", {}))
    merged["commands"] = list(
        dict.fromkeys([*old.get("commands", [old.get("command", "")]), new.get("command", "")])
    )
    merged["commands"] = [c for c in merged["commands"] if c]
    merged["command"] = " ; ".join(merged["commands"])
    for key in ("gpu", "versions", "settings", "created", "complete"):
        if key in new:
            merged[key] = new[key]
    merged["notes"] = list(dict.fromkeys([*old.get("notes", []), *new.get("notes", [])]))
    merged.setdefault("data", {}).update(new.get("data", {}))
    return merged


def write_results(results: dict[str, Any], json_path: Path, md_path: Path) -> None:
    compare(results)
    write_json_atomic(json_path, results)
    write_text_atomic(md_path, tp.render_markdown(results))


def conventions_notes(settings: Settings) -> list[str]:
    return [
        "tokens/s = non-padding tokens the model received per second over the timed steps (after "
        f"{settings.warmup_steps} warm-up steps), measured after a CUDA sync at every optimizer step; "
        "trainable tokens/s counts tokens with a label. The data are full windows, so both match "
        "except for packing's padding slots.",
        "MFU 6N: N = weights in matmuls (linear layers + output head; the input embedding is a lookup). "
        "MFU honest: (2+2)·N + 6·N_lora, since the frozen 4-bit base gets no weight gradients. Neither "
        "counts the recomputed forward of gradient checkpointing nor attention scores "
        "(attention_flops_per_token in the JSON).",
        "peak alloc train = torch.cuda.max_memory_allocated over the training steps; load = the same "
        "from the process start to the first step (4-bit quantisation, the embeddings' fp32 casts). "
        "Axolotl resets torch's peak counters when it logs memory; the worker folds the peak into "
        "its phase before every reset (results before 2026-12-02 lost the loading peak of arms b/c "
        "that way: their load column shows only what came after Axolotl's reset).",
        "seq len (cap GiB): an allocator cap means torch.cuda.set_per_process_memory_fraction held "
        "the worker's caching allocator to that many GiB from its start (an 8 GB card imitated on a "
        "bigger one); nvidia-smi is then the check that the whole process fits the card.",
        "nvidia-smi GiB = the process's used memory (or the whole GPU's used memory minus what it was "
        "before the process started, when the container hides pids), polled every 0.25 s during "
        "loading and training; it includes the CUDA context, the allocator's cache and paged optimizer "
        "states (CUDA unified memory, which the torch allocator does not count).",
        "estimator = voicetune.train.vram.estimate(...).peak_allocated for the arm's config, compared "
        "with the training-only peak allocated; load = voicetune.train.vram.load_peak_bytes, against "
        "the load peak.",
        "held-out loss = mean loss over the held-out windows after the last step, the same code "
        "for every arm.",
    ]


def run_benchmark(args: argparse.Namespace) -> int:
    started = time.monotonic()
    settings = Settings(
        steps=args.steps,
        warmup_steps=args.warmup_steps,
        seq_len=args.seq_len,
        batch_seqs=args.batch_seqs,
        eval_seqs=args.eval_seqs,
        learning_rate=args.learning_rate,
        profile_steps=2 if args.torch_profile else 0,
        device=args.device,
    )
    if settings.steps <= settings.warmup_steps:
        raise VoicetuneError(f"--steps {settings.steps} must exceed --warmup-steps {settings.warmup_steps}")
    arms = parse_arms(args.arms)
    models = parse_models(args.models)
    sets = parse_sets(args.set or [])
    gpu = detect_gpu(args.gpu_name, args.gpu_mem_gib, args.peak_tflops, cpu=settings.device == "cpu")
    workdir = Path(args.workdir)
    plans = {key: model_plan(key, workdir) for key in models}
    runs = {
        key: build_runs(arms, plan, settings, workdir, gpu.memory_total_mib, args.profile, sets)
        for key, plan in plans.items()
    }
    command = "python benchmarks/perf/training_throughput.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )

    if args.dry_run:
        print_plan(gpu, settings, plans, runs, command, workdir, Path(args.out_dir))
        return 0
    if not gpu.detected and settings.device != "cpu":
        raise VoicetuneError(
            "no NVIDIA GPU visible (nvidia-smi): this benchmark measures a GPU; see the plan with --dry-run"
        )

    apply_private_env()
    out_dir = Path(args.out_dir)
    json_path, md_path = results_paths(out_dir, gpu)
    logs = out_dir / "throughput-logs"
    logs.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "schema": 1,
        "command": command,
        "created": utc_now(),
        "complete": False,
        "gpu": {**asdict(gpu), "slug": tp.gpu_slug(gpu.name), "peak_bf16_tflops": gpu.peak_tflops},
        "versions": {},
        "settings": {**asdict(settings), "tokens_per_step": settings.tokens_per_step, "arms": arms},
        "models": {},
        "data": {},
        "runs": [],
        "notes": conventions_notes(settings),
    }
    if json_path.is_file() and not args.no_merge:
        results = merge_results(json.loads(json_path.read_text(encoding="utf-8")), results)

    tokenizer_dir, tokenizer_note = ensure_tokenizer(workdir)
    failures = 0
    for key, plan in plans.items():
        header(f"{key}: {plan.shape.description}; {plan.source}")
        data = prepare_data(workdir, key, tokenizer_dir, settings)
        data["tokenizer_note"] = tokenizer_note
        results["data"][key] = data
        if data["train_passes"] > 1:
            results["notes"].append(
                f"{key}: the demo text gives {data['windows']} windows; training cycles through them "
                f"{data['train_passes']} times (the same for every arm)."
            )
        summary = model_summary(plan, settings, gpu.peak_tflops)
        if plan.build:
            build = run_worker(
                {
                    "kind": "build",
                    "model": key,
                    "model_dir": str(plan.model_dir),
                    "tokenizer_dir": str(tokenizer_dir),
                    "seed": settings.seed,
                    "device": args.build_device or settings.device,
                },
                logs / f"build-{key}.log",
                timeout=max(60, deadline_left(args, started) - MIN_ARM_SECONDS),
                label=f"{key}: build random model",
                total=None,
            )
            summary["build"] = build
            if build.get("status") != "ok":
                results["models"][key] = summary
                results["notes"].append(f"{key}: building the random model failed: {build.get('error')}")
                write_results(results, json_path, md_path)
                failures += 1
                continue
        results["models"][key] = summary
        for spec in runs[key]:
            run = execute(spec, settings, data, plan, args, started, logs, workdir)
            derive(run, summary, gpu.peak_tflops)
            results["runs"] = [r for r in results["runs"] if (r["model"], r["label"]) != (key, spec.label)]
            results["runs"].append(run)
            if run.get("versions") and not results["versions"]:
                results["versions"] = run["versions"]
            failures += run.get("status") != "ok"
            write_results(results, json_path, md_path)
            say(f"    {line_for(run)}")
    results["complete"] = True
    results["wall_s"] = round(time.monotonic() - started, 1)
    write_results(results, json_path, md_path)
    say(f"\nwrote {json_path} and {md_path} ({results['wall_s']} s)")
    print(tp.render_markdown(results))
    return 1 if failures else 0


def deadline_left(args: argparse.Namespace, started: float) -> float:
    return args.deadline_s - (time.monotonic() - started)


def line_for(run: dict[str, Any]) -> str:
    if run.get("status") != "ok":
        return f"{run['label']}: {run.get('status')}: {run.get('error', '')}"
    return (
        f"{run['label']}: {run.get('tokens_per_s', 0):,.0f} tokens/s, peak {run.get('peak_alloc_gib')} GiB "
        f"allocated ({run.get('smi_peak_gib')} GiB nvidia-smi), loss {run.get('loss_last')}, "
        f"held-out {run.get('eval_loss')}"
    )


def execute(
    spec: RunSpec,
    settings: Settings,
    data: dict[str, Any],
    plan: ModelPlan,
    args: argparse.Namespace,
    started: float,
    logs: Path,
    workdir: Path,
) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": spec.model,
        "label": spec.label,
        "arm": spec.arm,
        "variant": spec.variant,
        "micro_batch": spec.micro_batch,
        "grad_accum": spec.grad_accum,
        "estimator_gib": spec.estimator_gib,
        "estimator_note": spec.estimator_note,
        "estimator_load_gib": spec.estimator_load_gib,
        "profile": spec.profile,
        "settings": asdict(settings),
        "sequence_len": settings.seq_len,
        "allocator_cap_gib": spec.allocator_cap_gib,
        "alloc_conf": spec.alloc_conf,
        "twin": spec.twin,
        "card_gib": spec.card_gib,
        "notes": spec.notes,
    }
    left = deadline_left(args, started)
    if left < MIN_ARM_SECONDS:
        return {
            **base,
            "status": "skipped",
            "error": f"only {left:.0f} s left of --deadline-s {args.deadline_s}",
        }
    run_dir = workdir / "runs" / spec.slug
    run_dir.mkdir(parents=True, exist_ok=True)
    worker: dict[str, Any] = {
        "kind": "train",
        "arm": spec.arm,
        "label": spec.label,
        "model_dir": str(plan.model_dir),
        "data_dir": data["dir"],
        "pad_token_id": data["pad_token_id"],
        "run_dir": str(run_dir),
        "steps": settings.steps,
        "profile_steps": settings.profile_steps,
        "torch_profile_dir": str(logs) if settings.profile_steps else None,
        "device": settings.device,
        "allocator_cap_gib": spec.allocator_cap_gib,
        "alloc_conf": spec.alloc_conf,
    }
    if spec.axolotl is not None:
        yaml_path = run_dir / "axolotl.yaml"
        write_text_atomic(yaml_path, yaml.safe_dump(spec.axolotl, sort_keys=False))
        worker["axolotl_yaml"] = str(yaml_path)
        base["axolotl_config"] = spec.axolotl
    if spec.plain is not None:
        worker["plain"] = spec.plain
        base["plain_settings"] = spec.plain
    timeout = min(args.arm_timeout_s, left - 10)
    outcome = run_worker(
        worker,
        logs / f"{spec.slug}.log",
        timeout=timeout,
        label=f"{spec.model} {spec.label}",
        total=settings.steps + settings.profile_steps,
    )
    run = {**base, **{k: v for k, v in outcome.items() if k != "records"}}
    records = [tp.StepRecord(**r) for r in outcome.get("records", [])]
    if records and not any(r.tokens for r in records):
        # the counting hook saw no forward (a compiled model can bypass module hooks): use the plan
        for record in records:
            record.tokens = record.trainable = record.slots = settings.tokens_per_step
        run["notes"] = [
            *run["notes"],
            "tokens not counted from the batches (hook bypassed); planned count used",
        ]
    run["steps"] = [asdict(r) for r in records]
    timed = records[: settings.steps]
    if len(timed) > settings.warmup_steps:
        summary = tp.summarize_steps(timed, settings.warmup_steps)
        run.update(
            tokens_per_s=summary.tokens_per_s,
            trainable_per_s=summary.trainable_per_s,
            step_s_median=summary.step_s_median,
            tokens_timed=summary.tokens_timed,
            tokens_total=summary.tokens_total,
            trainable_total=summary.trainable_total,
            slots_total=summary.slots_total,
            loss_first=summary.loss_first,
            loss_last=summary.loss_last,
            loss_last_mean=summary.loss_last_mean,
        )
        expected = settings.tokens_per_step * len(timed)
        if summary.tokens_total != expected:
            run["notes"] = [*run["notes"], f"tokens received {summary.tokens_total} vs {expected} planned"]
    if run.get("status") == "ok" and len(timed) < settings.steps:
        run["status"] = "failed"
        run["error"] = f"only {len(timed)} of {settings.steps} steps recorded"
    return run


def run_worker(
    spec: dict[str, Any], log_path: Path, timeout: float, label: str, total: int | None
) -> dict[str, Any]:
    """Run one worker in a fresh process (own session, so a timeout kills its whole tree)."""
    spec_path = log_path.with_suffix(".spec.json")
    out_path = log_path.with_suffix(".out.json")
    out_path.unlink(missing_ok=True)
    spec = {**spec, "out_json": str(out_path)}
    write_json_atomic(spec_path, spec)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    if spec.get("alloc_conf"):  # read by torch when CUDA starts: it must be in the environment
        env["PYTORCH_ALLOC_CONF"] = env["PYTORCH_CUDA_ALLOC_CONF"] = str(spec["alloc_conf"])
    started = time.monotonic()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        status = None
        for _ in progress(
            _watch(proc, out_path, timeout, started), desc=f"  {label}", total=total, unit="step"
        ):
            pass
        status = proc.poll()
        if status is None:  # timed out: the worker's whole process group goes
            _kill_group(proc)
    outcome: dict[str, Any] = {}
    if out_path.is_file():
        try:
            outcome = json.loads(out_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            outcome = {}
    outcome["wall_s"] = round(time.monotonic() - started, 1)
    outcome["log"] = str(log_path)
    if status is None:
        outcome["status"] = "timeout"
        outcome["error"] = f"killed after {timeout:.0f} s (--arm-timeout-s / --deadline-s)"
    elif status != 0 and outcome.get("status") in (None, "running", "ok"):
        outcome["status"] = "failed"
        outcome["error"] = outcome.get("error") or _last_error(log_path) or f"exit code {status}"
    outcome.setdefault("status", "failed")
    return outcome


def _watch(proc: subprocess.Popen[bytes], out_path: Path, timeout: float, started: float) -> Iterator[int]:
    """Yield once per new step the worker reports; stop when it exits or runs out of time."""
    seen = 0
    while proc.poll() is None and time.monotonic() - started < timeout:
        time.sleep(1.0)
        steps = _steps_in(out_path)
        while seen < steps:
            seen += 1
            yield seen
    for _ in range(seen, _steps_in(out_path)):
        yield 0


def _steps_in(out_path: Path) -> int:
    try:
        return len(json.loads(out_path.read_text(encoding="utf-8")).get("records", []))
    except (OSError, json.JSONDecodeError):
        return 0


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


def _last_error(log_path: Path) -> str | None:
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines[-200:]):
        text = line.strip()
        if text and ("Error" in text or "error" in text.split(":")[0].lower() or "Exception" in text):
            return text[:400]
    return lines[-1][:400] if lines else None


def print_plan(
    gpu: GpuInfo,
    settings: Settings,
    plans: dict[str, ModelPlan],
    runs: dict[str, list[RunSpec]],
    command: str,
    workdir: Path,
    out_dir: Path,
) -> None:
    json_path, md_path = results_paths(out_dir, gpu)
    seen = "detected" if gpu.detected else "assumed (no GPU visible)"
    say(
        f"GPU: {gpu.name}, {gpu.memory_total_mib / 1024:.1f} GiB, {seen}; bf16 peak "
        f"{gpu.peak_tflops} TFLOP/s ({gpu.peak_source})"
    )
    say(
        f"Settings: {settings.steps} optimizer steps per arm ({settings.warmup_steps} warm-up, not timed), "
        f"seq_len {settings.seq_len}, {settings.batch_seqs} sequences = {settings.tokens_per_step} tokens "
        f"per step, {settings.eval_seqs} held-out sequences"
        + (f", +{settings.profile_steps} profiled steps" if settings.profile_steps else "")
    )
    say(f"Work dir: {workdir}    results: {json_path} and {md_path}")
    for key, plan in plans.items():
        summary = model_summary(plan, settings, gpu.peak_tflops)
        counts, flops = summary["params"], summary["flops_per_token"]
        header(f"model {key}: {summary['description']}; {plan.source}")
        say(
            f"  params {counts['total']:,} (N matmul {counts['matmul']:,}, LoRA r64 {counts['lora']:,}); "
            f"FLOPs/token 6N {flops['6n']:,}, honest {flops['honest']:,}"
        )
        if "tokens_per_s_for_40pct_mfu_6n" in summary:
            say(f"  40% MFU (6N) on this card = {summary['tokens_per_s_for_40pct_mfu_6n']:,} tokens/s")
        for spec in runs[key]:
            say(
                f"  arm {spec.label}: {tp.ARM_TITLES[spec.arm]}; micro batch {spec.micro_batch} x GA "
                f"{spec.grad_accum}; estimator {spec.estimator_gib} GiB ({spec.estimator_note})"
            )
            for note in spec.notes:
                say(f"    {note}")
            if spec.profile:
                say(f"    profile {spec.profile}")
            if spec.axolotl is not None:
                say("    axolotl.yaml:")
                for line in yaml.safe_dump(spec.axolotl, sort_keys=False).splitlines():
                    say(f"      {line}")
            if spec.plain is not None:
                say(f"    plain settings: {json.dumps(spec.plain)}")
    say(f"\nCommand: {command}")


# --- workers (GPU machine; torch and friends imported here only) ----------------------------------


class SmiPoller:
    """Polls nvidia-smi in a thread for this process's peak memory (see tp.SmiPeak)."""

    def __init__(self, interval: float = 0.25) -> None:
        import shutil

        self.smi = shutil.which("nvidia-smi")
        self.peak = tp.SmiPeak()
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        if self.smi:
            gpus = tp.parse_smi_gpus(self._query(tp.SMI_GPU_ARGS) or "")
            self.peak.baseline_mib = gpus[0][0] if 0 in gpus else None

    def _query(self, query_args: tuple[str, ...]) -> str | None:
        try:
            return subprocess.run(
                [self.smi, *query_args], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak.update(os.getpid(), self._query(tp.SMI_APPS_ARGS), self._query(tp.SMI_GPU_ARGS))
            self._stop.wait(self.interval)

    def start(self) -> None:
        if self.smi:
            self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)
        return {
            "smi_peak_gib": self.peak.peak_gib,
            "smi_method": self.peak.method,
            "smi_samples": self.peak.samples,
        }


def worker_main(spec_path: Path) -> int:
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    out_path = Path(spec["out_json"])
    apply_private_env()
    try:
        result = worker_build(spec) if spec["kind"] == "build" else worker_train(spec, out_path)
    except BaseException as exc:
        import traceback

        traceback.print_exc()
        previous = json.loads(out_path.read_text(encoding="utf-8")) if out_path.is_file() else {}
        write_json_atomic(
            out_path, {**previous, "status": "failed", "error": f"{type(exc).__name__}: {exc}"[:600]}
        )
        return 1
    write_json_atomic(out_path, result)
    return 0


def worker_build(spec: dict[str, Any]) -> dict[str, Any]:
    """A random-init model of the shape, on the GPU (seconds) rather than the CPU, saved once."""
    import shutil

    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    shape = tp.SHAPES[spec["model"]]
    target = Path(spec["model_dir"])
    tokenizer = AutoTokenizer.from_pretrained(spec["tokenizer_dir"])
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else 1
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 2
    config = LlamaConfig(**shape.llama_config_kwargs(bos_token_id=bos, eos_token_id=eos))
    config.dtype = torch.bfloat16
    torch.manual_seed(int(spec.get("seed", 42)))
    device = torch.device(spec.get("device", "cuda"))
    t0 = time.perf_counter()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with device:
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    if device.type == "cuda":
        torch.cuda.synchronize()
    init_s = time.perf_counter() - t0
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    t1 = time.perf_counter()
    model.save_pretrained(str(tmp), max_shard_size="4GB")
    tokenizer.save_pretrained(str(tmp))
    params = sum(p.numel() for p in model.parameters())
    info = {
        "status": "ok",
        "shape": asdict(shape),
        "params": params,
        "device": str(device),
        "init_s": round(init_s, 2),
        "save_s": round(time.perf_counter() - t1, 2),
        "bytes": sum(p.stat().st_size for p in tmp.iterdir()),
    }
    write_json_atomic(tmp / "bench-model.json", info)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    return info


def read_jsonl(path: Path) -> list[dict[str, list[int]]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cap_allocator(cap_gib: float) -> dict[str, Any]:
    """Imitate a smaller card: torch's caching allocator may hold at most `cap_gib` in this process
    (set before anything is allocated, so it covers loading too). What it does not cover, nvidia-smi
    shows: the CUDA context, CUDA-managed (paged) optimizer states, kernels' own memory."""
    import torch

    total = torch.cuda.get_device_properties(0).total_memory
    fraction = cap_gib * tp.GIB / total
    torch.cuda.set_per_process_memory_fraction(fraction)
    return {"allocator_cap_gib": cap_gib, "allocator_fraction": round(fraction, 6)}


class PhasePeaks:
    """Peak allocated/reserved memory per phase (load, train), robust to resets: Axolotl calls
    torch.cuda.reset_peak_memory_stats when it logs memory (after loading, at logging steps), which
    hid the loading peak from the probe's plain max_memory_allocated (the embeddings' fp32 casts).
    Every reset first folds the peak so far into the current phase."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.phase = "load"
        self.peaks: dict[str, list[int]] = {"load": [0, 0], "train": [0, 0]}
        self._reset = torch.cuda.reset_peak_memory_stats
        torch.cuda.reset_peak_memory_stats = self.reset  # Axolotl looks it up at call time

    def fold(self) -> None:
        peak = self.peaks[self.phase]
        peak[0] = max(peak[0], self.torch.cuda.max_memory_allocated())
        peak[1] = max(peak[1], self.torch.cuda.max_memory_reserved())

    def reset(self, device: Any = None) -> None:
        self.fold()
        self._reset(device)

    def start(self, phase: str) -> None:
        self.fold()
        self._reset()
        self.phase = phase

    def gib(self, phase: str) -> tuple[float, float]:
        if phase == self.phase:
            self.fold()
        return round(self.peaks[phase][0] / tp.GIB, 2), round(self.peaks[phase][1] / tp.GIB, 2)


def worker_train(spec: dict[str, Any], out_path: Path) -> dict[str, Any]:
    process_start = time.perf_counter()
    poller = SmiPoller()
    poller.start()
    import torch

    cap: dict[str, Any] = {}
    peaks = None
    if spec.get("device", "cuda") == "cuda":
        torch.cuda.init()
        if spec.get("allocator_cap_gib"):
            cap = cap_allocator(float(spec["allocator_cap_gib"]))
        peaks = PhasePeaks()
    data_dir = Path(spec["data_dir"])
    probe = make_probe(spec, out_path, poller, read_jsonl(data_dir / "eval.jsonl"), process_start, peaks)
    probe.result.update(cap)
    if spec["arm"] == "a":
        from plain_qlora import PlainSettings, train

        plain = dict(spec["plain"])
        plain["lora_targets"] = tuple(plain["lora_targets"])
        train(
            Path(spec["model_dir"]),
            read_jsonl(data_dir / "train.jsonl"),
            PlainSettings(**plain),
            Path(spec["run_dir"]) / "output",
            callbacks=[probe],
            pad_id=int(spec["pad_token_id"]),
        )
    else:
        train_with_axolotl(Path(spec["axolotl_yaml"]), probe)
    return probe.final()


def train_with_axolotl(yaml_path: Path, probe: Any) -> None:
    """Axolotl's own `train` entry (what `python -m axolotl.cli.train cfg.yaml` runs), in this
    process, with the benchmark's callback added through Axolotl's plugin manager (the YAML that is
    measured stays exactly the arm's YAML)."""
    from axolotl.cli.args import TrainerCliArgs
    from axolotl.cli.config import load_cfg
    from axolotl.cli.train import do_train
    from axolotl.integrations.base import BasePlugin, PluginManager

    class ProbePlugin(BasePlugin):  # type: ignore[misc]
        def add_callbacks_pre_trainer(self, cfg: Any, model: Any) -> list[Any]:
            return [probe]

    PluginManager.get_instance().plugins["voicetune.voice.benchmark.probe"] = ProbePlugin()
    cfg = load_cfg(str(yaml_path))
    do_train(cfg, TrainerCliArgs())


def make_probe(
    spec: dict[str, Any],
    out_path: Path,
    poller: SmiPoller,
    eval_rows: list[dict[str, list[int]]],
    process_start: float,
    peaks: PhasePeaks | None = None,
) -> Any:
    """The TrainerCallback every arm shares: step times, tokens, memory, losses, held-out loss."""
    import torch
    from transformers import TrainerCallback

    steps = int(spec["steps"])
    profile_steps = int(spec.get("profile_steps") or 0)
    cuda = spec.get("device", "cuda") == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    class Probe(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.records: list[tp.StepRecord] = []
            self.t0 = 0.0
            self.slots = 0
            self.counts: Any = None
            self.hook: Any = None
            self.model: Any = None
            self.profiler: Any = None
            self.profile_t0 = 0.0
            self.result: dict[str, Any] = {"status": "running", "label": spec["label"]}

        # tokens of every training forward, counted on the GPU (no sync until the step ends)
        def _count(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if not module.training:
                return
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                return
            labels = kwargs.get("labels")
            mask = kwargs.get("attention_mask")
            trainable = (
                labels.ne(-100).sum() if labels is not None else torch.tensor(ids.numel(), device=ids.device)
            )
            tokens = mask.ne(0).sum() if mask is not None and mask.dim() == 2 else trainable
            pair = torch.stack([tokens.to(torch.int64), trainable.to(torch.int64)])
            self.counts = pair if self.counts is None else self.counts + pair
            self.slots += ids.numel()

        def on_train_begin(
            self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any
        ) -> None:
            sync()
            if peaks is not None:
                peaks.start("train")
                alloc, reserved = peaks.gib("load")
                self.result["load_peak_alloc_gib"] = alloc
                self.result["load_peak_reserved_gib"] = reserved
                self.result["load_peak_method"] = "phase-folded"  # see PhasePeaks
            self.model = model
            if model is not None:
                self.hook = model.register_forward_pre_hook(self._count, with_kwargs=True)
            self.result["load_s"] = round(time.perf_counter() - process_start, 1)
            self.result["versions"] = {
                **library_versions(PACKAGES),
                "cuda": torch.version.cuda,
                "device": torch.cuda.get_device_name(0) if cuda else "cpu",
            }
            self.t0 = time.perf_counter()

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if profile_steps and state.global_step == steps and self.profiler is None:
                self.profiler = torch.profiler.profile(
                    activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
                )
                self.profiler.__enter__()
                self.profile_t0 = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            sync()
            t_end = time.perf_counter() - self.t0
            tokens, trainable = (int(x) for x in self.counts.tolist()) if self.counts is not None else (0, 0)
            self.records.append(
                tp.StepRecord(state.global_step, round(t_end, 4), tokens, trainable, self.slots)
            )
            self.counts, self.slots = None, 0
            self._dump()

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "loss" in logs and self.records and self.records[-1].step == state.global_step:
                self.records[-1].loss = float(logs["loss"])
                self._dump()

        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            sync()
            self.result["train_s"] = round(time.perf_counter() - self.t0, 1)
            if self.profiler is not None:
                self._finish_profile()
            if peaks is not None:
                train_alloc, train_reserved = peaks.gib("train")
                self.result["peak_alloc_train_gib"] = train_alloc
                self.result["peak_reserved_train_gib"] = train_reserved
                self.result["peak_alloc_gib"] = max(train_alloc, self.result.get("load_peak_alloc_gib") or 0)
            self.result.update(poller.stop())
            self.result["nvidia_smi_peak_gib"] = self.result.get("smi_peak_gib")
            if self.hook is not None:
                self.hook.remove()
            try:
                self.result["eval_loss"] = held_out_loss(model or self.model, eval_rows)
            except Exception as exc:  # the training figures stand without it
                self.result["eval_loss"] = None
                self.result["eval_error"] = f"{type(exc).__name__}: {exc}"[:300]
            self.result["status"] = "ok"
            self._dump()

        def _finish_profile(self) -> None:
            self.profiler.__exit__(None, None, None)
            wall = time.perf_counter() - self.profile_t0
            events = self.profiler.key_averages()
            # kernel events only: a CPU op's self device time repeats its kernels' time
            kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
            device_us = sum(e.self_device_time_total for e in kernels)
            table = events.table(sort_by="self_device_time_total", row_limit=30)
            cpu_table = events.table(sort_by="self_cpu_time_total", row_limit=20)
            folder = Path(spec["torch_profile_dir"])
            name = Path(spec["run_dir"]).name
            write_text_atomic(folder / f"profile-{name}.txt", f"{table}\n\n{cpu_table}\n")
            self.result["profile"] = {
                "steps": profile_steps,
                "wall_s": round(wall, 3),
                "gpu_kernel_s": round(device_us / 1e6, 3),
                "gpu_busy": round(device_us / 1e6 / wall, 3) if wall > 0 else None,
                "table": str(folder / f"profile-{name}.txt"),
            }

        def _dump(self) -> None:
            write_json_atomic(out_path, {**self.result, "records": [asdict(r) for r in self.records]})

        def final(self) -> dict[str, Any]:
            if self.result["status"] != "ok":
                raise RuntimeError("training ended without on_train_end (see the log)")
            return {**self.result, "records": [asdict(r) for r in self.records]}

    return Probe()


def held_out_loss(model: Any, rows: list[dict[str, list[int]]]) -> float | None:
    """Mean loss over the held-out windows, one at a time, bf16 autocast, no gradients."""
    import torch

    if model is None or not rows:
        return None
    was_training = model.training
    model.eval()
    losses = []
    device = next(model.parameters()).device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.no_grad(), autocast:
        for row in rows:
            ids = torch.tensor([row["input_ids"]], device=device)
            losses.append(float(model(input_ids=ids, labels=ids).loss.float().item()))
    if was_training:
        model.train()
    value = sum(losses) / len(losses)
    return round(value, 5) if math.isfinite(value) else None


# --- command line ---------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/perf/training_throughput.py",
        description=(
            "Training throughput on one GPU: (a) plain transformers+PEFT+bitsandbytes QLoRA, (b) Axolotl "
            "defaults, (c) voicetune's profile through Axolotl — same model shape, data, sequence length, "
            "optimizer steps and tokens. Writes <out-dir>/throughput-<gpu>.json and .md."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--arms",
        default="a,b,c",
        help="comma list: a, b, c, c:<variant> "
        f"(variants: {', '.join(sorted(p.stem for p in VARIANTS_DIR.glob('*.yaml')))})",
    )
    parser.add_argument("--models", default="8b,smol", help="comma list of: " + ", ".join(tp.SHAPES))
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per arm")
    parser.add_argument("--warmup-steps", type=int, default=3, help="first steps not timed")
    parser.add_argument("--seq-len", type=int, default=2048, help="tokens per sequence")
    parser.add_argument("--batch-seqs", type=int, default=4, help="sequences per optimizer step (every arm)")
    parser.add_argument("--eval-seqs", type=int, default=4, help="held-out sequences scored after training")
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument(
        "--profile",
        default="auto",
        help="voicetune profile for arm (c): auto (by the card's memory), a name in configs/axolotl/, "
        "or a YAML path",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override an Axolotl key in arm (c), e.g. --set micro_batch_size=2 (repeatable)",
    )
    parser.add_argument(
        "--workdir",
        default=str(DEFAULT_WORKDIR),
        help="local disk for the random models (~16 GB for 8b), data and runs",
    )
    parser.add_argument("--out-dir", default=str(DEFAULT_OUT), help="where the results JSON/markdown go")
    parser.add_argument(
        "--deadline-s",
        type=float,
        default=560,
        help="stop starting arms when less than a minute of this budget is left",
    )
    parser.add_argument("--arm-timeout-s", type=float, default=420, help="kill one arm after this long")
    parser.add_argument(
        "--torch-profile",
        action="store_true",
        help="run 2 more steps per arm under torch.profiler; top kernels and GPU-busy fraction",
    )
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu: a plumbing smoke run without a GPU (no 4-bit, Triton or Liger); it measures nothing",
    )
    parser.add_argument(
        "--build-device",
        choices=("cuda", "cpu"),
        help="where the random model is initialised (default: --device; cpu only to time the difference)",
    )
    parser.add_argument("--gpu-name", help="plan/MFU for this nvidia-smi name instead of the detected one")
    parser.add_argument("--gpu-mem-gib", type=float, help="plan for this much GPU memory")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak to use for MFU")
    parser.add_argument("--no-merge", action="store_true", help="replace an existing results file, not merge")
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="JSON",
        help="merge results files (e.g. from two GPU calls) into --out-dir; no GPU",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan and the Axolotl configs; no GPU"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def refresh_estimates(results: dict[str, Any]) -> None:
    """Recompute every run's estimator column with the estimator as it is now, so that one table
    never mixes predictions of two versions of voicetune.train.vram (measurements are never touched)."""
    for run in results.get("runs", []):
        shape = tp.SHAPES.get(str(run.get("model")))
        cfg = run.get("axolotl_config")
        if cfg is None and run.get("plain_settings"):
            known = {f.name for f in fields(Settings)}
            settings = Settings(**{k: v for k, v in (run.get("settings") or {}).items() if k in known})
            cfg = plain_equivalent(settings, run["plain_settings"])
        if shape is None or cfg is None:
            continue
        est, note = estimator_gib(cfg, shape.llama_config_kwargs())
        if est is not None:
            run["estimator_gib"], run["estimator_note"] = est, note
            run["estimator_error"] = tp.estimator_error(est, run.get("peak_alloc_train_gib"))
    note = "estimator columns recomputed when the results were merged, by the estimator of that commit."
    if note not in results.setdefault("notes", []):
        results["notes"].append(note)


def merge_files(paths: list[str], out_dir: Path) -> int:
    merged: dict[str, Any] = {}
    for name in paths:
        path = Path(name)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise VoicetuneError(
                f"cannot read results file {path} ({exc}): pass a throughput-*.json"
            ) from exc
        merged = merge_results(merged, data) if merged else data
    refresh_estimates(merged)
    slug = (merged.get("gpu") or {}).get("slug") or "unknown-gpu"
    json_path, md_path = out_dir / f"throughput-{slug}.json", out_dir / f"throughput-{slug}.md"
    write_results(merged, json_path, md_path)
    say(f"wrote {json_path} and {md_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker_main(Path(args.worker))
    try:
        if args.merge:
            return merge_files(args.merge, Path(args.out_dir))
        return run_benchmark(args)
    except VoicetuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: results written so far are in --out-dir", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
