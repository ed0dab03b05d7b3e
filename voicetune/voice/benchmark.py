"""`voicetune benchmark`: does the fine-tuned model write like the author, more than the base model
does, without copying?

Prompts come from the author's held-out test texts only. Every model continues every prompt; the
author's real continuation (cut to the same token budget) is the reference and the ceiling. Measures
(voicetune.voice.stylometry, voicetune.voice.attribution), each with a 95% bootstrap interval over prompts
(voicetune.voice.bootstrap) and a paired comparison with the baseline model:

  perplexity of the held-out text, attribution share, Cosine and Burrows' Delta, the composite style
  distance, sentence-length / punctuation / function-word profiles against the author's, MATTR and
  repetition (closeness to the author's own value), and copying (8-grams found in the training text,
  longest copied span).

The headline is the voice score (voicetune.voice.voice_score): 0 = the other authors' real text, 1 =
the author's own held-out text, calibrated on pieces no system is scored on (held-out windows no
prompt uses plus the validation texts; the last `others_holdout` of each other author, which the
classifier, Delta and the scale never see). The other authors' real text is also scored as a system
("others"), and a style measure judges models only if it tells the author's continuations from it at
this length and count (else "cannot tell at this length").

Output: benchmarks/results/<run>/ with report.md, report.html, PNG plots, results.json
(docs/results_schema.md) and samples.md, written atomically with a manifest; the same inputs and
settings are not recomputed ("up to date").
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from voicetune import __version__
from voicetune.core.artifacts import SCRIPTS, MergedModel, TrainedRun
from voicetune.core.errors import MissingArtifactError, VoicetuneError
from voicetune.core.manifest import (
    atomic_output_dir,
    build_manifest,
    exclusive_lock,
    fingerprint,
    hash_tree,
    is_up_to_date,
    read_manifest,
    sha256_file,
    write_manifest,
)
from voicetune.core.paths import checkpoint_dir, demo_data_dir, merged_dir, results_dir
from voicetune.core.progress import header, say
from voicetune.core.settings import load_section
from voicetune.voice.scoring import (
    AUTHOR,
    OTHERS,
    Context,
    TextScores,
    compute_measures,
    distribution_tests,
    profiles_for_plots,
    score_texts,
    summarize,
)

SCHEMA_VERSION = 2
PREPARE_SCRIPT = SCRIPTS["prepare"]
TRAIN_SCRIPT = SCRIPTS["train"]
MERGE_SCRIPT = SCRIPTS["merge"]
LIBRARIES = ("torch", "transformers", "peft", "scikit-learn", "numpy", "scipy", "matplotlib")

# Defaults that depend on the device: a CPU demo must finish in minutes, a GPU can afford more.
# The voice score's interval narrows with the words each model writes (about 1/sqrt(words)). Since
# the fine-tuned model no longer stops early (train_on_eos, voicetune/train/axolotl_config.py) each
# system writes about 60 words a prompt, and 128 prompts keep the demo within its 15 minutes (the 160
# of before gave the demo author fine-tuned - base +0.34 [0.18, 0.52]; a quarter fewer prompts widens
# an interval by about an eighth). Prompts run in batches of 64: with grouped-query attention reading
# the cache in place (voicetune/model/attention.py) a pass of 128 prompts on 2 cores took 89.4 s in
# batches of 64, 91.3 s in one batch and 99.3 s in batches of 32
# (benchmarks/results/generation-speed-cpu/batch_sizes.json). Prompts are short (prefill is the other
# cost) and perplexity windows overlap less.
CPU_DEFAULTS = {
    "prompts": 128, "prompt_tokens": 40, "max_new_tokens": 80, "batch_size": 64,
    "ppl_max_tokens": 2048, "ppl_window": 512, "ppl_stride": 384,
}  # fmt: skip
GPU_DEFAULTS = {
    "prompts": 160, "prompt_tokens": 128, "max_new_tokens": 192, "batch_size": 64,
    "ppl_max_tokens": 32768, "ppl_window": 1024, "ppl_stride": 512,
}  # fmt: skip


class BenchmarkSettings(BaseModel):
    """The `benchmark:` section of configs/voicetune.yaml (flags override it). None = device default."""

    model_config = ConfigDict(extra="forbid")

    prompts: int | None = Field(default=None, ge=2, le=100_000)
    prompt_tokens: int | None = Field(default=None, ge=8, le=8192)
    max_new_tokens: int | None = Field(default=None, ge=4, le=8192)
    seed: int = 1234
    batch_size: int | None = Field(default=None, ge=1, le=4096)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(default=None, ge=1, le=1024)  # CPU threads for torch; None = torch's default
    temperature: float = Field(default=0.8, ge=0.0, le=5.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    repetition_penalty: float = Field(default=1.0, ge=1.0, le=3.0)
    prompt_format: Literal["auto", "chat", "raw"] = "auto"
    ppl_max_tokens: int | None = Field(default=None, ge=16)
    ppl_window: int | None = Field(default=None, ge=16)
    ppl_stride: int | None = Field(default=None, ge=1)
    bootstrap: int = Field(default=2000, ge=100, le=100_000)
    attribution_segments: int = Field(default=400, ge=20)
    mattr_window: int = Field(default=50, ge=5)
    novelty_n: int = Field(default=8, ge=2, le=64)
    delta_words: int = Field(default=150, ge=10)
    calibration_pieces: int = Field(default=300, ge=8, le=100_000)  # per side, for the voice score
    others_holdout: float = Field(default=0.3, gt=0.0, lt=1.0)  # share of each other author kept unseen
    strengths: list[float] | None = None  # LoRA scales swept (voicetune.voice.strength); None: by device


@dataclass(frozen=True)
class Resolved:
    """Settings with every device-dependent default filled in."""

    values: dict[str, Any]
    device: str

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


def resolve_settings(settings: BenchmarkSettings, device: str) -> Resolved:
    defaults = GPU_DEFAULTS if device == "cuda" else CPU_DEFAULTS
    values = settings.model_dump()
    for key, default in defaults.items():
        if values.get(key) is None:
            values[key] = default
    values["device"] = device
    return Resolved(values, device)


# ------------------------------------------------------------------------------------ inputs


@dataclass
class Plan:
    """What to compare, on which author, written where."""

    name: str
    models: list[Any]  # lm_eval.ModelSpec, baseline first
    train_dir: Path
    test_dir: Path
    others_dir: Path
    out_dir: Path
    data_dir: Path | None = None
    raw_author_texts: bool = False  # True: folders given by the user, cleaned like raw input
    notes: list[str] = field(default_factory=list)


def _parse_model_flag(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise VoicetuneError(
            f"--model {value!r}: write it as NAME=PATH (e.g. --model tuned=merged_models/demo)"
        )
    if name.strip() == AUTHOR:
        raise VoicetuneError(f"--model name {AUTHOR!r} is reserved for the author's own text")
    return name.strip(), Path(path.strip())


def resolve_run(run: str) -> tuple[Any, Any, Path | None, list[str]]:
    """(base spec, fine-tuned spec, data dir, notes) for --run NAME: the merged model, else the
    trained adapter on its base (with a note that merging is the next step)."""
    from voicetune.voice.perplexity import ModelSpec

    merged = MergedModel.find(run)
    if merged is not None:
        base = merged.base_model
        if base is None or not base.is_dir():
            raise VoicetuneError(
                f"{merged.folder / 'manifest.json'} names base model {base}, which is not a folder: run "
                f"{MERGE_SCRIPT} again or compare with --model base=DIR --model tuned={merged.folder}"
            )
        return ModelSpec("base", base), ModelSpec("fine-tuned", merged.folder), merged.data_dir, []
    if not TrainedRun.exists(run):
        what = f"run '{run}' (no merged model at {merged_dir(run)}, no trained adapter)"
        raise MissingArtifactError(what, checkpoint_dir(run), TRAIN_SCRIPT)
    trained = TrainedRun.load(run)
    adapter, base = trained.adapter_dir, trained.base_model
    if not (adapter / "adapter_config.json").is_file():
        raise MissingArtifactError(f"the adapter of run '{run}'", adapter, TRAIN_SCRIPT)
    if base is None or not base.is_dir():
        raise VoicetuneError(
            f"{trained.folder / 'manifest.json'} names base model {base}, which is not a folder"
        )
    note = f"run '{run}' is not merged yet: the fine-tuned model is base + adapter ({MERGE_SCRIPT} merges it)"
    return ModelSpec("base", base), ModelSpec("fine-tuned", base, adapter), trained.data_dir, [note]


def build_plan(args: argparse.Namespace) -> Plan:
    from voicetune.voice.perplexity import resolve_model_path

    models: list[Any] = []
    data_dir: Path | None = None
    notes: list[str] = []
    if args.run:
        base, tuned, data_dir, notes = resolve_run(args.run)
        models += [base, tuned]
    for value in args.model or []:
        name, path = _parse_model_flag(value)
        if any(m.name == name for m in models):
            raise VoicetuneError(
                f"--model {name}=...: two models are named {name!r}; give each a unique name"
            )
        models.append(resolve_model_path(name, path))
    if not models:
        raise VoicetuneError(
            "nothing to compare: give --run NAME, or --model NAME=PATH (any number)", exit_code=2
        )
    if args.baseline:
        if not any(m.name == args.baseline for m in models):
            raise VoicetuneError(
                f"--baseline {args.baseline}: no model of that name ({[m.name for m in models]})"
            )
        models.sort(key=lambda m: m.name != args.baseline)
    if args.author_train or args.author_test:
        if not (args.author_train and args.author_test):
            raise VoicetuneError("give both --author-train DIR and --author-test DIR (the held-out texts)")
        train_dir, test_dir = Path(args.author_train).resolve(), Path(args.author_test).resolve()
        raw = True
    elif data_dir is not None:
        from voicetune.core.manifest import require_manifest

        require_manifest(data_dir, "prepared data", PREPARE_SCRIPT)
        train_dir, test_dir = data_dir / "texts" / "train", data_dir / "texts" / "test"
        raw = False
    else:
        raise VoicetuneError(
            "which author? give --author-train DIR --author-test DIR (folders of .txt), or --run NAME",
            exit_code=2,
        )
    for folder, flag in ((train_dir, "--author-train"), (test_dir, "--author-test")):
        if not folder.is_dir():
            raise VoicetuneError(
                f"{folder} is not a folder ({flag}): give a folder of the author's .txt files"
            )
    if train_dir == test_dir:
        raise VoicetuneError(
            f"--author-train and --author-test are the same folder ({train_dir}): hold texts out"
        )
    others = Path(args.others).resolve() if args.others else demo_data_dir() / "others"
    name = args.name or args.run or "comparison"
    out = Path(args.out).resolve() if args.out else results_dir(name)
    return Plan(name, models, train_dir, test_dir, others, out, data_dir, raw, notes)


def _model_identity(spec: Any) -> dict[str, Any]:
    """Enough to know the weights changed, without hashing gigabytes on every run: the model's own
    manifest fingerprint when it has one, else config.json's hash and the weight files' sizes and times."""
    identity: dict[str, Any] = {"name": spec.name, "model_dir": str(spec.model_dir)}
    manifest = read_manifest(spec.model_dir)
    if manifest and manifest.get("fingerprint"):
        identity["fingerprint"] = manifest["fingerprint"]
    else:
        config = spec.model_dir / "config.json"
        identity["config"] = sha256_file(config) if config.is_file() else None
        identity["weights"] = {
            p.name: [p.stat().st_size, int(p.stat().st_mtime)]
            for p in sorted(spec.model_dir.glob("*.safetensors")) + sorted(spec.model_dir.glob("*.bin"))
        }
    if spec.adapter_dir is not None:
        # The adapter's own files only: checkpoint-*/ sub-folders (optimizer states) can be gigabytes.
        identity["adapter"] = {
            p.name: sha256_file(p) for p in sorted(spec.adapter_dir.iterdir()) if p.is_file()
        }
    return identity


def _style_strength(spec: Any) -> float | None:
    """The LoRA scale a merged model was folded in at (its merge manifest), 1.0 for base + adapter,
    None for a plain model."""
    from voicetune.core.artifacts import MergedModel

    if spec.adapter_dir is not None:
        return 1.0
    merged = MergedModel.find(Path(spec.model_dir))
    return merged.lora_scale if merged is not None else None


# ------------------------------------------------------------------------------------ prompts


@dataclass(frozen=True)
class PromptItem:
    """One prompt from a held-out document, and the author's own continuation of it."""

    document: int
    prompt: str
    reference: str


