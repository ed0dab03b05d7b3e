"""Nucleus (top-p) sampling that costs a top-k, not a sort of the whole vocabulary.

transformers' TopPLogitsWarper sorts every row's full vocabulary at each decoding step and then draws
with `multinomial` over it. For a small model on a CPU that is much of the work (with the other
savings of voicetune.voice.perplexity.generate_continuations, a benchmark pass of the demo went from
254.5 s to 149.0 s on 2 cores: benchmarks/results/generation-speed-cpu/). The nucleus at top-p 0.95 is a few
hundred tokens, so `NucleusSampler` takes the top `candidates` tokens, keeps the same nucleus
TopPLogitsWarper keeps (a row whose nucleus is wider falls back to its full vocabulary: the result is
exact either way), draws one of them with its own seeded generator and hands `generate` a row that
greedy decoding can only follow. So `generate(do_sample=False, logits_processor=[sampler])` samples
from the same distribution as `generate(do_sample=True, temperature=t, top_p=p, top_k=0)`; the draws
themselves differ (another random stream).
"""

from __future__ import annotations

from typing import Any

CANDIDATES = 1024  # tokens looked at before falling back to the whole vocabulary


def nucleus(logits: Any, temperature: float, top_p: float, candidates: int = CANDIDATES) -> tuple[Any, Any]:
    """(token ids, probabilities) per row, both [rows, k]: the smallest set of most likely tokens whose
    probability reaches top_p (TopPLogitsWarper's rule: a token is kept while the mass ranked above it
    is below top_p), at `temperature`; tokens outside the nucleus have probability 0 (not renormalised:
    `multinomial` does not need it)."""
    import torch

    scaled = logits.float() / temperature
    total = torch.logsumexp(scaled, dim=-1, keepdim=True)
    k = min(candidates, scaled.shape[-1])
    top, ids = scaled.topk(k, dim=-1)
    probs = (top - total).exp()
    before = probs.cumsum(-1) - probs  # the mass ranked above each token
    if k < scaled.shape[-1]:
        short = before[:, -1] + probs[:, -1] < top_p  # the nucleus is wider than the candidates
        if bool(short.any()):
            full_ids, full_probs = nucleus(logits[short], temperature, top_p, scaled.shape[-1])
            return _merge_rows(ids, probs * (before < top_p), short, full_ids, full_probs)
    return ids, probs * (before < top_p)


def _merge_rows(ids: Any, probs: Any, short: Any, full_ids: Any, full_probs: Any) -> tuple[Any, Any]:
    """Rows of a [rows, k] result replaced by full-vocabulary rows: everything padded to the wider k."""
    import torch

    width = full_ids.shape[-1]
    out_ids = torch.zeros(ids.shape[0], width, dtype=ids.dtype, device=ids.device)
    out_probs = torch.zeros(ids.shape[0], width, dtype=probs.dtype, device=probs.device)
    out_ids[:, : ids.shape[-1]] = ids
    out_probs[:, : probs.shape[-1]] = probs
    out_ids[short] = full_ids
    out_probs[short] = full_probs
    return out_ids, out_probs


class NucleusSampler:
    """A logits processor that draws the next token (nucleus sampling at a temperature) and returns
    scores where only that token is finite: greedy decoding then follows the draw. Put it last."""

    def __init__(self, temperature: float, top_p: float, seed: int, device: Any) -> None:
        import torch

        if temperature <= 0:
            raise ValueError("NucleusSampler samples: temperature must be > 0 (use greedy decoding for 0)")
        self.temperature = temperature
        self.top_p = top_p
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        ids, probs = nucleus(scores, self.temperature, self.top_p)
        pick = torch.multinomial(probs, 1, generator=self.generator)
        chosen = ids.gather(-1, pick)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, chosen, 0.0)
