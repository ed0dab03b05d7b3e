"""The benchmark's torch part, kept small: load a model, score held-out text, sample continuations.

- `load_model`: an HF model folder, or an adapter folder (adapter_config.json names its base) or an
  explicit base + adapter; the adapter is folded into the weights in memory for speed.
- `perplexity_windows`: negative log-likelihood of the author's held-out text in sliding windows
  (each scored token sees at least `window - stride` tokens of context), per window, so the
  benchmark can bootstrap over windows.
- `generate_continuations`: batched sampling (the prompts' shared start cached once, prompts batched
  by length, a fixed seed per batch), on CPU or GPU; the same prompts, settings and seed give the
  same texts.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voicetune.core.errors import VoicetuneError
from voicetune.core.progress import progress
from voicetune.core.prompting import stop_token_ids


@dataclass(frozen=True)
class ModelSpec:
    """One model to compare: a name for the report, the weights folder, and an optional adapter."""

    name: str
    model_dir: Path
    adapter_dir: Path | None = None

    def describe(self) -> str:
        return f"{self.model_dir} + adapter {self.adapter_dir}" if self.adapter_dir else str(self.model_dir)


def resolve_model_path(name: str, path: Path) -> ModelSpec:
    """A `--model name=PATH` entry: an HF model folder, or an adapter folder whose
    adapter_config.json names its base (an absolute path, or one relative to the adapter)."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise VoicetuneError(f"--model {name}={path}: no such folder; give an HF model or adapter folder")
    config_file = path / "adapter_config.json"
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise VoicetuneError(f"{config_file} is not valid JSON: re-save the adapter") from exc
        declared = str(config.get("base_model_name_or_path") or "")
        candidates = [Path(declared).expanduser()] if declared else []
        if declared and not Path(declared).is_absolute():
            candidates.append(path / declared)
        base = next((c.resolve() for c in candidates if c.is_dir()), None)
        if base is None:
            raise VoicetuneError(
                f"{config_file} names base model {declared!r}, which is not a folder here: set "
                "base_model_name_or_path to the base model's folder"
            )
        return ModelSpec(name, base, path)
    if not (path / "config.json").is_file():
        raise VoicetuneError(
            f"--model {name}={path}: neither config.json (a model) nor adapter_config.json (an adapter) "
            "is in that folder"
        )
    return ModelSpec(name, path, None)


def tokenizer_dir(spec: ModelSpec) -> Path:
    """The adapter's own tokenizer when it saved one (a fine-tune may add tokens or a chat template)."""
    from voicetune.model.loading import tokenizer_folder

    return tokenizer_folder(spec.model_dir, spec.adapter_dir)


def load_model(spec: ModelSpec, device: str) -> tuple[Any, Any]:
    """(model in eval mode on device, tokenizer padding on the left); the adapter folded in."""
    from voicetune.model.loading import load_for_inference

    return load_for_inference(spec.model_dir, spec.adapter_dir, device, merge_adapter=True)


@dataclass(frozen=True)
class WindowScores:
    """Summed negative log-likelihood (nats) and token count of each block of consecutive scored
    tokens (the units the benchmark bootstraps over)."""

    nll: np.ndarray
    tokens: np.ndarray

    @property
    def perplexity(self) -> float:
        total = float(self.tokens.sum())
        return math.exp(float(self.nll.sum()) / total) if total else math.nan


