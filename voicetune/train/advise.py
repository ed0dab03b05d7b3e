"""`voicetune advise`: which open base models a GPU can fine-tune, how, and how fast (estimates).

For one card and each model of a catalogue of real open base models (configs/models/*.yaml: the
shapes from their published config.json, each file citing where it was read), one row says what
`voicetune train --profile auto` would do on that card, from the same calls train.py makes:
- the profile for the card's size (axolotl_config.profile_for_gpu) and the micro batch and
  sequence length auto sizes for the free memory (vram.choose_batch_and_length), or that nothing
  fits; "tight" when it fits only without the allocator's slack (vram's `minimum`);
- the longest sequence that fits at micro batch 1 by that same tight bar;
- the estimated peak (vram.estimate's highest_peak: the training step or evaluation, the larger);
- tokens/s, an estimate: the MFU voicetune's own profile reached in the committed measurements
  (benchmarks/results/throughput-*.json, the Llama-3.1-8B shape and SmolLM2-135M on an H200 or
  H100), derived here from their tokens/s and their card's peak, interpolated by model size in
  between, and scaled by this card's peak TFLOP/s (configs/gpus.yaml); each row's `basis` says which
  measurement it came from;
- with --data, the hours for that prepared corpus: the epochs train.py would choose x its training
  tokens (the prepared data's manifest) / tokens/s.

Every figure is an estimate and is labelled so. The card: `--gpu auto` (this machine, through
voicetune.machine.gpu), `--gpu NAME` (configs/gpus.yaml) or `--gpu-mem-gib N` (memory only: no speed).
Pure arithmetic and file reading, no torch: it answers in a second on any machine.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from voicetune.core.errors import VoicetuneError
from voicetune.core.paths import configs_dir, repo_dir
from voicetune.train import axolotl_config as ac
from voicetune.train import preflight, vram

GIB = vram.GIB
MIB = 1024**2
DEFAULT_MIN_SEQUENCE_LEN = 512  # train.py's floor for auto when the data names no sequence_len
LENGTH_STEP = 256  # the longest sequence is searched in steps of this many tokens
LENGTH_CAP = 131_072  # and no further (or the model's max_position_embeddings, if lower)
README_BEGIN = re.compile(r"<!-- advise-output: (?P<args>[^>]*?) -->\n")
README_END = "<!-- /advise-output -->"


# ------------------------------------------------------------------------------------- catalogues


@dataclass(frozen=True)
class GpuSpec:
    key: str
    name: str
    match: tuple[str, ...]
    memory_mib: int
    bf16: bool
    peak_tflops: float
    peak_source: str
    compute_capability: tuple[int, int]

    def matches(self, product_name: str) -> bool:
        return any(re.search(p, product_name, flags=re.IGNORECASE) for p in self.match)


@dataclass(frozen=True)
class ModelEntry:
    key: str
    name: str
    hf_id: str
    shape: vram.ModelShape
    source: str
    attention: str | None = None  # when the model needs another attention than the profile's

    @property
    def params(self) -> int:
        return self.shape.total_params

    @property
    def matmul_params(self) -> int:
        return matmul_params(self.shape)


def matmul_params(shape: vram.ModelShape) -> int:
    """N of the 6N FLOPs a token: every decoder projection and the LM head (a tied one too); the input
    embedding is a lookup. The convention of benchmarks/perf/throughput.py and its measured MFU."""
    return shape.linear_params + shape.vocab_size * shape.hidden_size


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise VoicetuneError(f"cannot read {path}: {exc}: restore it from the repository") from exc
    if not isinstance(data, dict):
        raise VoicetuneError(f"{path} is not a YAML mapping: restore it from the repository")
    return data


def load_gpus(path: Path | None = None) -> list[GpuSpec]:
    """configs/gpus.yaml, in file order (the order names are matched in)."""
    path = path or configs_dir() / "gpus.yaml"
    gpus = []
    for key, item in (_read_yaml(path).get("gpus") or {}).items():
        try:
            gpus.append(
                GpuSpec(
                    key=str(key),
                    name=str(item["name"]),
                    match=tuple(str(m) for m in item.get("match") or [re.escape(str(item["name"]))]),
                    memory_mib=int(item["memory_mib"]),
                    bf16=bool(item["bf16"]),
                    peak_tflops=float(item["peak_tflops"]),
                    peak_source=str(item.get("peak_source", "")),
                    compute_capability=(
                        int(item["compute_capability"][0]),
                        int(item["compute_capability"][1]),
                    ),
                )
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise VoicetuneError(f"{path}: entry {key!r} lacks or mangles {exc}: fix the entry") from exc
    return gpus


def load_models(folder: Path | None = None) -> list[ModelEntry]:
    """configs/models/*.yaml, smallest model first."""
    folder = folder or configs_dir() / "models"
    entries = []
    for path in sorted(folder.glob("*.yaml")):
        data = _read_yaml(path)
        try:
            shape = vram.ModelShape.from_config(dict(data["config"]))
            entries.append(
                ModelEntry(
                    key=path.stem,
                    name=str(data["name"]),
                    hf_id=str(data.get("hf_id", "")),
                    shape=shape,
                    source=str(data.get("source", "")),
                    attention=data.get("attention"),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VoicetuneError(f"{path}: {exc}: fix the model file") from exc
    if not entries:
        raise VoicetuneError(f"no model files in {folder}: restore configs/models/ from the repository")
    return sorted(entries, key=lambda e: e.params)


def find_gpu(name: str, gpus: list[GpuSpec]) -> GpuSpec:
    """A catalogue card by key ('rtx4090'), by its name or by an nvidia-smi product name."""
    wanted = _squash(name)
    for gpu in gpus:
        if wanted in (_squash(gpu.key), _squash(gpu.name)):
            return gpu
    for gpu in gpus:
        if gpu.matches(name) or gpu.matches(name.replace("-", " ")):
            return gpu
    keys = [g.key for g in gpus]
    close = difflib.get_close_matches(name.lower(), keys, n=1, cutoff=0.5)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise VoicetuneError(
        f"unknown GPU '{name}'{hint}: use one of {', '.join(keys)}, or --gpu-mem-gib N for any card"
    )


def _squash(text: str) -> str:
    text = re.sub(r"^(nvidia\s+)?(geforce\s+)?", "", text.strip(), flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]", "", text.lower())


# ----------------------------------------------------------------------------------------- the card


@dataclass(frozen=True)
class Card:
    name: str
    total_bytes: int
    free_bytes: int
    bf16: bool
    peak_tflops: float | None
    compute_capability: tuple[int, int] | None
    source: str  # where the figures come from
    wsl: bool = False

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    def describe(self) -> str:
        free = "" if self.free_bytes == self.total_bytes else f", {self.free_bytes / GIB:.1f} GiB free"
        cc = (
            f", sm_{self.compute_capability[0]}{self.compute_capability[1]}"
            if self.compute_capability
            else ""
        )
        dtype = "bf16" if self.bf16 else "no bf16 (fp16)"
        peak = f", {self.peak_tflops:g} TFLOP/s peak" if self.peak_tflops else ", peak TFLOP/s unknown"
        return f"{self.name}: {self.total_gib:.1f} GiB{free}{cc}, {dtype}{peak} ({self.source})"


def card_from_spec(gpu: GpuSpec, memory_gib: float | None = None) -> Card:
    total = int(memory_gib * GIB) if memory_gib else gpu.memory_mib * MIB
    source = "configs/gpus.yaml" + (f", memory set to {memory_gib:g} GiB" if memory_gib else "")
    return Card(
        gpu.name,
        total,
        total,
        gpu.bf16,
        gpu.peak_tflops,
        gpu.compute_capability,
        source,
    )


def card_from_memory(memory_gib: float) -> Card:
    total = int(memory_gib * GIB)
    return Card(f"a {memory_gib:g} GiB card", total, total, True, None, None, "--gpu-mem-gib")


def card_from_machine(gpus: list[GpuSpec]) -> Card:
    """This machine's first NVIDIA GPU (nvidia-smi), named from the catalogue when it is there."""
    from voicetune.machine import gpu as machine

    readings = machine.read_machine()
    if not readings.gpus:
        why = readings.error or "nvidia-smi found no NVIDIA GPU on this machine"
        raise VoicetuneError(
            f"{why}: to see what a card would take, pass --gpu-mem-gib N (its memory in GiB) or "
            f"--gpu NAME (one of {', '.join(g.key for g in gpus)})"
        )
    found = readings.gpus[0]
    spec = next((g for g in gpus if g.matches(found.name)), None)
    total = found.memory_total_mib * MIB
    used = (found.memory_used_mib or 0) * MIB
    cc = found.compute_capability or (spec.compute_capability if spec else None)
    bf16 = cc >= (8, 0) if cc else (spec.bf16 if spec else True)
    count = f" (GPU 0 of {len(readings.gpus)}: advise sizes one card)" if len(readings.gpus) > 1 else ""
    return Card(
        name=found.name + count,
        total_bytes=total,
        free_bytes=max(0, total - used),
        bf16=bf16,
        peak_tflops=spec.peak_tflops if spec else None,
        compute_capability=cc,
        source="nvidia-smi" + (f"; peak from configs/gpus.yaml ({spec.key})" if spec else ""),
        wsl=readings.wsl,
    )


# -------------------------------------------------------------------------------- measured speed


@dataclass(frozen=True)
class Anchor:
    """One committed measurement of voicetune's own profile: the tokens/s it reached, and so its MFU."""

    model: str  # e.g. "Llama-3.1-8B shape"
    matmul_params: int
    card: str
    peak_tflops: float
    tokens_per_s: float
    micro_batch: int
    sequence_len: int
    file: str

    @property
    def mfu(self) -> float:
        return self.tokens_per_s * 6 * self.matmul_params / (self.peak_tflops * 1e12)

    @property
    def card_short(self) -> str:
        return re.sub(r"^NVIDIA\s+", "", self.card).split()[0]

    def describe(self) -> str:
        return f"{self.model}, micro batch {self.micro_batch} x {self.sequence_len}, {self.file}"


def _shape_from_result(shape: dict[str, Any]) -> vram.ModelShape:
    return vram.ModelShape(
        hidden_size=int(shape["hidden"]),
        num_layers=int(shape["layers"]),
        num_heads=int(shape["heads"]),
        num_kv_heads=int(shape["kv_heads"]),
        head_dim=int(shape["hidden"]) // int(shape["heads"]),
        intermediate_size=int(shape["intermediate"]),
        vocab_size=int(shape["vocab"]),
        tie_word_embeddings=bool(shape["tied_embeddings"]),
        max_position_embeddings=shape.get("max_positions"),
    )


def load_anchors(folder: Path | None = None) -> list[Anchor]:
    """voicetune's arm (c, as shipped: no variant) of every completed run in the throughput results."""
    folder = folder or repo_dir() / "benchmarks" / "results"
    anchors = []
    for path in sorted(folder.glob("throughput-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            gpu = data["gpu"]
            peak = float(gpu.get("peak_bf16_tflops") or gpu["peak_tflops"])
            for run in data.get("runs", []):
                if run.get("arm") != "c" or run.get("variant") or run.get("status") != "ok":
                    continue
                if not run.get("tokens_per_s"):
                    continue
                model = data["models"][run["model"]]["shape"]
                anchors.append(
                    Anchor(
                        model=str(model.get("description") or run["model"]),
                        matmul_params=matmul_params(_shape_from_result(model)),
                        card=str(gpu["name"]),
                        peak_tflops=peak,
                        tokens_per_s=float(run["tokens_per_s"]),
                        micro_batch=int(run["micro_batch"]),
                        sequence_len=int(data["settings"]["seq_len"]),
                        file=path.name,
                    )
                )
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a throughput result this reader knows: it just gives no anchor
    return anchors


def _closest(anchors: list[Anchor], tokens: int) -> Anchor:
    """The run whose micro step (micro batch x sequence) is nearest this one's; H200 first on a tie."""
    return min(
        anchors,
        key=lambda a: (
            abs(math.log(a.micro_batch * a.sequence_len / tokens)),
            "H200" not in a.card,
        ),
    )


@dataclass(frozen=True)
class Speed:
    tokens_per_s: float | None
    mfu: float | None
    basis: str
    anchors: tuple[Anchor, ...] = ()


def estimate_speed(
    params: int,
    tokens_per_micro_step: int,
    peak_tflops: float | None,
    anchors: list[Anchor],
) -> Speed:
    """tokens/s = MFU x peak / 6N. The MFU is the one measured for the nearest model size (log-linear
    in size between a smaller and a larger measured model; the nearest one outside them), each taken
    from its run nearest this micro step (micro batch x sequence)."""
    if peak_tflops is None:
        return Speed(
            None,
            None,
            "no speed estimate: the card's peak TFLOP/s is unknown (name it with --gpu NAME)",
        )
    if not anchors:
        return Speed(
            None,
            None,
            "no speed estimate: no committed throughput measurement in benchmarks/results/",
        )
    by_model: dict[int, list[Anchor]] = {}
    for anchor in anchors:
        by_model.setdefault(anchor.matmul_params, []).append(anchor)
    sizes = sorted(by_model)
    below = [n for n in sizes if n <= params]
    above = [n for n in sizes if n >= params]
    low = _closest(by_model[below[-1] if below else above[0]], tokens_per_micro_step)
    high = _closest(by_model[above[0] if above else below[-1]], tokens_per_micro_step)
    if low is high:
        mfu, used = low.mfu, (low,)
        basis = f"estimated from {100 * mfu:.1f}% MFU measured on {low.card_short} ({low.describe()})"
    else:
        share = math.log(params / low.matmul_params) / math.log(high.matmul_params / low.matmul_params)
        mfu, used = low.mfu + share * (high.mfu - low.mfu), (low, high)
        basis = (
            f"estimated from {100 * mfu:.1f}% MFU, interpolated by size between {100 * low.mfu:.1f}% "
            f"measured on {low.card_short} ({low.describe()}) and {100 * high.mfu:.1f}% measured on "
            f"{high.card_short} ({high.describe()})"
        )
    tokens_per_s = mfu * peak_tflops * 1e12 / (6 * params)
    return Speed(tokens_per_s, mfu, f"{basis}, scaled to {peak_tflops:g} TFLOP/s", used)


# ------------------------------------------------------------------------------------------ the rows


@dataclass(frozen=True)
class DataSize:
    name: str
    train_tokens: int
    epochs: int
    sequence_len: int | None
    tokenizer: str

    @property
    def tokens(self) -> int:
        return self.train_tokens * self.epochs


def data_size(name: str) -> DataSize:
    """The training tokens (the prepared data's manifest) and the epochs train.py would run on them."""
    from voicetune.core.artifacts import PreparedData

    prepared = PreparedData.load(name)
    stats = (prepared.manifest.get("token_stats") or {}).get("train") or {}
    tokens = int(stats.get("total") or 0)
    if tokens <= 0:
        where = prepared.folder / "manifest.json"
        raise VoicetuneError(f"{where} records no training tokens: re-run training/1_prepare_data.sh")
    seq = prepared.settings.get("sequence_len") or stats.get("sequence_len")
    base = prepared.base_model
    return DataSize(
        name=prepared.name,
        train_tokens=tokens,
        # the rule train.py applies when neither the profile run nor a flag fixes the epochs
        epochs=ac.epochs_for_corpus(ac.approx_train_tokens(prepared.folder)),
        sequence_len=int(seq) if seq else None,
        tokenizer=base.name if base else "the base model's",
    )


@dataclass(frozen=True)
class Row:
    model: str
    hf_id: str
    params_b: float
    fits: bool
    tight: bool  # fits only without the allocator's slack
    profile: str
    micro_batch: int | None
    sequence_len: int | None
    max_sequence_len: int | None
    peak_gib: float  # at auto's choice; when nothing fits, at micro batch 1 and the shortest length
    needs_gib: float  # the free memory that choice needs (with slack, or the tight minimum)
    tokens_per_s: float | None
    mfu: float | None
    hours_for_data: float | None
    basis: str
    anchors: tuple[Anchor, ...] = ()  # the measurements tokens/s came from (not in the JSON)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("anchors")
        return data


def profile_plan(entry: ModelEntry, card: Card, profile: str) -> vram.TrainPlan:
    """The memory knobs of `profile` for this card, adjusted as train.py adjusts a built-in profile
    (fp32 LoRA weights on a card without bf16), with the model's own attention where it needs one."""
    cfg = ac.load_profile(profile)
    if card.compute_capability is not None:
        info = preflight.GpuInfo(
            name=card.name,
            count=1,
            free_bytes=card.free_bytes,
            total_bytes=card.total_bytes,
            compute_capability=card.compute_capability,
            torch_cuda=True,
            source=card.source,
        )
        if preflight.fp16_adapters_fail(cfg, info):
            cfg.pop("peft_autocast_adapter_dtype")
    plan = vram.plan_from_axolotl(cfg)
    return replace(plan, attention=entry.attention) if entry.attention else plan


def longest_sequence(shape: vram.ModelShape, plan: vram.TrainPlan, free_bytes: int) -> int | None:
    """The longest sequence (a multiple of LENGTH_STEP) that fits at micro batch 1 by the tight bar
    (peak + a CUDA context, no slack: vram's `minimum`), up to the model's context; None if none does."""

    def fits(n: int) -> bool:
        candidate = replace(plan, micro_batch_size=1, sequence_len=n, eval_micro_batch_size=1)
        return vram.estimate(shape, candidate).minimum <= free_bytes

    cap = min(shape.max_position_embeddings or LENGTH_CAP, LENGTH_CAP) // LENGTH_STEP
    if cap < 1 or not fits(LENGTH_STEP):
        return None
    lo, hi = 1, cap  # fits(lo * STEP) holds; find the largest k that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid * LENGTH_STEP):
            lo = mid
        else:
            hi = mid - 1
    return lo * LENGTH_STEP


def advise_row(
    entry: ModelEntry,
    card: Card,
    anchors: list[Anchor],
    data: DataSize | None = None,
    min_sequence_len: int | None = None,
) -> Row:
    profile = ac.profile_for_gpu(card.total_gib)
    plan = profile_plan(entry, card, profile)
    min_len = min_sequence_len or (data.sequence_len if data else None) or DEFAULT_MIN_SEQUENCE_LEN
    picked = vram.choose_batch_and_length(entry.shape, plan, card.free_bytes, min_sequence_len=min_len)
    longest = longest_sequence(entry.shape, plan, card.free_bytes)
    common = {
        "model": entry.name,
        "hf_id": entry.hf_id,
        "params_b": round(entry.params / 1e9, 2),
    }
    if picked is None:
        est = vram.estimate(
            entry.shape,
            replace(plan, micro_batch_size=1, sequence_len=min_len, eval_micro_batch_size=1),
        )
        return Row(
            **common,
            fits=False,
            tight=False,
            profile=profile,
            micro_batch=None,
            sequence_len=None,
            max_sequence_len=longest,
            peak_gib=round(est.highest_peak / GIB, 2),
            needs_gib=round(est.minimum / GIB, 2),
            tokens_per_s=None,
            mfu=None,
            hours_for_data=None,
            basis=f"does not fit: needs {est.minimum / GIB:.1f} GiB at micro batch 1 x {min_len} tokens "
            f"(vram.estimate), {card.free_bytes / GIB:.1f} GiB free",
        )
    est = picked.estimate
    tight = est.required > card.free_bytes
    speed = estimate_speed(
        entry.matmul_params,
        picked.micro_batch_size * picked.sequence_len,
        card.peak_tflops,
        anchors,
    )
    tokens_per_s = speed.tokens_per_s
    hours = data.tokens / tokens_per_s / 3600 if data and tokens_per_s else None
    return Row(
        **common,
        fits=True,
        tight=tight,
        profile=profile,
        micro_batch=picked.micro_batch_size,
        sequence_len=picked.sequence_len,
        max_sequence_len=longest,
        peak_gib=round(est.highest_peak / GIB, 2),
        needs_gib=round((est.minimum if tight else est.required) / GIB, 2),
        tokens_per_s=round(tokens_per_s) if tokens_per_s else None,
        mfu=round(speed.mfu, 4) if speed.mfu is not None else None,
        hours_for_data=round(hours, 2) if hours is not None else None,
        basis=speed.basis,
        anchors=speed.anchors,
    )


def card_notes(card: Card) -> list[str]:
    """What matters on this card beyond memory: Blackwell's kernels, WSL2's VM, no bf16."""
    notes = []
    cc = card.compute_capability
    if cc and cc >= (12, 0):
        notes.append(
            "RTX 50xx (sm_120): PyTorch must be built for CUDA 12.8 or newer (setup/ installs such a "
            "build); flash-attn runs only with sm_120 kernels, else training uses SDPA, which these "
            "estimates assume."
        )
    if card.wsl:
        notes.append(
            "WSL2: the Linux VM gets part of Windows' RAM (memory= in %UserProfile%\\.wslconfig), and "
            "pinned memory is limited there: the 8gb profile offloads activations to pinned CPU "
            "memory and pages optimizer states through it."
        )
    if not card.bf16:
        notes.append(
            "No bf16 (compute capability below 8.0): training runs in fp16 and LoRA weights stay fp32, "
            "as counted here."
        )
    return notes


@dataclass(frozen=True)
class Advice:
    card: Card
    rows: list[Row]
    data: DataSize | None
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        card = asdict(self.card)
        card["total_gib"] = round(self.card.total_bytes / GIB, 2)
        card["free_gib"] = round(self.card.free_bytes / GIB, 2)
        return {
            "card": card,
            "data": asdict(self.data) | {"tokens": self.data.tokens} if self.data else None,
            "models": [r.to_json() for r in self.rows],
            "notes": self.notes,
        }


def advise(
    card: Card,
    models: list[ModelEntry] | None = None,
    anchors: list[Anchor] | None = None,
    data: DataSize | None = None,
) -> Advice:
    models = load_models() if models is None else models
    anchors = load_anchors() if anchors is None else anchors
    rows = [advise_row(entry, card, anchors, data) for entry in models]
    return Advice(card, rows, data, card_notes(card))


# --------------------------------------------------------------------------------------- rendering


def _fmt_int(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _fmt_hours(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 60:.0f} min" if value < 1 else f"{value:.1f} h"


def render(advice: Advice) -> str:
    """The table: Markdown, so the README shows it as it is printed."""
    card = advice.card
    lines = [f"GPU: {card.describe()}"]
    if advice.data:
        d = advice.data
        lines.append(
            f"Data: {d.name}, {d.train_tokens:,} training tokens x {d.epochs} epochs = {d.tokens:,} "
            f"tokens (counted with {d.tokenizer}'s tokenizer)"
        )
    lines.append("")
    header = [
        "model",
        "params",
        "fits",
        "profile",
        "micro batch x seq",
        "longest seq",
        "peak GiB",
    ]
    header += ["tokens/s", "MFU"] if card.peak_tflops else []
    header += ["time for data"] if advice.data else []
    table = [header]
    used: list[Anchor] = []
    for r in advice.rows:
        cells = [
            r.model,
            f"{r.params_b:.2f}B" if r.params_b < 1 else f"{r.params_b:.1f}B",
            ("tight" if r.tight else "yes") if r.fits else "no",
            r.profile,
            f"{r.micro_batch} x {r.sequence_len}" if r.fits else "-",
            _fmt_int(r.max_sequence_len),
            f"{r.peak_gib:.1f}",
        ]
        if card.peak_tflops:
            cells += [
                _fmt_int(r.tokens_per_s),
                f"{100 * r.mfu:.0f}%" if r.mfu is not None else "-",
            ]
        if advice.data:
            cells.append(_fmt_hours(r.hours_for_data))
        table.append(cells)
        used += [a for a in r.anchors if a not in used]
    lines += _markdown_table(table, left={0, 2, 3, 4})
    lines.append("")
    lines.append(
        "All figures are estimates. fits: what `voicetune train --profile auto` would run on this card "
        "(tight: only without the allocator's slack; close other GPU programs). micro batch x seq: "
        "auto's choice (it goes no longer than the data needs, 512 tokens without --data). longest "
        "seq: at micro batch 1, tight. peak: vram.estimate's highest (training step or evaluation) at "
        "auto's choice, or at micro batch 1 when nothing fits."
    )
    if card.peak_tflops and used:
        lines.append("")
        measured = "; ".join(
            f"{100 * a.mfu:.1f}% for the {a.model} on {a.card_short} at micro batch {a.micro_batch} x "
            f"{a.sequence_len} ({a.file})"
            for a in sorted(used, key=lambda a: (a.matmul_params, a.micro_batch))
        )
        lines.append(
            f"tokens/s = MFU x {card.peak_tflops:g} TFLOP/s (this card's dense bf16 peak) / 6N FLOPs a "
            f"token. MFU as measured with voicetune's profile (benchmarks/results/): {measured}; each "
            f"row takes the run nearest its micro batch x seq, interpolated by model size in between."
        )
    elif not card.peak_tflops:
        lines.append("")
        lines.append("No tokens/s: this card's peak TFLOP/s is unknown; name it with --gpu NAME.")
    for note in advice.notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def _markdown_table(rows: list[list[str]], left: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i in left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join("-" * (w + 2) if i in left else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|"
    )
    return [line(rows[0]), rule, *(line(r) for r in rows[1:])]


# -------------------------------------------------------------------------------------------- the verb


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Which open base models this GPU can fine-tune with QLoRA: for each, whether it fits, the "
        "profile, micro batch and sequence length `train --profile auto` would pick, the longest "
        "sequence that fits, the estimated peak memory, and estimated tokens/s (from measured MFU, "
        "scaled to the card)."
    )
    card = parser.add_mutually_exclusive_group()
    card.add_argument(
        "--gpu",
        default=None,
        metavar="auto|NAME",
        help="auto (this machine's GPU, the default) or a card of configs/gpus.yaml: rtx4060-laptop, "
        "rtx3060, rtx4070, t4, l4, rtx3090, rtx4090, rtx5090, a100-40gb, a100-80gb, h100, h200",
    )
    parser.add_argument(
        "--gpu-mem-gib",
        type=float,
        default=None,
        metavar="N",
        help="the card's free memory in GiB (alone: any card, no speed estimate; with --gpu NAME: "
        "that card with this much free)",
    )
    parser.add_argument(
        "--data",
        default=None,
        metavar="NAME",
        help="prepared data (data/processed/NAME): time for its epochs",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")


def card_from_args(gpu: str | None, memory_gib: float | None) -> Card:
    if memory_gib is not None and memory_gib <= 0:
        raise VoicetuneError(f"--gpu-mem-gib {memory_gib:g}: give the card's memory in GiB, e.g. 8")
    if gpu in (None, "auto"):
        if memory_gib is not None and gpu is None:
            return card_from_memory(memory_gib)
        card = card_from_machine(load_gpus())
        if memory_gib is not None:
            card = replace(card, free_bytes=min(card.total_bytes, int(memory_gib * GIB)))
        return card
    return card_from_spec(find_gpu(gpu, load_gpus()), memory_gib)


def run(args: argparse.Namespace) -> int:
    card = card_from_args(args.gpu, args.gpu_mem_gib)
    data = data_size(args.data) if args.data else None
    advice = advise(card, data=data)
    if args.json:
        print(json.dumps(advice.to_json(), indent=2))
    else:
        print(render(advice), end="")
    return 0


# ---------------------------------------------------------------------------- the README's tables


def readme_blocks(text: str) -> list[tuple[str, int, int]]:
    """(arguments, start, end) of each `<!-- advise-output: ARGS -->` ... `<!-- /advise-output -->`."""
    blocks = []
    for match in README_BEGIN.finditer(text):
        end = text.find(README_END, match.end())
        if end < 0:
            raise VoicetuneError(f"README: '{match.group(0).strip()}' has no '{README_END}' after it")
        blocks.append((match.group("args").strip(), match.end(), end))
    return blocks


def output_for(arguments: str) -> str:
    """What `voicetune advise ARGUMENTS` prints (a named card or memory: never this machine's)."""
    import shlex

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(shlex.split(arguments))
    data = data_size(args.data) if args.data else None
    return render(advise(card_from_args(args.gpu, args.gpu_mem_gib), data=data))


def refresh_readme(path: Path | None = None) -> bool:
    """Rewrite the README's advise tables from the command (after the estimator or a catalogue changed):
    `python -c "from voicetune.train.advise import refresh_readme; refresh_readme()"`. True if changed."""
    path = path or repo_dir() / "README.md"
    text = path.read_text(encoding="utf-8")
    out, last = [], 0
    for arguments, start, end in readme_blocks(text):
        out += [text[last:start], output_for(arguments)]
        last = end
    new = "".join(out) + text[last:]
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text
