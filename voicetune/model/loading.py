"""Load a model (and optionally its LoRA adapter) for inference: generation, the benchmark's
perplexity, parity checks. One loader, so every step sees the same weights in the same dtype.

`lora_scale` scales the adapter's contribution (the style-strength dial): 1.0 is the model as
trained, 0.0 the base, values in between or above weaken or strengthen the imitation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from voicetune.core.errors import VoicetuneError


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise VoicetuneError("--device cuda: no CUDA GPU is visible to torch; use --device cpu or auto")
    return requested


def tokenizer_folder(model_dir: Path, adapter_dir: Path | None) -> Path:
    """The adapter's own tokenizer when it saved one (a fine-tune may add tokens or a chat template)."""
    if adapter_dir is not None and (adapter_dir / "tokenizer_config.json").is_file():
        return adapter_dir
    return model_dir


def load_for_inference(
    model_dir: Path,
    adapter_dir: Path | None = None,
    device: str = "auto",
    *,
    merge_adapter: bool = False,
    lora_scale: float = 1.0,
    loaded: Any = None,
) -> tuple[Any, Any]:
    """(model in eval mode on device, tokenizer padding on the left). CPUs get fp32 (faster than bf16
    there); a GPU gets bf16 where supported, else fp16. `merge_adapter` folds the adapter into plain
    weights (faster, the same numbers). `loaded`: model_dir's model, already loaded by this function,
    that the adapter may be put on instead of reading the base from disk again (it is changed: pass a
    copy to keep the original)."""
    from voicetune.core.privacy import apply_private_env

    apply_private_env()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(device)
    tokenizer = AutoTokenizer.from_pretrained(
        str(tokenizer_folder(model_dir, adapter_dir)), trust_remote_code=False
    )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    try:
        model = (
            loaded
            if loaded is not None
            else AutoModelForCausalLM.from_pretrained(
                str(model_dir), dtype=dtype, use_safetensors=True, trust_remote_code=False
            )
        )
    except (OSError, ValueError) as exc:
        raise VoicetuneError(f"cannot load the model in {model_dir} ({exc}): check the folder") from exc
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if adapter_dir is not None:
        from peft import PeftModel

        from voicetune.model.merge import validate_adapter_dir

        validate_adapter_dir(adapter_dir)
        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=False)
        if lora_scale != 1.0:
            scale_lora_(model, lora_scale)
        if merge_adapter:
            model = model.merge_and_unload()
    elif lora_scale != 1.0:
        raise VoicetuneError("a style strength (LoRA scale) needs an adapter: this model has none")
    model.to(device)
    model.eval()
    return model, tokenizer


def scale_lora_(peft_model: Any, factor: float) -> None:
    """Multiply every LoRA layer's scaling by `factor` (in place): the adapter's delta becomes
    factor x (B @ A) x alpha/r. Works on the unmerged PEFT model, before any merge."""
    from peft.tuners.lora import LoraLayer

    touched = 0
    for module in peft_model.modules():
        if isinstance(module, LoraLayer):
            for name in list(module.scaling):
                module.scaling[name] = module.scaling[name] * factor
            touched += 1
    if not touched:
        raise VoicetuneError("the adapter has no LoRA layers to scale")
