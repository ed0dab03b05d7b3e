"""Grouped-query attention for padded batches on a CPU, without copying the key/value cache.

transformers' SDPA attention hands grouped-query attention (a model with fewer key/value heads than
query heads, as SmolLM2, Llama 3, Qwen and Mistral are) to `scaled_dot_product_attention(enable_gqa=True)`
only when there is no attention mask; with a mask it first repeats every key/value head. On a GPU that
is deliberate (SDPA's fused kernels take no mask with GQA). On a CPU it copies the whole KV cache of
every layer at every decoding step, and a batch of prompts of different lengths always has a padding
mask: for padded batches of 32 of the CPU benchmark's prompts the repeat cost a tenth of the generation
(105.9 s against 118.6 s for 128 demo prompts on 2 cores:
benchmarks/results/generation-speed-cpu/gqa_attention.json). PyTorch's CPU SDPA takes the mask and the
grouped heads together and gives the same numbers (a test compares them), so
`cpu_grouped_query_attention` switches a model to that path for the duration of a generation;
everything else is transformers' own SDPA attention.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

NAME = "voicetune_cpu_gqa_sdpa"


def _attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    grouped = key.shape[1] != query.shape[1]
    if attention_mask is None or not grouped or query.device.type != "cpu" or "position_bias" in kwargs:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal,
            **kwargs,
        )  # fmt: skip
    # a mask is given, so this is not the is_causal fast path (transformers sets is_causal False too)
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
    )
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    # registering is a dict update: doing it again is harmless
    AttentionInterface.register(NAME, _attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the masks transformers builds for SDPA


@contextmanager
def cpu_grouped_query_attention(model: Any) -> Iterator[None]:
    """Within the block, a CPU model that uses SDPA attention uses it without repeating key/value heads;
    any other model (a GPU, eager or flash attention) is left as it is."""
    config = getattr(model, "config", None)
    device = getattr(getattr(model, "device", None), "type", None)
    if config is None or device != "cpu" or getattr(config, "_attn_implementation", None) != "sdpa":
        yield
        return
    _register()
    model.set_attn_implementation(NAME)
    try:
        yield
    finally:
        model.set_attn_implementation("sdpa")