# A continuation "ended early" when it has fewer words than this share of the author's own text for the
# same token budget: a model trained to stop at passage ends wrote such pieces (too short to judge).
ENDED_EARLY_SHARE = 0.6


def continuation_lengths(texts: Sequence[str], reference_texts: Sequence[str]) -> dict[str, float]:
    """Mean words of a model's continuations and the share that ended early (ENDED_EARLY_SHARE)."""
    words = [len(text.split()) for text in texts]
    if not words:
        return {"mean_words": 0.0, "ended_early_share": 0.0}
    floor = (
        ENDED_EARLY_SHARE * statistics.mean(len(r.split()) for r in reference_texts)
        if reference_texts
        else 0.0
    )
    return {
        "mean_words": round(statistics.mean(words), 1),
        "ended_early_share": round(sum(count < floor for count in words) / len(words), 3),
    }


def _cut_to_tokens(text: str, budget: int, count_tokens: Callable[[str], int]) -> str:
    """The longest prefix of whole words of `text` that fits in `budget` tokens."""
    import re

    ends = [m.end() for m in re.finditer(r"\S+", text)]
    lo, hi = 0, len(ends)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(text[: ends[mid - 1]]) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return text[: ends[lo - 1]] if lo else ""


def select_prompts(
    texts: Sequence[str],
    n: int,
    prompt_tokens: int,
    reference_tokens: int,
    seed: int,
    count_tokens: Callable[[str], int],
) -> list[PromptItem]:
    """Non-overlapping (prompt, reference) windows from the held-out texts, n of them drawn with the
    seed (in document order). A prompt is whole sentences, about prompt_tokens tokens, so every
    continuation starts a new sentence; its reference is the text that follows, cut at a word to
    reference_tokens tokens (the budget the models get)."""
    windows = held_out_windows(texts, prompt_tokens, reference_tokens, count_tokens)
    return split_prompts(windows, n, seed)[0]