def _token_budget(lengths: Sequence[int], max_tokens: int) -> list[int]:
    """Split max_tokens across documents as evenly as their lengths allow (water-filling)."""
    budget = [0] * len(lengths)
    left = max_tokens
    open_docs = [i for i, n in enumerate(lengths) if n > 1]
    while left > 0 and open_docs:
        share = max(1, left // len(open_docs))
        for i in list(open_docs):
            take = min(share, lengths[i] - budget[i], left)
            budget[i] += take
            left -= take
            if budget[i] >= lengths[i]:
                open_docs.remove(i)
            if left == 0:
                break
    return budget


def perplexity_windows(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    max_tokens: int,
    window: int = 512,
    stride: int = 256,
    batch_size: int = 4,
    block_tokens: int = 128,
    desc: str = "perplexity",
) -> WindowScores:
    """Score up to max_tokens tokens of `texts` (spread evenly over the documents, each from its
    start) in sliding windows of `window` tokens moved by `stride`; every token but a document's first
    is scored exactly once, with at least window - stride tokens of context after the first window.
    Results come in blocks of block_tokens consecutive scored tokens."""
    import torch

    if stride > window or stride < 1:
        raise VoicetuneError(f"perplexity stride {stride} must be between 1 and the window ({window})")
    docs = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    budget = _token_budget([len(d) for d in docs], max_tokens)
    pieces: list[tuple[list[int], int]] = []  # (input ids, how many trailing tokens to score)
    for ids, keep in zip(docs, budget, strict=True):
        ids = ids[:keep]
        scored_until = 1  # the first token has no context
        begin = 0
        while scored_until < len(ids):
            end = min(begin + window, len(ids))
            pieces.append((ids[begin:end], end - scored_until))
            scored_until = end
            begin += stride
    if not pieces:
        raise VoicetuneError("no held-out text to score: the author's test texts are empty")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    device = next(model.parameters()).device
    nll: list[float] = []
    counts: list[int] = []
    batches = [pieces[i : i + batch_size] for i in range(0, len(pieces), batch_size)]
    with torch.inference_mode():
        for batch in progress(batches, desc=desc, unit="batch"):
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attention = torch.zeros((len(batch), width), dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for row, (ids, n_scored) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention[row, : len(ids)] = 1
                labels[row, len(ids) - n_scored : len(ids)] = torch.tensor(ids[len(ids) - n_scored :])
            logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits
            shift_labels = labels[:, 1:].to(device)
            for row in range(len(batch)):
                # One row at a time in float32: a batch of 128k-vocabulary logits would not fit twice.
                scored = shift_labels[row] != -100
                losses = torch.nn.functional.cross_entropy(
                    logits[row, :-1][scored].float(), shift_labels[row][scored], reduction="none"
                ).double()
                for start in range(0, len(losses), block_tokens):
                    piece = losses[start : start + block_tokens]
                    nll.append(float(piece.sum()))
                    counts.append(len(piece))
    return WindowScores(np.array(nll), np.array(counts))


def generate_continuations(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    temperature: float = 0.8,
    top_p: float = 0.95,
    repetition_penalty: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    add_special_tokens: bool = False,
    desc: str = "generate",
) -> list[str]:
    """One sampled continuation per prompt (greedy when temperature is 0), in the prompts' order.

    Four savings, none of which changes what is sampled from:
    - the tokens every prompt starts with (the chat template's system prompt and instruction, about a
      third of a benchmark prompt) are run through the model once, and each batch continues from a
      copy of that cache (`_shared_prefix`);
    - prompts are batched by length, so a batch pads to its own longest prompt;
    - `NucleusSampler` draws from transformers' top-p distribution without sorting the vocabulary;
    - on a CPU, grouped-query attention reads the KV cache in place (`cpu_grouped_query_attention`).
    Each batch is seeded with seed + its index, so the texts do not depend on what ran before.
    add_special_tokens: False for prompts already rendered with a chat template (it holds its own
    special tokens); True for raw text, so a model that expects a BOS gets one.
    """
    import torch

    from voicetune.model.attention import cpu_grouped_query_attention
    from voicetune.model.sampling import NucleusSampler

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,  # NucleusSampler draws; greedy decoding follows its draw
        "temperature": None,
        "top_p": None,
        "top_k": None,
        "eos_token_id": stop_token_ids(model, tokenizer),
        "pad_token_id": pad,
        "repetition_penalty": repetition_penalty,
    }
    token_ids = tokenizer(list(prompts), add_special_tokens=add_special_tokens)["input_ids"]
    shared, prefix_cache = _shared_prefix(model, token_ids, device)
    order = sorted(range(len(prompts)), key=lambda i: len(token_ids[i]))
    outputs: list[str] = [""] * len(prompts)
    starts = list(range(0, len(prompts), batch_size))
    # One bar tick per decoding step (a CPU batch can take a minute): a stopping criterion that never
    # stops is called once per step.
    ticks = iter(progress(range(len(starts) * max_new_tokens), desc=desc, unit="step"))
    with torch.inference_mode(), cpu_grouped_query_attention(model):
        for number, start in enumerate(starts):
            rows = order[start : start + batch_size]
            # [shared prefix][padding][rest of the prompt]: positions come from the attention mask, so
            # every prompt's tokens sit where they would with plain left padding
            rests = [token_ids[i][shared:] for i in rows]
            width = max(len(rest) for rest in rests)
            head = token_ids[rows[0]][:shared]
            input_ids = torch.tensor([head + [pad] * (width - len(r)) + r for r in rests], device=device)
            mask = torch.tensor(
                [[1] * shared + [0] * (width - len(r)) + [1] * len(r) for r in rests], device=device
            )
            extra: dict[str, Any] = {}
            if prefix_cache is not None:
                cache = copy.deepcopy(prefix_cache)
                cache.batch_repeat_interleave(len(rows))
                extra["past_key_values"] = cache
            samplers = [NucleusSampler(temperature, top_p, seed + number, device)] if temperature > 0 else []
            steps = _StepTicker(ticks)
            generated = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                **extra,
                **kwargs,
                logits_processor=_processors(samplers),
                stopping_criteria=_criteria([steps]),
            )
            steps.finish(max_new_tokens)  # a batch that stopped early still moves the bar to its end
            for i, row in zip(rows, generated[:, input_ids.shape[1] :], strict=True):
                outputs[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    for _ in ticks:  # close the bar
        pass
    return outputs


MIN_SHARED_TOKENS = 8  # a shorter common start is not worth a cache copy per batch


def _shared_prefix(model: Any, token_ids: Sequence[Sequence[int]], device: Any) -> tuple[int, Any]:
    """(tokens every prompt starts with, the model's cache of them), each prompt keeping at least one
    token of its own; (0, None) when they share fewer than MIN_SHARED_TOKENS or the model's cache is
    not one that can be copied per batch (transformers' DynamicCache)."""
    import torch
    from transformers import DynamicCache

    if not token_ids:
        return 0, None
    first, shortest = token_ids[0], min(len(ids) for ids in token_ids)
    shared = 0
    while shared < shortest - 1 and all(ids[shared] == first[shared] for ids in token_ids):
        shared += 1
    if shared < MIN_SHARED_TOKENS:
        return 0, None
    with torch.inference_mode():
        cache = model(input_ids=torch.tensor([first[:shared]], device=device), use_cache=True).past_key_values
    if type(cache) is not DynamicCache:
        return 0, None
    return shared, cache


class _StepTicker:
    """A stopping criterion that never stops: it advances the progress bar once per decoding step."""

    def __init__(self, ticks: Any) -> None:
        self.ticks = ticks
        self.done = 0

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        self._tick()
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def _tick(self) -> None:
        next(self.ticks, None)
        self.done += 1

    def finish(self, total: int) -> None:
        while self.done < total:
            self._tick()


def _criteria(items: list[Any]) -> Any:
    from transformers import StoppingCriteriaList

    return StoppingCriteriaList(items)


def _processors(items: list[Any]) -> Any:
    from transformers import LogitsProcessorList

    return LogitsProcessorList(items)


def count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def release_memory() -> None:
    """Return freed model memory (call after dropping the last reference to a model)."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
