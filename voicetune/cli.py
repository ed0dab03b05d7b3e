"""`voicetune <verb>`: one verb per pipeline step. The numbered scripts call these.

Each verb lives in its own module with two functions: `configure_parser(parser)` and `run(args) -> int`.
Modules import torch and friends inside `run`, so `--help` stays instant.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys
from collections.abc import Sequence

from voicetune import __version__
from voicetune.core.errors import VoicetuneError

# verb -> (module, one-line help). Order is the pipeline's order.
COMMANDS: dict[str, tuple[str, str]] = {
    "doctor": ("voicetune.machine.doctor", "check GPU, drivers, torch, Axolotl, flash-attn, disk and RAM"),
    "setup-plan": ("voicetune.machine.setup_plan", "print this machine's install plan (used by setup/)"),
    "advise": ("voicetune.train.advise", "which open models this GPU can fine-tune, how, and how fast"),
    "base-model": ("voicetune.model.base_model", "build the embedded demo base model (no hub download)"),
    "prepare": ("voicetune.data.prepare", "writing samples -> clean, chunked train/val/test JSONL"),
    "train": ("voicetune.train.train", "LoRA/QLoRA fine-tuning through Axolotl"),
    "voice-curve": ("voicetune.voice.checkpoint_choice", "score each checkpoint by voice; choose one"),
    "merge": ("voicetune.model.merge", "merge a trained adapter into its base model, with a parity check"),
    "generate": ("voicetune.model.generate", "write, continue or rewrite in the learned voice"),
    "benchmark": ("voicetune.voice.benchmark", "base vs fine-tuned vs the author: stylometry report"),
    "blind-test": ("voicetune.voice.blind_test", "which one did you write? a blind test in your browser"),
    "serve": ("voicetune.model.serve", "serve a merged model with vLLM's OpenAI-compatible server"),
    "export": ("voicetune.model.export", "GGUF for llama.cpp / Ollama / LM Studio, checked in llama.cpp"),
    "export-gguf": ("voicetune.model.export", "the same as export (older name)"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voicetune",
        description="Fine-tune an open LLM on your own writing with QLoRA, and prove the voice with numbers.",
    )
    parser.add_argument("--version", action="version", version=f"voicetune {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for verb, (module_name, help_text) in COMMANDS.items():
        sub = subparsers.add_parser(verb, help=help_text, description=help_text)
        # Only the chosen verb's module is imported: unknown verbs and plain --help stay cheap.
        if only == verb:
            importlib.import_module(module_name).configure_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(verb if verb in COMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except VoicetuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted: nothing half-written was kept; run the same command again", file=sys.stderr)
        return 130
    except OSError as exc:
        # a file system refusal (full disk, read-only or misplaced folder): one line, not a traceback
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 1


def os_error_line(exc: OSError) -> str:
    where = exc.filename or "a file"
    fixes = {
        errno.ENOSPC: "free some space and run again",
        errno.EACCES: "choose a writable folder",
        errno.EROFS: "choose a writable folder",
        errno.EEXIST: "a file stands where a folder should be: move it away",
        errno.ENOTDIR: "a file stands where a folder should be: move it away",
    }
    fix = fixes.get(exc.errno or 0, "check the path and its permissions")
    return f"{where}: {exc.strerror or exc}: {fix}"


if __name__ == "__main__":
    raise SystemExit(main())
