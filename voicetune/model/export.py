"""`voicetune export-gguf`: the merged model as a GGUF file for llama.cpp and Ollama.

What exists (checked here): PyPI's `gguf` package (llama.cpp's own gguf-py) reads and writes the
GGUF container, but the Hugging Face -> GGUF conversion (per-architecture tensor mapping, Llama's
Q/K permutation, the pre-tokenizer chosen from a table of tokenizer hashes) lives only in llama.cpp's
`convert_hf_to_gguf.py` (+ its `conversion/` and `gguf-py/` folders), which no maintained PyPI
package installs. Re-writing that converter here would be a fork of it, so this step runs the
official script from a llama.cpp checkout (`--llama-cpp DIR` or $LLAMA_CPP_DIR) with voicetune's
own Python (torch, transformers, numpy, sentencepiece are already there), then writes an Ollama
Modelfile beside the GGUF. Without a checkout it prints the exact commands.

Verified on the demo model: the converted f32 GGUF loaded back with transformers (`gguf_file=`)
gives the merged model's logits exactly (max |diff| 0.0).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

from voicetune.core.errors import VoicetuneError
from voicetune.core.manifest import read_manifest, write_text_atomic
from voicetune.core.paths import merged_dir
from voicetune.core.progress import say
from voicetune.core.prompting import END_OF_TURN_TOKENS as END_OF_TURN

CONVERTER = "convert_hf_to_gguf.py"
OUTTYPES = ("f16", "bf16", "q8_0", "f32", "auto")


def find_converter(llama_cpp: Path | None) -> Path | None:
    """llama.cpp's converter in --llama-cpp DIR or $LLAMA_CPP_DIR, if it is there."""
    for candidate in (
        llama_cpp,
        Path(os.environ["LLAMA_CPP_DIR"]) if os.environ.get("LLAMA_CPP_DIR") else None,
    ):
        if candidate is not None and (candidate / CONVERTER).is_file():
            return candidate / CONVERTER
    return None


def manual_steps(model_dir: Path, outfile: Path, outtype: str) -> str:
    """What to run by hand when no llama.cpp checkout is found."""
    python = shlex.quote(sys.executable)
    return "\n".join(
        [
            "no llama.cpp checkout found (its convert_hf_to_gguf.py does the conversion). Run:",
            "  git clone --depth 1 https://github.com/ggml-org/llama.cpp ~/llama.cpp",
            f"  {python} -m voicetune.model.export --model {shlex.quote(str(model_dir))} "
            f"--llama-cpp ~/llama.cpp --outtype {outtype}",
            "or convert directly (voicetune's venv already has what the converter imports):",
            f"  {python} ~/llama.cpp/{CONVERTER} {shlex.quote(str(model_dir))} "
            f"--outfile {shlex.quote(str(outfile))} --outtype {outtype}",
            "smaller files (e.g. Q4_K_M) need llama.cpp built (cmake -B build && cmake --build build), then:",
            f"  ~/llama.cpp/build/bin/llama-quantize {shlex.quote(str(outfile))} "
            f"{shlex.quote(str(outfile.with_name(outfile.stem + '-Q4_K_M.gguf')))} Q4_K_M",
        ]
    )


def modelfile(
    gguf_name: str, system_prompt: str | None, stop_tokens: list[str], temperature: float = 0.8
) -> str:
    """An Ollama Modelfile: the GGUF, the system prompt the model was trained with, its stop tokens.

    The chat template comes from the GGUF itself (tokenizer.chat_template), which Ollama reads.
    """
    lines = [f"FROM ./{gguf_name}", f"PARAMETER temperature {temperature}"]
    lines += [f'PARAMETER stop "{token}"' for token in stop_tokens]
    if system_prompt:
        escaped = system_prompt.replace('"""', '\\"\\"\\"')
        lines.append(f'SYSTEM """{escaped}"""')
    return "\n".join(lines) + "\n"