def split_prompts(
    windows: Sequence[PromptItem], n: int, seed: int
) -> tuple[list[PromptItem], list[PromptItem]]:
    """(n windows drawn with the seed, the rest), both in document order. The rest is held-out text
    that no prompt touches: the voice score calibrates its ceiling on it."""
    if len(windows) <= n:
        return list(windows), []
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(len(windows), size=n, replace=False).tolist())
    return (
        [w for i, w in enumerate(windows) if i in chosen],
        [w for i, w in enumerate(windows) if i not in chosen],
    )


def held_out_windows(
    texts: Sequence[str],
    prompt_tokens: int,
    reference_tokens: int,
    count_tokens: Callable[[str], int],
) -> list[PromptItem]:
    """Every (prompt, reference) window of the held-out texts, in document order (select_prompts)."""
    from voicetune.voice.stylometry import paragraphs, sentences

    windows: list[PromptItem] = []
    for doc, text in enumerate(texts):
        units: list[tuple[str, bool, int]] = []  # (sentence, starts a paragraph, tokens)
        for paragraph in paragraphs(text):
            for i, sentence in enumerate(sentences(paragraph)):
                units.append((sentence, i == 0, count_tokens(sentence)))

        def join(part: Sequence[tuple[str, bool, int]]) -> str:
            out = ""
            for sentence, new_paragraph, _ in part:
                out += ("\n\n" if new_paragraph else " ") + sentence if out else sentence
            return out

        i = 0
        while i < len(units):
            j, used = i, 0
            while j < len(units) and used < prompt_tokens:
                used += units[j][2]
                j += 1
            k, more = j, 0
            while k < len(units) and more < reference_tokens:
                more += units[k][2]
                k += 1
            if more < reference_tokens or used > 3 * prompt_tokens:
                if more < reference_tokens:
                    break  # the document ends before a full reference
                i = j  # one huge "sentence" (a list, a table): skip it
                continue
            reference = _cut_to_tokens(join(units[j:k]), reference_tokens, count_tokens)
            windows.append(PromptItem(doc, join(units[i:j]), reference))
            i = k
    return windows


