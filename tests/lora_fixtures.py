"""Builders for the merge/generate tests: a real PEFT LoRA adapter on the demo base model and a
checkpoints-like run folder with the manifest the train step writes (no Axolotl run needed)."""

from __future__ import annotations

from pathlib import Path

from voicetune.core.artifacts import stored_path
from voicetune.core.manifest import build_manifest, fingerprint, sha256_file, write_manifest

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def make_lora_adapter(
    base_dir: Path, out_dir: Path, seed: int = 0, scale: float = 0.01, rank: int = 8
) -> Path:
    """A real LoRA adapter (PEFT save_pretrained, safetensors) whose lora_B is random, so the delta is
    non-zero (a fresh adapter's B is zero, and merging zero would prove nothing). Both A and B come from
    the seeded generator: PEFT draws A from torch's global generator, whose state depends on whichever
    test ran before, and a different adapter per test order made greedy outputs flip between runs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=LORA_TARGETS, task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_A" in name:  # PEFT's kaiming-uniform range, 1/sqrt(fan_in)
                bound = param.shape[1] ** -0.5
                param.copy_((torch.rand(param.shape, generator=generator) * 2 - 1) * bound)
            elif "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


def make_run(
    root: Path,
    run: str,
    base_dir: Path,
    adapter_source: Path,
    data_dir: Path | None = None,
    quantized_4bit: bool = False,
) -> Path:
    """checkpoints/<run>/ with output/ (a copy of the adapter) and a train-step manifest."""
    import shutil

    run_dir = root / "checkpoints" / run
    output = run_dir / "output"
    shutil.copytree(adapter_source, output, dirs_exist_ok=True)
    outputs = {f"output/{p.name}": sha256_file(p) for p in sorted(output.iterdir()) if p.is_file()}
    write_manifest(
        run_dir,
        build_manifest(
            "train",
            fingerprint("train", run, outputs),
            settings={},
            inputs={},
            outputs=outputs,
            # stored as the train step stores them: relative to the run folder
            adapter_dir=stored_path(output, run_dir),
            base_model=stored_path(base_dir, run_dir),
            data_dir=stored_path(data_dir, run_dir),
            quantized_4bit=quantized_4bit,
            profile="cpu-demo",
        ),
    )
    return run_dir


def make_data_dir(root: Path, train_texts: list[str], test_texts: list[str]) -> Path:
    """data/processed/<name>/texts/{train,test}/*.txt as the prepare step writes them."""
    data_dir = root / "data" / "processed" / "demo"
    for split, texts in (("train", train_texts), ("test", test_texts)):
        folder = data_dir / "texts" / split
        folder.mkdir(parents=True, exist_ok=True)
        for index, text in enumerate(texts):
            (folder / f"{index:04d}.txt").write_text(text, encoding="utf-8")
    return data_dir


def shared_adapter(tmp_path_factory: object, base_dir: Path) -> Path:
    """One demo adapter per test session, shared by the merge, generate and serve tests."""
    folder = Path(tmp_path_factory.getbasetemp()) / "shared-lora-adapter"  # type: ignore[attr-defined]
    if not (folder / "adapter_model.safetensors").is_file():
        make_lora_adapter(base_dir, folder.with_name(folder.name + ".partial"))
        folder.with_name(folder.name + ".partial").rename(folder)
    return folder


def make_tiny_llama(out_dir: Path, seed: int = 0, hidden: int = 64, layers: int = 2) -> Path:
    """A small random LlamaForCausalLM folder: a base with other shapes than the demo model."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
        max_position_embeddings=128,
    )
    LlamaForCausalLM(config).save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


AUTHOR_TEXTS = [
    "The Duchess was a woman of firm opinions and few principles, which made her excellent company "
    "at dinner and a perfect terror at bridge. She held, with some reason, that a lie well told was a "
    "kindness to the listener; and she was, in that respect, the kindest woman in the county. "
    "Reginald said that he had never known her to be dull, though he had often known her to be right, "
    "which he considered the more unforgivable of the two failings. "
] * 8 + [
    "It is a curious thing, observed Clovis, that the people who are most anxious to be useful are "
    "so seldom of any use; they have, as a rule, a passion for improving others which leaves them no "
    "leisure to improve themselves. His aunt, who was of the useful kind, did not answer, but she "
    "looked at him with the expression of one who is counting the spoons. "
] * 8