def _system_prompt_for(model_dir: Path) -> str | None:
    from voicetune.model.generate import prompt_format

    manifest = read_manifest(model_dir) or {}
    data = manifest.get("data_dir")
    return prompt_format(Path(data) if data else None).system_prompt


def _stop_tokens(model_dir: Path) -> list[str]:
    tokenizer_json = model_dir / "tokenizer.json"
    text = tokenizer_json.read_text(encoding="utf-8") if tokenizer_json.is_file() else ""
    return [token for token in END_OF_TURN if f'"{token}"' in text]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=None, help="export merged_models/<run>")
    parser.add_argument("--model", type=Path, default=None, help="export this model folder instead")
    parser.add_argument("--outtype", choices=OUTTYPES, default="f16", help="tensor type in the GGUF")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="GGUF file (default: merged_models/<run>-gguf/<run>-<outtype>.gguf)",
    )
    parser.add_argument(
        "--llama-cpp", type=Path, default=None, help="a llama.cpp checkout (or $LLAMA_CPP_DIR)"
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="load the GGUF back with transformers and compare logits with the model",
    )


def run(args: argparse.Namespace) -> int:
    if args.model is None and args.run is None:
        raise VoicetuneError("which model? give --run NAME or --model DIR")
    model_dir = (args.model or merged_dir(args.run)).resolve()
    if not (model_dir / "config.json").is_file():
        hint = (
            f"run training/3_merge_adapter.sh --run {args.run} first" if args.run else "give a model folder"
        )
        raise VoicetuneError(f"no model at {model_dir}: {hint}", exit_code=2)
    name = args.run or model_dir.name
    outfile = (args.out or model_dir.with_name(f"{name}-gguf") / f"{name}-{args.outtype}.gguf").resolve()
    converter = find_converter(args.llama_cpp)
    if converter is None:
        raise VoicetuneError(manual_steps(model_dir, outfile, args.outtype), exit_code=3)
    outfile.parent.mkdir(parents=True, exist_ok=True)
    partial = outfile.with_name(f".{outfile.name}.tmp-{os.getpid()}")
    command = [
        sys.executable,
        str(converter),
        str(model_dir),
        "--outfile",
        str(partial),
        "--outtype",
        args.outtype,
    ]
    say(f"export-gguf: {shlex.join(command)}")
    try:
        result = subprocess.run(command, check=False)
        if result.returncode != 0:
            raise VoicetuneError(
                f"llama.cpp's converter failed (exit {result.returncode}) on {model_dir}: see its output "
                f"above; a newer llama.cpp checkout may support this architecture"
            )
        os.replace(partial, outfile)
    finally:
        partial.unlink(missing_ok=True)
    write_text_atomic(
        outfile.parent / "Modelfile",
        modelfile(outfile.name, _system_prompt_for(model_dir), _stop_tokens(model_dir)),
    )
    say(
        f"export-gguf: wrote {outfile} ({outfile.stat().st_size / 2**20:.0f} MiB) "
        f"and {outfile.parent / 'Modelfile'}"
    )
    say(f"  llama.cpp: llama-cli -m {shlex.quote(str(outfile))} -cnv")
    say(
        f"  Ollama:    cd {shlex.quote(str(outfile.parent))} && ollama create {name} -f Modelfile "
        f"&& ollama run {name}"
    )
    if args.verify:
        diff = compare_logits(model_dir, outfile)
        say(f"export-gguf: GGUF vs model, max |logit diff| = {diff:.3g} on one prompt")
    return 0


def compare_logits(
    model_dir: Path, gguf_file: Path, text: str = "The rain had stopped by the time we reached the harbour."
) -> float:
    """Largest |logit difference| between the model folder and the GGUF loaded back by transformers."""
    from voicetune.core.privacy import apply_private_env

    apply_private_env()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        reference = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)(
            input_ids=ids
        ).logits
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf_file.parent), gguf_file=gguf_file.name, dtype=torch.float32
        )
        return float((loaded(input_ids=ids).logits - reference).abs().max())