# ------------------------------------------------------------------------------------ the run


def _load_texts(folder: Path, raw: bool) -> list[str]:
    from voicetune.voice.attribution import clean_raw_text
    from voicetune.voice.stylometry import load_author_texts

    texts = load_author_texts(folder)
    if raw:
        texts = [t for t in (clean_raw_text(t) for t in texts) if t.strip()]
        if not texts:
            raise VoicetuneError(f"{folder}: nothing is left after cleaning; give the author's prose")
    return texts


def _validation_texts(plan: Plan) -> list[str]:
    """The prepared data's validation texts (never trained on), if there are any."""
    if plan.data_dir is None or not (plan.data_dir / "texts" / "val").is_dir():
        return []
    return _load_texts(plan.data_dir / "texts" / "val", False)


def plan_prompts(
    windows: Sequence[PromptItem], val_texts: Sequence[str], cfg: Resolved
) -> tuple[list[PromptItem], list[str]]:
    """(prompts, the author's calibration texts). Prompts are drawn from the held-out windows; the
    windows left over and the validation texts calibrate the voice score's ceiling. When those would
    give fewer pieces than there are prompts, half the windows are kept back for calibration."""
    reference_words = 0.75 * cfg.max_new_tokens  # about how long a piece will be
    spare_words = sum(len(t.split()) for t in val_texts)
    n = min(cfg.prompts, len(windows))
    window_words = (
        statistics.mean(len(w.prompt.split()) + len(w.reference.split()) for w in windows) if windows else 0
    )
    if spare_words + max(0, len(windows) - n) * window_words < n * reference_words:
        n = min(n, max(2, len(windows) // 2))
        say(f"note: {len(windows)} held-out windows: {n} become prompts, the rest calibrate the voice score")
    items, rest = split_prompts(windows, n, cfg.seed)
    return items, [f"{w.prompt}\n\n{w.reference}" for w in rest] + list(val_texts)


def _render_prompts(
    tokenizer: Any, items: Sequence[PromptItem], fmt: Any, mode: str
) -> tuple[list[str], bool]:
    """(prompt strings, raw?) for one model: the training pairs' 'continue' prompt in the model's chat
    template, or the plain text for raw mode / models without a template."""
    from voicetune.core.prompting import render_prompt

    if mode == "raw" or fmt.completion or getattr(tokenizer, "chat_template", None) is None:
        if mode == "chat":
            raise VoicetuneError("--prompt-format chat: this model's tokenizer has no chat template; use raw")
        return [item.prompt for item in items], True
    return [render_prompt(tokenizer, "continue", item.prompt, fmt) for item in items], False


def run_benchmark(plan: Plan, settings: BenchmarkSettings) -> dict[str, Any]:
    """Everything but writing: returns the results.json payload (plus 'samples' and 'plots' data)."""
    from voicetune.model.generate import prompt_format
    from voicetune.model.loading import pick_device
    from voicetune.voice import perplexity as lm_eval
    from voicetune.voice.attribution import drop_the_author, load_other_authors

    started = time.monotonic()
    timings: dict[str, float] = {}
    device = pick_device(settings.device)
    cfg = resolve_settings(settings, device)
    if cfg.threads and device == "cpu":
        import torch

        torch.set_num_threads(cfg.threads)

    cpu_started = time.process_time()

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        timings[name] = round(now - since, 2)
        return now

    header("benchmark: reading the author's texts")
    t = time.monotonic()
    train_texts = _load_texts(plan.train_dir, plan.raw_author_texts)
    test_texts = _load_texts(plan.test_dir, plan.raw_author_texts)
    others, dropped = drop_the_author(load_other_authors(plan.others_dir), train_texts + test_texts)
    for note in dropped:
        say(f"note: {note}")
        plan.notes.append(note)
    say(
        f"author: {len(train_texts)} training texts ({sum(len(x.split()) for x in train_texts):,} words), "
        f"{len(test_texts)} held-out ({sum(len(x.split()) for x in test_texts):,} words); "
        f"other authors: {', '.join(others)}"
    )
    from transformers import AutoTokenizer  # tokenizer only: prompts are cut in the baseline's tokens

    baseline = plan.models[0]
    base_tokenizer = AutoTokenizer.from_pretrained(str(lm_eval.tokenizer_dir(baseline)))
    all_windows = held_out_windows(
        test_texts,
        cfg.prompt_tokens,
        cfg.max_new_tokens,
        lambda s: len(base_tokenizer(s, add_special_tokens=False)["input_ids"]),
    )
    val_texts = _validation_texts(plan)
    items, calibration_texts = plan_prompts(all_windows, val_texts, cfg)
    if len(items) < 2:
        raise VoicetuneError(
            f"the held-out texts in {plan.test_dir} are too short for prompts of {cfg.prompt_tokens} tokens "
            f"+ continuations of {cfg.max_new_tokens}: lower --prompt-tokens/--max-new-tokens or add text"
        )
    if len(items) < cfg.prompts:
        say(f"note: the held-out text holds only {len(items)} prompts of that size (asked for {cfg.prompts})")
    t = lap("read_and_prompts", t)

    fmt = prompt_format(plan.data_dir)
    generations: dict[str, list[str]] = {}
    windows: dict[str, Any] = {}
    prompt_modes: dict[str, str] = {}
    for spec in plan.models:
        header(f"benchmark: model '{spec.name}' ({spec.describe()}) on {device}")
        model, tokenizer = lm_eval.load_model(spec, device)
        windows[spec.name] = lm_eval.perplexity_windows(
            model, tokenizer, test_texts, cfg.ppl_max_tokens, cfg.ppl_window, cfg.ppl_stride,
            batch_size=max(1, min(8, cfg.batch_size // 2)), desc=f"{spec.name}: perplexity",
        )  # fmt: skip
        prompts, raw = _render_prompts(tokenizer, items, fmt, cfg.prompt_format)
        prompt_modes[spec.name] = "raw" if raw else "chat"
        generations[spec.name] = lm_eval.generate_continuations(
            model, tokenizer, prompts, cfg.max_new_tokens, cfg.temperature, cfg.top_p,
            cfg.repetition_penalty, cfg.seed, cfg.batch_size, add_special_tokens=raw,
            desc=f"{spec.name}: generate",
        )  # fmt: skip
        say(f"{spec.name}: perplexity {windows[spec.name].perplexity:.2f}; {len(prompts)} continuations")
        del model, tokenizer
        lm_eval.release_memory()
        t = lap(f"model:{spec.name}", t)

    # style strength: the fine-tuned adapter at a few more LoRA scales (voicetune.voice.strength)
    from voicetune.voice import strength

    sweep = None
    scales = strength.default_scales(device) if cfg.strengths is None else tuple(cfg.strengths)
    if len(plan.models) == 2 and scales:
        tuned = plan.models[1]
        sweep = strength.sweep(
            cfg, tuned, scales, items, fmt, test_texts, train_texts,
            others, calibration_texts, (generations[tuned.name], windows[tuned.name]),
        )  # fmt: skip
        t = lap("strength_sweep", t)

    header("benchmark: stylometry and attribution")
    results = analyse(
        cfg, plan, train_texts, test_texts, others, items, generations, windows, baseline.name,
        calibration_texts,
    )  # fmt: skip
    results["models"] = [
        {
            "name": spec.name,
            "model_dir": str(spec.model_dir),
            "adapter_dir": str(spec.adapter_dir) if spec.adapter_dir else None,
            "prompt_format": prompt_modes[spec.name],
            "style_strength": _style_strength(spec),
            **continuation_lengths(generations[spec.name], [item.reference for item in items]),
            "perplexity_blocks": len(windows[spec.name].nll),
            "perplexity_tokens": int(windows[spec.name].tokens.sum()),
        }
        for spec in plan.models
    ]
    results["strength_sweep"] = sweep
    lap("stylometry", t)
    timings["total"] = round(time.monotonic() - started, 2)
    # CPU seconds of this process (all threads): comparable across machines that are busy or idle.
    timings["cpu_total"] = round(time.process_time() - cpu_started, 2)
    results["timing_seconds"] = timings
    return results


def split_other_authors(
    others: Mapping[str, Sequence[str]], held_out_share: float
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """({author: reference texts}, {author: held-out texts}): the last held_out_share of each other
    author's paragraphs is kept away from the classifier, Delta and the voice scale's lines, so the
    "others" pieces are as new to every measure as the author's held-out text is."""
    from voicetune.voice.stylometry import paragraphs

    reference: dict[str, list[str]] = {}
    held_out: dict[str, list[str]] = {}
    for name, texts in others.items():
        paras = [p for t in texts for p in paragraphs(t)]
        total = sum(len(p.split()) for p in paras)
        running, cut = 0, len(paras)
        for i, p in enumerate(paras):
            if running >= (1 - held_out_share) * total:
                cut = i
                break
            running += len(p.split())
        reference[name] = ["\n\n".join(paras[:cut])]
        held_out[name] = ["\n\n".join(paras[cut:])]
    return reference, held_out


def other_author_pieces(
    held_out: Mapping[str, Sequence[str]], words: int, count: int, seed: int
) -> list[str]:
    """`count` pieces of `words` words from the other authors' held-out text, taken from each author in
    turn (as even a mix as the text allows), in a seeded order."""
    from voicetune.voice.voice_score import cut_pieces

    per_author = [cut_pieces(texts, words, count, seed=seed + i) for i, texts in enumerate(held_out.values())]
    mixed: list[str] = []
    for i in range(max((len(p) for p in per_author), default=0)):
        mixed += [p[i] for p in per_author if i < len(p)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(mixed))
    return [mixed[i] for i in order][:count]


def voice_scores(
    cfg: Resolved,
    train_texts: Sequence[str],
    others_reference: Mapping[str, Sequence[str]],
    calibration_texts: Sequence[str],
    others_calibration: Sequence[str],
    words: int,
    pieces: Mapping[str, Sequence[str]],
    baseline: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(voice_score, voice_scale) of results.json: every system on the calibrated scale (0 = the
    other authors, 1 = the author's held-out text), and fine-tuned - base paired over prompts. The
    scale is fitted on pieces no system is scored on (voicetune.voice.voice_score)."""
    from voicetune.voice import voice_score as vs

    author_calibration = vs.cut_pieces(calibration_texts, words, cfg.calibration_pieces, seed=cfg.seed)
    count = len(pieces[AUTHOR])
    try:
        scale = vs.fit_voice_scale(
            author_calibration, others_calibration, author_reference=train_texts,
            other_reference=others_reference, seed=cfg.seed, n_boot=cfg.bootstrap, check_count=count,
        )  # fmt: skip
    except VoicetuneError as exc:  # too little held-out text to calibrate: say so, score nothing
        say(f"note: no voice score: {exc}")
        empty = {"value": None, "ci_low": None, "ci_high": None, "n": count}
        return {name: dict(empty) for name in pieces}, {"error": str(exc), "in_sample": False}
    voice = {name: vs.score_pieces(scale, texts, seed=cfg.seed).to_dict() for name, texts in pieces.items()}
    models = [name for name in pieces if name not in (AUTHOR, OTHERS)]
    challengers = [name for name in models if name != baseline]
    differences = {
        name: vs.score_difference(scale, pieces[name], pieces[baseline], seed=cfg.seed).to_dict()
        for name in challengers
    }
    if challengers:
        voice["difference"] = differences[challengers[0]]
    from voicetune.voice.stylometry import words as tokenize

    info = scale.to_dict()
    info.update(
        {
            "difference_of": f"{challengers[0]} - {baseline}" if challengers else None,
            "differences": differences,
            "in_sample": False,
            "scored_pieces": {name: len(texts) for name, texts in pieces.items()},
            "words": {name: sum(len(tokenize(t)) for t in texts) for name, texts in pieces.items()},
        }
    )
    return voice, info


def analyse(
    cfg: Resolved,
    plan: Plan,
    train_texts: Sequence[str],
    test_texts: Sequence[str],
    others: Mapping[str, Sequence[str]],
    items: Sequence[PromptItem],
    generations: Mapping[str, Sequence[str]],
    windows: Mapping[str, Any],
    baseline: str,
    calibration_texts: Sequence[str],
) -> dict[str, Any]:
    """The torch-free half: score every continuation against the author and build results.json
    (without "models" and "timing_seconds", which the caller adds). generations: model -> one text
    per item; windows: model -> lm_eval.WindowScores of the held-out text; calibration_texts: the
    author's held-out text that no prompt uses (the voice score's ceiling is calibrated on it)."""
    from voicetune.voice import stylometry as st
    from voicetune.voice.attribution import train_attributor

    references = [item.reference for item in items]
    piece_words = max(5, int(statistics.median([len(r.split()) for r in references])))
    segment = max(30, piece_words)  # the classifier's and Delta's segments: at least 30 words
    others_reference, others_held_out = split_other_authors(others, cfg.others_holdout)
    other_pieces = other_author_pieces(
        others_held_out, piece_words, len(items) + cfg.calibration_pieces, cfg.seed
    )
    others_eval, others_calibration = other_pieces[: len(items)], other_pieces[len(items) :]
    profile = st.build_profile(train_texts)
    delta = st.fit_delta_space(
        {"(author)": train_texts, **others_reference}, segment_size=segment, n_words=cfg.delta_words,
        seed=cfg.seed,
    )  # fmt: skip
    author_z = delta.zscores([w for text in train_texts for w in st.words(text)])
    attributor = train_attributor(
        train_texts,
        others_reference,
        segment_size=segment,
        max_segments_per_class=cfg.attribution_segments,
        seed=cfg.seed,
    )
    ctx = Context(
        profile, delta, author_z, attributor, st.NoveltyIndex(train_texts), cfg.mattr_window, cfg.novelty_n
    )
    systems: dict[str, TextScores] = {name: score_texts(texts, ctx) for name, texts in generations.items()}
    systems[AUTHOR] = score_texts(references, ctx)
    systems[OTHERS] = score_texts(others_eval, ctx)
    measures, comparisons = compute_measures(systems, windows, ctx, baseline, cfg.bootstrap, cfg.seed)
    longest = {name: float(np.max(s.longest_span, initial=0)) for name, s in systems.items()}
    voice, scale_info = voice_scores(
        cfg, train_texts, others_reference, calibration_texts, others_calibration, piece_words,
        {**generations, AUTHOR: references, OTHERS: others_eval}, baseline,
    )  # fmt: skip
    return {
        "schema_version": SCHEMA_VERSION,
        "voicetune_version": __version__,
        "run": plan.name,
        "question": "Does the fine-tuned model write like the author, more than the base model does, "
        "without copying?",
        "settings": cfg.values,
        "author": {
            "train_dir": str(plan.train_dir),
            "test_dir": str(plan.test_dir),
            "data_dir": str(plan.data_dir) if plan.data_dir else None,
            "train_texts": len(train_texts),
            "train_words": profile.n_words,
            "test_texts": len(test_texts),
            "test_words": sum(len(st.words(x)) for x in test_texts),
        },
        "others": {
            "dir": str(plan.others_dir),
            "authors": {k: len(v) for k, v in others.items()},
            "held_out_share": cfg.others_holdout,
            "pieces": len(others_eval),
        },
        "models": [{"name": name} for name in generations],
        "baseline": baseline,
        "reference": AUTHOR,
        "prompts": {
            "count": len(items),
            "prompt_tokens": cfg.prompt_tokens,
            "max_new_tokens": cfg.max_new_tokens,
            "reference_words_median": segment,
        },
        "attribution": attributor.summary(),
        "delta": {"words": len(delta.vocabulary), "segment_words": segment},
        "measures": measures,
        "comparisons": comparisons,
        "tests": distribution_tests(systems, ctx),
        "summary": summarize(measures, comparisons, baseline, longest),
        "voice_score": voice,
        "voice_scale": scale_info,
        "notes": list(plan.notes),
        "timing_seconds": {},
        "samples": [
            {
                "index": i,
                "document": item.document,
                "prompt": item.prompt,
                "continuations": {
                    AUTHOR: item.reference,
                    **{name: gens[i] for name, gens in generations.items()},
                },
                "other_author": others_eval[i] if i < len(others_eval) else None,
            }
            for i, item in enumerate(items)
        ],
        "profiles": profiles_for_plots(systems, ctx),
    }


# ------------------------------------------------------------------------------------ CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Compare models on the author's held-out text: perplexity, attribution, Delta, style profiles, "
        "vocabulary, repetition and copying, each with a 95% bootstrap interval; writes "
        "benchmarks/results/<run>/ (report.md, report.html, PNG plots, results.json, samples.md)."
    )
    src = parser.add_argument_group("what to compare")
    src.add_argument(
        "--run", help="a trained run: base vs its merged model (or base + adapter if not merged)"
    )
    src.add_argument(
        "--model",
        action="append",
        metavar="NAME=PATH",
        help="a model to compare (HF folder, or adapter folder naming its base); repeatable",
    )
    src.add_argument(
        "--baseline", help="the model the others are compared with (default: base, or the first)"
    )
    src.add_argument("--author-train", metavar="DIR", help="the author's training texts (.txt), any author")
    src.add_argument(
        "--author-test", metavar="DIR", help="the author's held-out texts (.txt): prompts come from here"
    )
    src.add_argument(
        "--others",
        metavar="DIR",
        help="other authors for attribution, one sub-folder of .txt each (default: data/demo/others)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--name", help="results folder name without --run (default: comparison)")
    out.add_argument(
        "--out", metavar="DIR", help="results folder (default: benchmarks/results/<run or name>)"
    )
    out.add_argument("--force", action="store_true", help="recompute even when the results are up to date")
    out.add_argument(
        "--config", type=Path, default=None, help="project config (default: configs/voicetune.yaml)"
    )
    knobs = parser.add_argument_group("settings (override the config's benchmark: section)")
    knobs.add_argument("--prompts", type=int, help="number of prompts (default: 160)")
    knobs.add_argument(
        "--prompt-tokens",
        type=int,
        help="prompt length in tokens, whole sentences (default: 40 on CPU, 128 on GPU)",
    )
    knobs.add_argument(
        "--max-new-tokens", type=int, help="continuation length (default: 80 on CPU, 192 on GPU)"
    )
    knobs.add_argument("--seed", type=int, help="seed for prompts, sampling and bootstrap (default 1234)")
    knobs.add_argument("--batch-size", type=int, help="generation batch (default: 160 on CPU, 64 on GPU)")
    knobs.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    knobs.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's choice; on a CPU shared with other work, 1 can be "
        "several times faster)",
    )
    knobs.add_argument("--temperature", type=float, help="sampling temperature, 0 = greedy (default 0.8)")
    knobs.add_argument("--top-p", type=float, help="nucleus sampling (default 0.95)")
    knobs.add_argument("--repetition-penalty", type=float, help="default 1.0 (none: repetition is measured)")
    knobs.add_argument(
        "--prompt-format",
        choices=["auto", "chat", "raw"],
        help="auto: the training pairs' chat prompt when the model has a chat template",
    )
    knobs.add_argument(
        "--ppl-max-tokens", type=int, help="held-out tokens scored (default: 2048 CPU, 32768 GPU)"
    )
    knobs.add_argument("--bootstrap", type=int, help="bootstrap replicates (default 2000)")
    knobs.add_argument(
        "--strengths",
        type=_scales,
        metavar="S,S,...",
        help="style strength: LoRA scales of the fine-tuned adapter to sweep besides its own, e.g. 0.5,1.5 "
        "('none': no sweep; default: none on CPU, where each costs a generation pass, 0.5,1.5,2 on GPU)",
    )


def _scales(value: str) -> list[float]:
    if value.strip().lower() in ("none", "0", ""):
        return []
    try:
        scales = [float(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}': give scales like 0.5,1.5 (or none)") from None
    if any(not 0 < x <= 4 for x in scales):
        raise argparse.ArgumentTypeError(f"'{value}': each scale must be in (0, 4]")
    return scales


_FLAG_KEYS = (
    "prompts", "prompt_tokens", "max_new_tokens", "seed", "batch_size", "device", "threads", "temperature",
    "top_p", "repetition_penalty", "prompt_format", "ppl_max_tokens", "bootstrap", "strengths",
)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from voicetune.core.privacy import apply_private_env

    apply_private_env()
    settings = load_section(
        BenchmarkSettings,
        "benchmark",
        overrides={k: getattr(args, k, None) for k in _FLAG_KEYS},
        source=args.config,
    )
    plan = build_plan(args)
    from voicetune.model.loading import pick_device

    device = pick_device(settings.device)
    cfg = resolve_settings(settings, device)
    inputs = {
        "models": [_model_identity(m) for m in plan.models],
        "author_train": hash_tree(plan.train_dir, [".txt"]),
        "author_test": hash_tree(plan.test_dir, [".txt"]),
        "others": hash_tree(plan.others_dir, [".txt"]),
        "raw_author_texts": plan.raw_author_texts,
    }
    key = fingerprint("benchmark", SCHEMA_VERSION, __version__, cfg.values, inputs)
    if not args.force and is_up_to_date(plan.out_dir, key):
        say(f"benchmark: up to date at {plan.out_dir} (same models, texts and settings; --force to redo)")
        return 0
    for note in plan.notes:
        say(f"note: {note}")
    with exclusive_lock(plan.out_dir, "writing"):
        results = run_benchmark(plan, settings)
        from voicetune.voice.blind_test import keep_answers
        from voicetune.voice.report import write_report

        with atomic_output_dir(plan.out_dir) as tmp:
            keep_answers(plan.out_dir, tmp)  # the person's blind-test answers outlive a re-run
            written = write_report(tmp, results)
            write_manifest(
                tmp,
                build_manifest(
                    "benchmark",
                    key,
                    settings=cfg.values,
                    inputs={"models": inputs["models"], "author_train": str(plan.train_dir),
                            "author_test": str(plan.test_dir), "others": str(plan.others_dir)},
                    outputs={name: sha256_file(tmp / name) for name in written},
                    libraries=LIBRARIES,
                    seconds=results["timing_seconds"].get("total"),
                ),
            )  # fmt: skip
    say(f"benchmark: wrote {plan.out_dir}/report.md (and report.html, results.json, samples.md, plots)")
    for line in headline_lines(results):
        say(line)
    return 0


def headline_lines(results: Mapping[str, Any]) -> list[str]:
    """The answer in a few lines (printed at the end and at the top of the report)."""
    from voicetune.voice.report import voice_headline

    lines = [voice_headline(results).replace("**", "")]
    baseline = results["baseline"]
    for model, s in results["summary"].items():
        total = len(s["better"]) + len(s["worse"]) + len(s["no_clear_difference"])
        lines.append(
            f"{model} vs {baseline}: closer to the author on {len(s['better'])} of {total} measures, "
            f"further on {len(s['worse'])}, no clear difference on {len(s['no_clear_difference'])} "
            f"(95% bootstrap intervals); copying: {s['copying']}."
        )
    return lines
