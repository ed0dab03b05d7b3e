"""The plain QLoRA baseline a user would write: transformers + PEFT + bitsandbytes + the HF Trainer.

Arm (a) of benchmarks/perf/training_throughput.py, and deliberately untuned: the recipe of the QLoRA
paper and the PEFT docs (4-bit NF4 with double quantisation, bf16 compute,
`prepare_model_for_kbit_training`, LoRA on the seven projections, paged 8-bit AdamW, gradient
checkpointing), SDPA attention (transformers' default), micro batch 1, no packing. Using the HF
Trainer (not a hand loop) is what most users write, and it lets the benchmark hang the same
measuring callback on all three arms.

One known pitfall is handled the way a careful user would: the model must be in train mode, or
gradient checkpointing silently does nothing (measured on an H100: 55.9 GiB instead of 12.9 GiB for
an 8B model at 2048 tokens). The Trainer calls `model.train()`; we call it too, before the first step.

torch, transformers, peft and bitsandbytes are imported inside the functions (GPU machine only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from throughput import LORA_TARGETS_7


@dataclass(frozen=True)
class PlainSettings:
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = LORA_TARGETS_7
    micro_batch_size: int = 1
    gradient_accumulation_steps: int = 4
    max_steps: int = 20
    learning_rate: float = 2e-4
    lr_scheduler: str = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    seed: int = 42
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = True
    optimizer: str = "paged_adamw_8bit"
    # Off only for the CPU test of this module (bitsandbytes 4-bit and bf16 autocast need CUDA).
    load_in_4bit: bool = True
    bf16: bool = True
    extra_training_args: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["lora_targets"] = list(self.lora_targets)
        return data


def load_model(model_dir: Path, settings: PlainSettings) -> Any:
    """The base model in 4-bit with a fresh LoRA adapter, exactly as the PEFT QLoRA docs do it."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    kwargs: dict[str, Any] = {"attn_implementation": settings.attn_implementation}
    if settings.load_in_4bit:
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if settings.bf16 else torch.float32,
        )
        kwargs["device_map"] = {"": torch.cuda.current_device()}
        kwargs["dtype"] = torch.bfloat16
    else:
        kwargs["dtype"] = torch.bfloat16 if settings.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    model.config.use_cache = False  # no KV cache in training (and it conflicts with checkpointing)
    if settings.load_in_4bit:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=settings.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    lora = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(settings.lora_targets),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def collate(examples: Sequence[dict[str, list[int]]], pad_id: int) -> dict[str, Any]:
    """Right-pad a micro batch; padded positions get attention 0 and label -100 (never trained on)."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example["input_ids"])
        ids[row, :n] = torch.tensor(example["input_ids"])
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(example.get("labels", example["input_ids"]))
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def train(
    model_dir: Path,
    train_examples: Sequence[dict[str, list[int]]],
    settings: PlainSettings,
    output_dir: Path,
    callbacks: Sequence[Any] = (),
    pad_id: int = 0,
) -> Any:
    """Train for `settings.max_steps` optimizer steps on the examples in order; returns the Trainer.

    The examples are used in the order given (sequential sampler), so every arm of the benchmark
    sees the same tokens in the same order.
    """
    from transformers import Trainer, TrainingArguments

    model = load_model(model_dir, settings)
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=settings.micro_batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        max_steps=settings.max_steps,
        learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler,
        warmup_steps=settings.warmup_steps,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        optim=settings.optimizer,
        bf16=settings.bf16,
        gradient_checkpointing=settings.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=settings.seed,
        train_sampling_strategy="sequential",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        use_cpu=not settings.load_in_4bit and not settings.bf16,
        **settings.extra_training_args,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=list(train_examples),
        data_collator=lambda batch: collate(batch, pad_id),
        callbacks=list(callbacks),
    )
    model.train()  # the pitfall: without train mode, gradient checkpointing is silently off
    trainer.train()
    return trainer
