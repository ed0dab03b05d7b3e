"""`voicetune serve`: the merged model behind an OpenAI-compatible server.

Two servers, one API (`/v1/chat/completions`, streaming included):
- on a machine with an NVIDIA GPU, vLLM's server on the merged model folder. vLLM is an optional
  extra (`pip install -e .[serve]`, Linux + NVIDIA GPU); when it is not installed, or does not
  import, this says so in one line with the fix. Usage statistics are switched off (vLLM sends them
  by default; VLLM_NO_USAGE_STATS / DO_NOT_TRACK).
- on a CPU (or `--backend llama-cpp`), llama-cpp-python's server (`python -m llama_cpp.server`) on
  the run's exported GGUF (`voicetune export`, default Q4_K_M), whose chat template and end-of-turn
  token the export checked in llama.cpp; setup/5_install_export.sh installs it.
The server listens on 127.0.0.1 unless told otherwise: a person's writing model is private by default.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from voicetune.core.artifacts import SCRIPTS, ExportedModel
from voicetune.core.errors import VoicetuneError
from voicetune.core.manifest import read_manifest
from voicetune.core.paths import merged_dir, project_root
from voicetune.core.privacy import apply_private_env

INSTALL_HINT = "pip install -e '.[serve]' (vLLM needs Linux and an NVIDIA GPU)"
LLAMA_CPP_INSTALL = "setup/5_install_export.sh"
MERGE_SCRIPT = SCRIPTS["merge"]
BACKENDS = ("auto", "vllm", "llama-cpp")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", default=None, help="serve merged_models/<run> (default: the only one)")
    parser.add_argument("--model", type=Path, default=None, help="serve this model folder instead")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 exposes it to your network")
    parser.add_argument("--served-model-name", default=None, help="name clients ask for (default: the run)")
    parser.add_argument("--max-model-len", type=int, default=None, help="context length to reserve")
    parser.add_argument("--gpu-memory-utilization", type=float, default=None, help="vLLM's share of VRAM")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="auto",
        help="vllm (GPU), llama-cpp (CPU, the exported GGUF); auto: vllm when an NVIDIA GPU is present",
    )
    parser.add_argument("--quant", default="q4_k_m", help="llama-cpp: which exported GGUF (f16, q8_0, ...)")
    parser.add_argument("--dry-run", action="store_true", help="print the server command, start nothing")
    parser.add_argument("vllm_args", nargs=argparse.REMAINDER, help="after --: more flags for the server")


def resolve_model(run: str | None, model: Path | None) -> tuple[Path, str]:
    """(model folder, served name): an explicit folder, or a merged run's folder."""
    if model is not None:
        if not (model / "config.json").is_file():
            raise VoicetuneError(
                f"{model} is not a model folder (no config.json): give a merged model folder"
            )
        return model.resolve(), run or model.name
    if run is None:
        runs = sorted(p.parent.name for p in (project_root() / "merged_models").glob("*/manifest.json"))
        if len(runs) != 1:
            listed = ", ".join(runs) if runs else "none yet"
            raise VoicetuneError(f"which model? give --run NAME (merged models: {listed})", exit_code=2)
        run = runs[0]
    folder = merged_dir(run)
    manifest = read_manifest(folder)
    if not manifest or manifest.get("step") != "merge":
        raise VoicetuneError(
            f"no merged model at {folder}: run {MERGE_SCRIPT} --run {run} first", exit_code=2
        )
    return folder, run


def server_command(
    model_dir: Path,
    served_name: str,
    port: int = 8000,
    host: str = "127.0.0.1",
    max_model_len: int | None = None,
    gpu_memory_utilization: float | None = None,
    extra: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    command = [
        python, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--served-model-name", served_name,
        "--host", host, "--port", str(port),
    ]  # fmt: skip
    if max_model_len is not None:
        command += ["--max-model-len", str(max_model_len)]
    if gpu_memory_utilization is not None:
        command += ["--gpu-memory-utilization", str(gpu_memory_utilization)]
    return command + [arg for arg in extra if arg != "--"]


def llama_cpp_command(
    gguf: Path,
    served_name: str,
    port: int = 8000,
    host: str = "127.0.0.1",
    n_ctx: int | None = None,
    extra: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """llama-cpp-python's OpenAI-compatible server on one GGUF; the chat template (and its end-of-turn
    stop) comes from the GGUF itself."""
    command = [
        python, "-m", "llama_cpp.server",
        "--model", str(gguf), "--model_alias", served_name,
        "--host", host, "--port", str(port), "--n_ctx", str(n_ctx or 2048), "--verbose", "false",
    ]  # fmt: skip
    return command + [arg for arg in extra if arg != "--"]


def pick_backend(requested: str) -> str:
    """auto: vLLM where an NVIDIA GPU is present, else llama.cpp on the CPU."""
    if requested != "auto":
        return requested
    from voicetune.machine.gpu import find_nvidia_smi

    return "vllm" if find_nvidia_smi() is not None else "llama-cpp"


def llama_cpp_server_problem(python: str = sys.executable) -> str | None:
    """None when llama-cpp-python's server imports (it needs the server extras), else why not."""
    if python == sys.executable and importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed"
    result = subprocess.run(
        [python, "-c", "import llama_cpp.server.app"], capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        return f"llama-cpp-python's server does not import ({lines[-1] if lines else result.returncode})"
    return None


def vllm_problem(python: str = sys.executable) -> str | None:
    """None when `import vllm` works in that interpreter, else why not (one line)."""
    if python == sys.executable and importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed"
    # Importing vLLM pulls in CUDA libraries: do it in a child so a broken install cannot hang us.
    try:
        result = subprocess.run([python, "-c", "import vllm"], capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return "`import vllm` did not finish in 10 minutes"
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        return f"`import vllm` fails ({lines[-1] if lines else 'exit code ' + str(result.returncode)})"
    return None


def run(args: argparse.Namespace) -> int:
    model_dir, served = resolve_model(args.run, args.model)
    backend = pick_backend(args.backend)
    name = args.served_model_name or served
    if backend == "llama-cpp":
        gguf = ExportedModel.load(model_dir / "gguf").gguf(args.quant.lower())
        command = llama_cpp_command(gguf, name, args.port, args.host, args.max_model_len, args.vllm_args)
        what = gguf
    else:
        command = server_command(
            model_dir, name, args.port, args.host,
            args.max_model_len, args.gpu_memory_utilization, args.vllm_args,
        )  # fmt: skip
        what = model_dir
    if args.dry_run:
        print(shlex.join(command))
        return 0
    if backend == "llama-cpp":
        problem = llama_cpp_server_problem()
        if problem:
            raise VoicetuneError(f"{problem}: run {LLAMA_CPP_INSTALL}, then run this again", exit_code=3)
    else:
        problem = vllm_problem()
        if problem:
            raise VoicetuneError(
                f"{problem}: install it with {INSTALL_HINT} (or serve the GGUF on the CPU: --backend "
                f"llama-cpp), then run this again",
                exit_code=3,
            )
    env = apply_private_env()
    env["VLLM_NO_USAGE_STATS"] = "1"
    env["DO_NOT_TRACK"] = "1"
    print(
        f"serving {what} as '{name}' with {backend} on http://{args.host}:{args.port}/v1 "
        f"(OpenAI-compatible; Ctrl-C stops it)",
        flush=True,
    )
    # exec: the server becomes this process, so Ctrl-C and the exit code are its own.
    os.execve(command[0], command, env)
    return 0  # not reached
