"""`voicetune generate`: write, continue or rewrite in the learned voice.

The prompt is built exactly as the prepare step built the training pairs (the prompt templates and
system prompt recorded in the data manifest, else `voicetune.data.pairs`), rendered with the model's own
chat template. One sample streams to the terminal; `--best-of N` draws N samples in one batch and
keeps the one closest to the author's stylometric profile (`voicetune.voice.stylometry`, the same code the
benchmark scores with).

Works on a merged model (merged_models/<run>/) or on base + adapter (a run not merged yet, or
`--model BASE --adapter DIR`).
"""

from __future__ import annotations

import argparse
import math
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field

from voicetune.core.artifacts import SCRIPTS, MergedModel, PreparedData, TrainedRun
from voicetune.core.errors import VoicetuneError
from voicetune.core.manifest import write_text_atomic
from voicetune.core.paths import checkpoint_dir, merged_dir, project_root
from voicetune.core.progress import say
from voicetune.core.prompting import (
    PromptFormat,
    prompt_format_from_settings,
    render_prompt,
    stop_token_ids,
)
from voicetune.core.settings import load_section

if TYPE_CHECKING:
    from voicetune.voice.stylometry import StyleProfile

Mode = Literal["write", "continue", "rewrite"]


class GenerateSettings(BaseModel):
    """The `generate:` section of configs/voicetune.yaml (flags override it)."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = "write"
    words: int = Field(default=200, ge=10, le=20000)  # write mode: the length asked for
    best_of: int = Field(default=1, ge=1, le=64)
    max_new_tokens: int = Field(default=400, ge=1, le=32768)
    temperature: float = Field(default=0.8, ge=0.0, le=5.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    top_k: int = Field(default=50, ge=0)
    repetition_penalty: float = Field(default=1.1, ge=1.0, le=3.0)
    seed: int | None = None
    stream: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    scale: float = Field(default=1.0, ge=0.0, le=4.0)  # style strength: the LoRA scale (1.0 = as trained)


@dataclass(frozen=True)
class ModelSource:
    """What to load: a model folder, optionally with an adapter, and the data it was trained on."""

    model_dir: Path
    adapter_dir: Path | None
    data_dir: Path | None
    label: str


# ---------------------------------------------------------------------------------- pure functions


def prompt_format(data_dir: Path | None) -> PromptFormat:
    """The prompt format recorded by the prepare step for data_dir, else the defaults."""
    if data_dir is None or not (data_dir / "manifest.json").is_file():
        return prompt_format_from_settings(None)
    return PreparedData.load(data_dir).prompt_format


def rerank(candidates: Sequence[str], profile: StyleProfile) -> list[tuple[str, float]]:
    """Candidates with their stylometric distance to the author, closest first (ties keep order).

    A candidate with no words scores +inf and therefore comes last.
    """
    from voicetune.voice.stylometry import style_distance

    scored = [(text, style_distance(text, profile)) for text in candidates]
    order = sorted(range(len(scored)), key=lambda i: (math.isnan(scored[i][1]), scored[i][1], i))
    return [scored[i] for i in order]


def choose_best(
    sampler: Callable[[int], list[str]], n: int, profile: StyleProfile
) -> list[tuple[str, float]]:
    """Draw n candidates from `sampler` and rank them by closeness to the author (best first)."""
    candidates = sampler(n)
    if not candidates:
        raise VoicetuneError("the model produced no text: raise --max-new-tokens or check the prompt")
    return rerank(candidates, profile)


# ----------------------------------------------------------------------------------- resolving input


def resolve_source(run: str | None, model: Path | None, adapter: Path | None) -> ModelSource:
    """--model [--adapter] wins; else --run: its merged model, or base + adapter if not merged yet."""
    if model is not None:
        model = model.resolve()
        if not model.is_dir():
            raise VoicetuneError(f"model folder {model} not found: give a merged model or base model folder")
        if adapter is not None and not adapter.resolve().is_dir():
            raise VoicetuneError(f"adapter folder {adapter} not found: give the run's adapter folder")
        merged_model = MergedModel.find(model)
        data = merged_model.data_dir if merged_model else None
        return ModelSource(model, adapter.resolve() if adapter else None, data, model.name)
    if run is None:
        merged = sorted(p.parent.name for p in (project_root() / "merged_models").glob("*/manifest.json"))
        if len(merged) != 1:
            raise VoicetuneError(
                "which model? give --run NAME or --model DIR (merged models: "
                f"{', '.join(merged) if merged else 'none yet'})",
                exit_code=2,
            )
        run = merged[0]
    merged_model = MergedModel.find(run)
    if merged_model is not None:
        return ModelSource(merged_model.folder, None, merged_model.data_dir, f"{run} (merged)")
    if not TrainedRun.exists(run):
        raise VoicetuneError(
            f"run '{run}' has neither a merged model ({merged_dir(run)}) nor a finished training run "
            f"({checkpoint_dir(run)}): run {SCRIPTS['train']} first",
            exit_code=2,
        )
    trained = TrainedRun.load(run)
    if trained.base_model is None or not trained.base_model.is_dir():
        raise VoicetuneError(
            f"{trained.folder / 'manifest.json'} names base model {trained.base_model}, "
            "which is not a folder: give --model DIR --adapter DIR"
        )
    say(f"generate: {run} is not merged yet: using base + adapter ({trained.adapter_dir})")
    return ModelSource(trained.base_model, trained.adapter_dir, trained.data_dir, f"{run} (base + adapter)")


def load_profile(profile_texts: Path | None, source: ModelSource) -> StyleProfile:
    from voicetune.voice.stylometry import build_profile, load_author_texts

    folder = profile_texts or (source.data_dir / "texts" / "train" if source.data_dir else None)
    if folder is None:
        raise VoicetuneError(
            "--best-of needs the author's texts to rank candidates: pass --profile-texts DIR (.txt files)"
        )
    return build_profile(load_author_texts(folder))


# ------------------------------------------------------------------------------------------ models


def with_adapter_for_scale(source: ModelSource, scale: float) -> ModelSource:
    """A style strength other than 1 needs the adapter apart from its base: a merged run is loaded
    as base + the adapter it was merged from (the scale is relative to the adapter as trained)."""
    if scale == 1.0 or source.adapter_dir is not None:
        return source
    merged = MergedModel.find(source.model_dir)
    if merged is None or merged.base_model is None or merged.adapter_dir is None:
        raise VoicetuneError(
            f"--scale {scale:g} needs the adapter, and {source.model_dir} is a plain model: give "
            f"--model BASE --adapter DIR, or --run NAME of a trained run"
        )
    if not (merged.adapter_dir / "adapter_config.json").is_file():
        raise VoicetuneError(
            f"--scale {scale:g}: the adapter {merged.adapter_dir} is gone: train the run again"
        )
    label = f"{source.label.removesuffix(' (merged)')} (base + adapter x{scale:g})"
    return ModelSource(merged.base_model, merged.adapter_dir, source.data_dir, label)


def load_model(source: ModelSource, device: str = "auto", scale: float = 1.0) -> tuple[Any, Any]:
    """(model, tokenizer) ready for generation; the tokenizer pads on the left for batches. scale: the
    adapter's LoRA scale (style strength), with an adapter only."""
    from voicetune.model.loading import load_for_inference

    return load_for_inference(source.model_dir, source.adapter_dir, device, lora_scale=scale)


