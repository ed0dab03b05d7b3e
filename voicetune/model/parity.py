"""Logit parity: does the merged model compute what base + adapter computed?

The merge step runs the same held-out prompts through the models it compares and keeps the
logits of every position. Two sets agree when their largest absolute difference is within a stated
tolerance. Everything here is plain torch on tensors, so the check is easy to reason about and test.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Held-out prompts when the data folder has no test texts (e.g. merging an adapter trained elsewhere).
FALLBACK_PROMPTS = (
    "The rain had stopped by the time we reached the harbour, and the boats lay still on the grey water.",
    "I have never trusted a man who tells you he has nothing to hide.",
    "Write a short letter to an old friend about the first warm day of spring.",
    "In the years that followed, the town grew, but the old mill by the river stayed exactly as it was.",
)

# Largest |logit difference| accepted between merged and unmerged models, by the precision the
# comparison runs in. fp32: measured 8e-5 on the demo model (logits up to ~33); 1e-2 leaves room for
# deeper models and other kernels while still catching a merge that lost even a weak adapter.
# bf16/fp16: rounding alone moves logits by 0.1-0.6 on the demo model, so these gates are coarse.
DEFAULT_TOLERANCE = {"fp32": 1e-2, "fp16": 0.25, "bf16": 1.0}


@dataclass(frozen=True)
class Comparison:
    """One named comparison between two sets of logits."""

    name: str
    max_abs_diff: float
    tolerance: float | None  # None: reported for information, not a gate

    @property
    def passed(self) -> bool:
        return self.tolerance is None or self.max_abs_diff <= self.tolerance

    def line(self) -> str:
        if self.tolerance is None:
            return f"{self.name}: max |logit diff| = {self.max_abs_diff:.3g} (for information)"
        verdict = "ok" if self.passed else "FAILED"
        diff = f"max |logit diff| = {self.max_abs_diff:.3g}"
        return f"{self.name}: {diff} (tolerance {self.tolerance:g}) {verdict}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def select_prompts(texts_dir: Path | None, count: int, max_chars: int = 600) -> list[str]:
    """Up to `count` held-out texts (sorted file names, for a stable choice), cut to `max_chars`.

    Falls back to fixed strings when the folder is missing or empty, so a merge never needs data.
    """
    prompts: list[str] = []
    if texts_dir is not None and texts_dir.is_dir():
        for path in sorted(texts_dir.glob("*.txt")):
            try:
                text = path.read_text(encoding="utf-8", errors="replace").strip()
            except OSError:
                continue
            if text:
                prompts.append(text[:max_chars])
            if len(prompts) >= count:
                break
    return prompts or list(FALLBACK_PROMPTS[:count])


def encode_prompts(tokenizer: Any, prompts: Sequence[str], max_tokens: int) -> list[torch.Tensor]:
    """Token ids for each prompt, truncated to max_tokens (one row each, no padding to hide)."""
    encoded = []
    for text in prompts:
        ids = tokenizer(text, return_tensors="pt", truncation=True, max_length=max_tokens)["input_ids"]
        encoded.append(ids)
    return encoded


def collect_logits(model: Any, batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """fp32 logits on the CPU for every prompt, every position (one forward pass each)."""
    import torch

    device = next(model.parameters()).device
    results = []
    with torch.inference_mode():
        for ids in batches:
            out = model(input_ids=ids.to(device), use_cache=False)
            results.append(out.logits.float().cpu())
    return results


def max_abs_diff(left: Sequence[torch.Tensor], right: Sequence[torch.Tensor]) -> float:
    """Largest absolute difference over all prompts and positions; inf if shapes disagree or NaN."""
    import math

    if len(left) != len(right):
        return math.inf
    worst = 0.0
    for a, b in zip(left, right, strict=True):
        if a.shape != b.shape:
            return math.inf
        diff = (a - b).abs().max().item()
        if math.isnan(diff):
            return math.inf
        worst = max(worst, diff)
    return worst


def max_abs_logit(logits: Sequence[torch.Tensor]) -> float:
    return max((t.abs().max().item() for t in logits), default=0.0)
