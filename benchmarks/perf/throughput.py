"""Arithmetic for the training-throughput benchmark (benchmarks/perf/training_throughput.py).

Pure Python, no torch: model shapes and their parameter counts, FLOPs per token and MFU, the bf16
peak of each card, `nvidia-smi` memory parsing, per-step timing summaries and the results table.
The GPU side of the benchmark only measures; every number it reports is computed here, so the
arithmetic is tested on a CPU with known answers.

FLOPs convention (stated in every report):
- N is the number of weights that take part in a matrix multiply for each token: every linear layer
  plus the output head. The input embedding is a table lookup (no multiply-adds) and is left out;
  a tied embedding counts once, as the head. Norm vectors are left out (no matmul).
- "6N" (the issue's convention, Kaplan et al./PaLM style): forward 2N + backward 4N per token. For
  QLoRA this overcounts: the frozen 4-bit base gets no weight gradients, so its backward is 2N
  (gradients for the activations only), not 4N.
- "honest" = (2 + 2)·N + 6·N_lora: forward and activation-gradient through the frozen base, full
  forward + backward for the LoRA weights. Neither counts the recomputed forward of gradient
  checkpointing (work done twice is not useful work) nor the attention score matmuls (reported
  beside them, per token, for a causal mask at the run's sequence length).
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

GIB = 1024**3
MIB = 1024**2

# The seven projections of a Llama block, as PEFT/Axolotl name them.
LORA_TARGETS_7: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


@dataclass(frozen=True)
class ModelShape:
    """A Llama-family decoder shape: enough to build a random model and to count its FLOPs."""

    key: str
    description: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied_embeddings: bool
    rope_theta: float
    max_positions: int
    rms_norm_eps: float = 1e-5

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def llama_config_kwargs(self, bos_token_id: int = 1, eos_token_id: int = 2) -> dict[str, Any]:
        """Keyword arguments for `transformers.LlamaConfig` (random init, no download)."""
        return {
            "hidden_size": self.hidden,
            "intermediate_size": self.intermediate,
            "num_hidden_layers": self.layers,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab,
            "tie_word_embeddings": self.tied_embeddings,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_positions,
            "rms_norm_eps": self.rms_norm_eps,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
            "initializer_range": 0.02,
            "bos_token_id": bos_token_id,
            "eos_token_id": eos_token_id,
            "pad_token_id": eos_token_id,
            "use_cache": False,
        }

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each projection in one block."""
        q_out = self.heads * self.head_dim
        kv_out = self.kv_heads * self.head_dim
        return {
            "q_proj": (self.hidden, q_out),
            "k_proj": (self.hidden, kv_out),
            "v_proj": (self.hidden, kv_out),
            "o_proj": (q_out, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }


# Llama-3.1-8B's published shape (config.json of meta-llama/Llama-3.1-8B), random weights.
LLAMA_31_8B = ModelShape(
    key="8b",
    description="Llama-3.1-8B shape",
    hidden=4096,
    intermediate=14336,
    layers=32,
    heads=32,
    kv_heads=8,
    vocab=128256,
    tied_embeddings=False,
    rope_theta=500000.0,
    max_positions=8192,
)

# SmolLM2-135M's shape, for when the real demo base model (models/base) is not on the machine.
SMOLLM2_135M = ModelShape(
    key="smol",
    description="SmolLM2-135M shape",
    hidden=576,
    intermediate=1536,
    layers=30,
    heads=9,
    kv_heads=3,
    vocab=49152,
    tied_embeddings=True,
    rope_theta=100000.0,
    max_positions=8192,
)

# A toy Llama for `--device cpu` smoke runs of the benchmark's plumbing (its figures mean nothing).
# The vocabulary still covers the SmolLM2 tokenizer the benchmark's data are cut with.
TINY = ModelShape(
    key="tiny",
    description="tiny Llama shape (CPU smoke runs)",
    hidden=64,
    intermediate=128,
    layers=2,
    heads=4,
    kv_heads=2,
    vocab=49152,
    tied_embeddings=True,
    rope_theta=10000.0,
    max_positions=2048,
)

SHAPES: dict[str, ModelShape] = {shape.key: shape for shape in (LLAMA_31_8B, SMOLLM2_135M, TINY)}


@dataclass(frozen=True)
class ParamCounts:
    total: int  # every parameter, a tied matrix once
    embedding: int  # the input embedding table
    matmul: int  # N: linear layers + output head (see the module docstring)
    lora: int  # trainable LoRA parameters

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def param_counts(
    shape: ModelShape, lora_rank: int = 64, lora_targets: Iterable[str] = LORA_TARGETS_7
) -> ParamCounts:
    modules = shape.module_shapes()
    targets = list(lora_targets)
    unknown = sorted(set(targets) - set(modules))
    if unknown:
        raise ValueError(f"unknown LoRA target modules {unknown}; known: {sorted(modules)}")
    linear_per_layer = sum(i * o for i, o in modules.values())
    norms_per_layer = 2 * shape.hidden
    embedding = shape.vocab * shape.hidden
    head = shape.vocab * shape.hidden
    total = (
        embedding
        + shape.layers * (linear_per_layer + norms_per_layer)
        + shape.hidden  # final norm
        + (0 if shape.tied_embeddings else head)
    )
    lora_per_layer = sum(lora_rank * (modules[t][0] + modules[t][1]) for t in targets)
    return ParamCounts(
        total=total,
        embedding=embedding,
        matmul=shape.layers * linear_per_layer + head,
        lora=shape.layers * lora_per_layer,
    )


def flops_per_token(counts: ParamCounts) -> dict[str, int]:
    """Training FLOPs per token under the two conventions of the module docstring."""
    return {"6n": 6 * counts.matmul, "honest": 4 * counts.matmul + 6 * counts.lora}


def attention_flops_per_token(shape: ModelShape, seq_len: int) -> int:
    """QK^T and AV matmuls, forward + backward (3x forward), causal (half the square), per token."""
    q_width = shape.heads * shape.head_dim
    forward_full = 2 * 2 * seq_len * q_width * shape.layers  # two matmuls, 2 FLOPs per multiply-add
    return 3 * forward_full // 2


def mfu(tokens_per_s: float, flops_per_tok: float, peak_tflops: float) -> float:
    """Model FLOPs utilisation as a fraction (0.40 = 40%)."""
    if peak_tflops <= 0:
        raise ValueError("peak TFLOP/s must be positive")
    return tokens_per_s * flops_per_tok / (peak_tflops * 1e12)


def tokens_per_s_for_mfu(target: float, flops_per_tok: float, peak_tflops: float) -> float:
    """How many tokens/s an MFU of `target` would need (the inverse of `mfu`)."""
    return target * peak_tflops * 1e12 / flops_per_tok


# Dense (not 2:4 sparse) bf16 tensor-core peak, FP32 accumulate, TFLOP/s, from NVIDIA's datasheets
# and architecture whitepapers (Hopper, Ampere, Ada, Blackwell). GeForce cards run FP32 accumulate
# at half the FP16-accumulate rate; that half is the figure that applies to bf16 training.
# First match wins, so the specific names come before the general ones.
_PEAKS: tuple[tuple[str, float, str], ...] = (
    (r"GH200", 989.4, "GH200 (H100 SXM5 class)"),
    (r"H200.*NVL", 835.5, "H200 NVL"),
    (r"H200", 989.4, "H200 SXM"),
    (r"H100.*NVL", 835.5, "H100 NVL"),
    (r"H100.*PCIe", 756.5, "H100 PCIe"),
    (r"H100", 989.4, "H100 SXM5"),
    (r"H800.*PCIe", 756.5, "H800 PCIe"),
    (r"H800", 989.4, "H800 SXM5"),
    (r"B200", 2250.0, "B200"),
    (r"A100", 312.0, "A100"),
    (r"A800", 312.0, "A800"),
    (r"L40S", 362.05, "L40S"),
    (r"L40\b", 181.05, "L40"),
    (r"\bL4\b", 121.0, "L4"),
    (r"RTX PRO 6000", 503.8, "RTX PRO 6000 Blackwell"),
    (r"RTX 6000 Ada", 364.2, "RTX 6000 Ada"),
    (r"RTX A6000", 154.8, "RTX A6000"),
    (r"A10G", 70.0, "A10G"),
    (r"\bA10\b", 125.0, "A10"),
    (r"RTX 5090", 209.5, "GeForce RTX 5090"),
    (r"RTX 5080", 112.6, "GeForce RTX 5080"),
    (r"RTX 4090", 165.2, "GeForce RTX 4090"),
    (r"RTX 4080", 97.5, "GeForce RTX 4080"),
    (r"RTX 3090 Ti", 80.0, "GeForce RTX 3090 Ti"),
    (r"RTX 3090", 71.0, "GeForce RTX 3090"),
)


def peak_bf16_tflops(gpu_name: str) -> tuple[float, str] | None:
    """(dense bf16 TFLOP/s, which card we took it for) for an `nvidia-smi` name, or None."""
    for pattern, tflops, label in _PEAKS:
        if re.search(pattern, gpu_name, flags=re.IGNORECASE):
            return tflops, label
    return None


def gpu_slug(gpu_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100-80gb-hbm3' (for results file names)."""
    name = re.sub(r"^(nvidia\s+)?(geforce\s+)?", "", gpu_name.strip(), flags=re.IGNORECASE)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug or "unknown-gpu"


# --- nvidia-smi ---------------------------------------------------------------------------------

SMI_APPS_ARGS = ("--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits")
SMI_GPU_ARGS = ("--query-gpu=index,memory.used,memory.total", "--format=csv,noheader,nounits")


def _mib(text: str) -> int | None:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(MiB)?\s*", text)
    return int(float(match.group(1))) if match else None


def parse_smi_apps(text: str) -> dict[int, int]:
    """`nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits` -> {pid: MiB}.

    Lines with '[N/A]' or '[Insufficient Permissions]' (containers, MIG) are skipped.
    """
    usage: dict[int, int] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        mib = _mib(parts[1])
        if mib is not None:
            usage[int(parts[0])] = usage.get(int(parts[0]), 0) + mib
    return usage


def parse_smi_gpus(text: str) -> dict[int, tuple[int, int]]:
    """`nvidia-smi --query-gpu=index,memory.used,memory.total ...` -> {index: (used MiB, total MiB)}."""
    gpus: dict[int, tuple[int, int]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        used, total = _mib(parts[1]), _mib(parts[2])
        if used is not None and total is not None:
            gpus[int(parts[0])] = (used, total)
    return gpus


@dataclass
class SmiPeak:
    """The highest memory `nvidia-smi` showed for one process during a run.

    `method` says what was read: 'process' (this pid's used_memory) or 'device-delta' (whole-GPU
    memory.used minus what it was before this process touched CUDA; used when the container hides
    pids from nvidia-smi).
    """

    baseline_mib: int | None = None
    peak_mib: int = 0
    method: str = "none"
    samples: int = 0

    def update(self, pid: int, apps_text: str | None, gpus_text: str | None, index: int = 0) -> None:
        apps = parse_smi_apps(apps_text or "")
        if pid in apps:
            self._take(apps[pid], "process")
            return
        gpus = parse_smi_gpus(gpus_text or "")
        if index in gpus and self.baseline_mib is not None and self.method != "process":
            self._take(max(0, gpus[index][0] - self.baseline_mib), "device-delta")

    def _take(self, mib: int, method: str) -> None:
        self.samples += 1
        self.method = method
        self.peak_mib = max(self.peak_mib, mib)

    @property
    def peak_gib(self) -> float | None:
        return round(self.peak_mib / 1024, 2) if self.samples else None


# --- per-step timing ----------------------------------------------------------------------------


@dataclass
class StepRecord:
    """One optimizer step: when it ended (s since training began, after a CUDA sync) and its tokens."""

    step: int
    t_end: float
    tokens: int  # non-padding tokens processed in the step's forward/backward passes
    trainable: int  # tokens with a label (labels != -100)
    slots: int  # input positions, padding included
    loss: float | None = None


@dataclass
class StepSummary:
    steps: int
    timed_steps: int
    timed_seconds: float
    tokens_timed: int
    trainable_timed: int
    tokens_total: int
    trainable_total: int
    slots_total: int
    tokens_per_s: float
    trainable_per_s: float
    step_s_median: float
    loss_first: float | None
    loss_last: float | None
    loss_last_mean: float | None
    losses: list[float | None] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_steps(records: Sequence[StepRecord], warmup: int, last_k: int = 3) -> StepSummary:
    """Throughput over the steps after `warmup` (compile, autotune and allocator growth excluded).

    Step i's duration is t_end[i] - t_end[i-1] (t_end[-1] = 0, the start of training), so the timed
    window runs from the end of the last warm-up step to the end of the last step.
    """
    if warmup < 0:
        raise ValueError("warmup must be >= 0")
    if len(records) <= warmup:
        raise ValueError(f"{len(records)} steps recorded, need more than the {warmup} warm-up steps")
    ordered = sorted(records, key=lambda r: r.step)
    timed = ordered[warmup:]
    start = ordered[warmup - 1].t_end if warmup > 0 else 0.0
    seconds = ordered[-1].t_end - start
    if seconds <= 0:
        raise ValueError("step end times do not increase")
    durations = [
        r.t_end - (ordered[i - 1].t_end if i > 0 else 0.0) for i, r in enumerate(ordered) if i >= warmup
    ]
    tokens = sum(r.tokens for r in timed)
    trainable = sum(r.trainable for r in timed)
    losses = [r.loss for r in ordered]
    known = [x for x in losses if x is not None and math.isfinite(x)]
    tail = known[-last_k:]
    return StepSummary(
        steps=len(ordered),
        timed_steps=len(timed),
        timed_seconds=round(seconds, 4),
        tokens_timed=tokens,
        trainable_timed=trainable,
        tokens_total=sum(r.tokens for r in ordered),
        trainable_total=sum(r.trainable for r in ordered),
        slots_total=sum(r.slots for r in ordered),
        tokens_per_s=round(tokens / seconds, 2),
        trainable_per_s=round(trainable / seconds, 2),
        step_s_median=round(statistics.median(durations), 4),
        loss_first=known[0] if known else None,
        loss_last=known[-1] if known else None,
        loss_last_mean=round(sum(tail) / len(tail), 5) if tail else None,
        losses=losses,
    )


# --- data ---------------------------------------------------------------------------------------


def cut_sequences(token_ids: Sequence[int], seq_len: int) -> list[list[int]]:
    """Cut one token stream into full windows of exactly seq_len tokens (the tail is dropped)."""
    if seq_len < 2:
        raise ValueError("seq_len must be at least 2")
    return [list(token_ids[i : i + seq_len]) for i in range(0, len(token_ids) - seq_len + 1, seq_len)]


def split_train_eval(
    sequences: Sequence[list[int]], needed_train: int, eval_count: int
) -> tuple[list[list[int]], list[list[int]], int]:
    """The last `eval_count` windows are held out; training cycles through the rest if it needs more.

    Returns (train, eval, passes): passes > 1 says the training stream repeats (reported, since a
    repeated window is easier the second time).
    """
    if len(sequences) <= eval_count:
        raise ValueError(f"{len(sequences)} sequences: need more than {eval_count} (the held-out set)")
    pool = list(sequences[: len(sequences) - eval_count])
    held_out = list(sequences[len(sequences) - eval_count :])
    passes = max(1, math.ceil(needed_train / len(pool)))
    train = (pool * passes)[:needed_train]
    return train, held_out, passes


# --- results table ------------------------------------------------------------------------------

ARM_TITLES = {
    "a": "(a) plain transformers + PEFT + bitsandbytes",
    "b": "(b) Axolotl defaults",
    "c": "(c) voicetune profile via Axolotl",
}


def _fmt(value: Any, digits: int = 0, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, (int, float)):
        return f"{value:,.{digits}f}{suffix}"
    return str(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 3)


def max_loss_difference(
    steps: Sequence[Mapping[str, Any]] | None, other: Sequence[Mapping[str, Any]] | None
) -> float | None:
    """The largest |loss difference| over the steps both runs logged (None if they share none)."""
    theirs = {s["step"]: s.get("loss") for s in other or []}
    diffs = [
        abs(float(s["loss"]) - float(theirs[s["step"]]))
        for s in steps or []
        if s.get("loss") is not None and theirs.get(s["step"]) is not None
    ]
    return round(max(diffs), 4) if diffs else None


def estimator_error(predicted_gib: float | None, measured_gib: float | None) -> float | None:
    """Signed relative error of the VRAM estimate ((pred - measured) / measured)."""
    if predicted_gib is None or not measured_gib:
        return None
    return round((predicted_gib - measured_gib) / measured_gib, 4)


def render_markdown(results: Mapping[str, Any]) -> str:
    """The human table for benchmarks/results/throughput-<gpu>.md (everything also in the JSON)."""
    gpu = results.get("gpu", {})
    settings = results.get("settings", {})
    lines = [
        f"# Training throughput on {gpu.get('name', 'unknown GPU')}",
        "",
        f"Command: `{results.get('command', '')}`",
        "",
        f"Created {results.get('created', '')}; settings of the last command (each run's own are in "
        f"the JSON): {settings.get('steps')} optimizer steps per arm "
        f"({settings.get('warmup_steps')} warm-up steps not timed), sequence length "
        f"{settings.get('seq_len')}, {settings.get('batch_seqs')} sequences "
        f"({settings.get('tokens_per_step')} tokens) per optimizer step, the same token stream in "
        f"the same order for every arm. Peak bf16: {gpu.get('peak_bf16_tflops')} TFLOP/s "
        f"({gpu.get('peak_source', '')}).",
        "",
    ]
    for model_key, model in (results.get("models") or {}).items():
        lines += [
            f"## {model.get('description', model_key)}",
            "",
            f"Source: {model.get('source', '')}. "
            f"N (matmul weights) = {_fmt(model.get('params', {}).get('matmul'))}, "
            f"N_lora = {_fmt(model.get('params', {}).get('lora'))}; FLOPs/token: 6N = "
            f"{_fmt(model.get('flops_per_token', {}).get('6n'))}, honest 4N+6N_lora = "
            f"{_fmt(model.get('flops_per_token', {}).get('honest'))}.",
            "",
            "| arm | micro batch × GA | seq len (cap GiB) | tokens/s | trainable tokens/s | vs (a) | "
            "vs (b) | MFU 6N | MFU honest | peak alloc GiB (train / load) | nvidia-smi GiB | "
            "estimator GiB train (error) / load | "
            "loss step 1 → last (mean last 3) | held-out loss | status |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        runs = [r for r in results.get("runs", []) if r.get("model") == model_key]
        for run in runs:
            est_err = run.get("estimator_error")
            est = _fmt(run.get("estimator_gib"), 2)
            if est_err is not None:
                est += f" ({100 * est_err:+.1f}%)"
            if run.get("estimator_load_gib") is not None:
                est += f" / {_fmt(run.get('estimator_load_gib'), 2)}"
            lines.append(
                "| "
                + " | ".join(
                    [
                        ARM_TITLES.get(run.get("arm", ""), run.get("arm", "")) + _variant(run),
                        f"{run.get('micro_batch', '—')} × {run.get('grad_accum', '—')}",
                        _seq_cap(run),
                        _fmt(run.get("tokens_per_s")),
                        _fmt(run.get("trainable_per_s")),
                        _fmt(run.get("speedup_vs_a"), 2, "x"),
                        _fmt(run.get("speedup_vs_b"), 2, "x"),
                        _pct(run.get("mfu_6n")),
                        _pct(run.get("mfu_honest")),
                        f"{_fmt(run.get('peak_alloc_train_gib'), 2)} / "
                        f"{_fmt(run.get('load_peak_alloc_gib'), 2)}",
                        _fmt(run.get("smi_peak_gib"), 2),
                        est,
                        f"{_fmt(run.get('loss_first'), 3)} → {_fmt(run.get('loss_last'), 3)} "
                        f"({_fmt(run.get('loss_last_mean'), 3)})",
                        _fmt(run.get("eval_loss"), 4),
                        run.get("status", "?") + (f": {run['error']}" if run.get("error") else ""),
                    ]
                )
                + " |"
            )
        lines.append("")
        checks = (results.get("targets") or {}).get(model_key) or []
        if checks:
            lines += ["Targets for (c):", ""]
            for check in checks:
                mark = {True: "met", False: "missed", None: "not measured"}[check.get("met")]
                lines.append(
                    f"- {check['what']}: {check.get('measured', '—')} (target {check['target']}): {mark}"
                )
            lines.append("")
    notes = results.get("notes") or []
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines)


def _seq_cap(run: Mapping[str, Any]) -> str:
    seq = run.get("sequence_len") or (run.get("settings") or {}).get("seq_len") or "—"
    cap = run.get("allocator_cap_gib")
    return f"{seq} ({cap})" if cap is not None else str(seq)


def _variant(run: Mapping[str, Any]) -> str:
    label = run.get("variant")
    return f" [{label}]" if label else ""