def generation_kwargs(model: Any, tokenizer: Any, settings: GenerateSettings) -> dict[str, Any]:
    sampling = settings.temperature > 0
    kwargs: dict[str, Any] = {
        "max_new_tokens": settings.max_new_tokens,
        "do_sample": sampling,
        "repetition_penalty": settings.repetition_penalty,
        "eos_token_id": stop_token_ids(model, tokenizer),
        "pad_token_id": tokenizer.pad_token_id
        if tokenizer.pad_token_id is not None
        else tokenizer.eos_token_id,
    }
    if sampling:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    return kwargs


def _encode(tokenizer: Any, prompt: str, device: Any) -> dict[str, Any]:
    # The chat template already holds the special tokens: do not add a second BOS.
    encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
    return {key: value.to(device) for key, value in encoded.items()}


def sample(model: Any, tokenizer: Any, prompt: str, n: int, settings: GenerateSettings) -> list[str]:
    """n completions of prompt in one batched generate call (num_return_sequences)."""
    import torch

    encoded = _encode(tokenizer, prompt, model.device)
    with torch.inference_mode():
        output = model.generate(
            **encoded, num_return_sequences=n, **generation_kwargs(model, tokenizer, settings)
        )
    new_tokens = output[:, encoded["input_ids"].shape[1] :]
    return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in new_tokens]


