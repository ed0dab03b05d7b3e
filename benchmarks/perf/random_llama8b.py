"""Build a randomly initialised Llama-3.1-8B-shaped model (bf16, no download) with a given tokenizer,
for the GPU recipes (gpu_multi_gpu.sh, gpu_eval_memory.sh). Seeded, so every call builds the same.

    python3 benchmarks/perf/random_llama8b.py OUT_DIR TOKENIZER_DIR [--device cuda]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any


def build(out: Path, tokenizer_dir: Path, device: str = "cuda", **shape: Any) -> Path:
    """Save the model (safetensors) and copy the tokenizer files beside it. `shape` overrides
    LlamaConfig keys of the 8B shape (tests build a tiny one)."""
    import throughput
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**{**throughput.LLAMA_31_8B.llama_config_kwargs(), **shape}, dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    for item in tokenizer_dir.iterdir():
        if item.is_file() and not (out / item.name).exists():  # never over the model's own files
            shutil.copy(item, out / item.name)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the model into")
    parser.add_argument("tokenizer", type=Path, help="folder with the tokenizer files to copy beside it")
    parser.add_argument("--device", default="cuda", help="where to initialise it (default cuda: fast)")
    args = parser.parse_args()
    started = time.monotonic()
    build(args.out, args.tokenizer, args.device)
    print(f"built and saved {args.out} in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