def stream(
    model: Any, tokenizer: Any, prompt: str, settings: GenerateSettings, out: TextIO | None = None
) -> str:
    """One completion, printed to `out` (default: stdout) as it is generated; returns the whole text."""
    out = out or sys.stdout
    import torch
    from transformers import TextIteratorStreamer

    encoded = _encode(tokenizer, prompt, model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = {**encoded, **generation_kwargs(model, tokenizer, settings), "streamer": streamer}
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with torch.inference_mode():
                model.generate(**kwargs)
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    pieces = []
    for piece in streamer:
        pieces.append(piece)
        out.write(piece)
        out.flush()
    thread.join()
    out.write("\n")
    if errors:
        raise errors[0]
    return "".join(pieces).strip()


# --------------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    which = parser.add_argument_group("model (one of)")
    which.add_argument("--run", default=None, help="run name: merged_models/<run>, else base + its adapter")
    which.add_argument("--model", type=Path, default=None, help="a model folder (merged or base)")
    which.add_argument("--adapter", type=Path, default=None, help="a LoRA adapter folder to apply on --model")
    task = parser.add_argument_group("what to write")
    task.add_argument(
        "--mode",
        choices=["write", "continue", "rewrite"],
        default=None,
        help="write: from a brief; continue: an opening; rewrite: a text in your voice",
    )
    prompt = task.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", default=None, help="the brief, the opening, or the text to rewrite")
    prompt.add_argument("--prompt-file", type=Path, default=None, help="read the prompt from a file")
    task.add_argument("--words", type=int, default=None, help="write mode: about how many words to ask for")
    task.add_argument("--system-prompt", default=None, help="override the system prompt used in training")
    samp = parser.add_argument_group("sampling")
    samp.add_argument(
        "--best-of", type=int, default=None, help="draw N samples, keep the closest to the author"
    )
    samp.add_argument(
        "--profile-texts",
        type=Path,
        default=None,
        help="the author's .txt files for --best-of (default: the run's training texts)",
    )
    samp.add_argument("--max-new-tokens", type=int, default=None)
    samp.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    samp.add_argument("--top-p", type=float, default=None)
    samp.add_argument("--top-k", type=int, default=None)
    samp.add_argument("--repetition-penalty", type=float, default=None)
    samp.add_argument("--seed", type=int, default=None, help="for reproducible samples")
    samp.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="print tokens as they come (single sample only)",
    )
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    parser.add_argument(
        "--scale",
        type=float,
        default=None,
        help="style strength: the adapter's LoRA scale (1.0 = as trained, 0.5 weaker, 1.5 stronger; "
        "a merged run is then loaded as base + adapter)",
    )
    parser.add_argument(
        "--show-candidates", action="store_true", help="with --best-of: print every candidate"
    )
    parser.add_argument("--output", type=Path, default=None, help="also write the chosen text to this file")
    parser.add_argument(
        "--config", type=Path, default=None, help="project config (default configs/voicetune.yaml)"
    )


def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt_file is not None:
        try:
            return args.prompt_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise VoicetuneError(
                f"cannot read {args.prompt_file} ({exc.strerror}): give a readable text file"
            ) from exc
    if args.prompt is not None:
        return str(args.prompt)
    if not sys.stdin.isatty():
        return sys.stdin.read()
    raise VoicetuneError("nothing to write about: give --prompt TEXT, --prompt-file FILE or text on stdin")


def run(args: argparse.Namespace) -> int:
    overrides = {
        "mode": args.mode,
        "words": args.words,
        "best_of": args.best_of,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "repetition_penalty": args.repetition_penalty,
        "seed": args.seed,
        "stream": args.stream,
        "device": args.device,
        "scale": args.scale,
    }
    settings = load_section(GenerateSettings, "generate", overrides=overrides, source=args.config)
    if args.adapter is not None and args.model is None:
        raise VoicetuneError("--adapter needs --model BASE_DIR (the base it was trained on)")
    text = _read_prompt(args)
    source = with_adapter_for_scale(resolve_source(args.run, args.model, args.adapter), settings.scale)
    fmt = prompt_format(source.data_dir)
    if args.system_prompt is not None:
        fmt = PromptFormat(fmt.templates, args.system_prompt, fmt.completion)
    if settings.best_of > 1 and settings.temperature == 0:
        raise VoicetuneError(
            "--best-of needs sampling: set --temperature above 0 (greedy gives N equal texts)"
        )
    profile = load_profile(args.profile_texts, source) if settings.best_of > 1 else None

    model, tokenizer = load_model(source, settings.device, settings.scale)
    prompt = render_prompt(tokenizer, settings.mode, text, fmt, settings.words)
    if settings.seed is not None:
        from transformers import set_seed

        set_seed(settings.seed)
    print(f"[{source.label}, mode {settings.mode}]", file=sys.stderr)
    if profile is None:
        if settings.stream:
            chosen = stream(model, tokenizer, prompt, settings)
        else:
            chosen = sample(model, tokenizer, prompt, 1, settings)[0]
            print(chosen)
    else:
        ranking = choose_best(
            lambda n: sample(model, tokenizer, prompt, n, settings), settings.best_of, profile
        )
        chosen = ranking[0][0]
        if args.show_candidates:
            for index, (candidate, distance) in enumerate(ranking, 1):
                print(
                    f"--- candidate {index} (style distance {distance:.3f})\n{candidate}\n", file=sys.stderr
                )
        others = ", ".join(f"{d:.2f}" for _, d in ranking[1:])
        print(
            f"[best of {len(ranking)}: style distance {ranking[0][1]:.3f}; others {others}]", file=sys.stderr
        )
        print(chosen)
    if args.output is not None:
        write_text_atomic(args.output, chosen + "\n")
    return 0
