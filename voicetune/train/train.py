"""`voicetune train`: LoRA/QLoRA fine-tuning through the real Axolotl CLI.

    prepared data (data/processed/<name>/) + a profile (configs/axolotl/<profile>.yaml)
      -> checkpoints/<run>/axolotl.yaml            the rendered Axolotl config of this run
      -> preflight (voicetune.train.preflight)            seconds, before any model loads
      -> accelerate launch -m axolotl.cli.train checkpoints/<run>/axolotl.yaml
         (what `axolotl train` runs), output streamed to the terminal and checkpoints/<run>/train.log
      -> checkpoints/<run>/output/                  Axolotl's output_dir: adapter + checkpoint-N/
      -> checkpoints/<run>/manifest.json            written only when training completed

A finished run with the same fingerprint (settings + data + base model) is skipped ("up to date");
a finished run with other settings is never overwritten without --force. An interrupted run keeps
its checkpoints: --resume continues from the latest complete one. One training per run folder at a
time (a lock beside it).
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from voicetune.core.artifacts import SCRIPTS, PreparedData, stored_path
from voicetune.core.errors import MissingArtifactError, VoicetuneError
from voicetune.core.manifest import (
    build_manifest,
    exclusive_lock,
    fingerprint,
    read_manifest,
    sha256_file,
    utc_now,
    write_json_atomic,
    write_manifest,
    write_text_atomic,
)
from voicetune.core.paths import checkpoint_dir, default_base_model_dir, processed_dir, project_root
from voicetune.core.privacy import apply_private_env
from voicetune.core.progress import header, say
from voicetune.core.settings import load_section
from voicetune.train import axolotl_config as ac
from voicetune.train import preflight, recipe, resume, vram

PREPARE_SCRIPT = SCRIPTS["prepare"]
RUN_STATE = "run.json"
LIBRARIES = ("torch", "transformers", "peft", "accelerate", "axolotl", "bitsandbytes", "trl", "datasets")
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class TrainSettings(BaseModel):
    """The `train:` section of configs/voicetune.yaml (flags override it)."""

    model_config = ConfigDict(extra="forbid")

    profile: str = "auto"
    data: str = "demo"
    run: str | None = None
    base_model: str | None = None
    wandb: Literal["off", "offline", "online"] = "off"
    max_steps: int | None = Field(default=None, ge=1)
    epochs: float | None = Field(default=None, gt=0)
    sequence_len: int | None = Field(default=None, ge=32)
    micro_batch: int | None = Field(default=None, ge=1)
    grad_accum: int | None = Field(default=None, ge=1)
    lr: float | None = Field(default=None, gt=0)
    gpus: int = Field(default=1, ge=1)
    multi_gpu: Literal["deepspeed", "fsdp"] = "deepspeed"
    overrides: dict[str, Any] = Field(default_factory=dict)  # Axolotl keys applied last, like --set

    @field_validator("wandb", mode="before")
    @classmethod
    def _yaml_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = (
        "examples:\n"
        "  voicetune train                              # demo data, profile picked for this machine\n"
        "  voicetune train --profile 24gb --data mine --run mine-v1\n"
        "  voicetune train --max-steps 3 --dry-run     # render + preflight, print the exact command\n"
        "  voicetune train --run mine-v1 --resume      # continue an interrupted run\n"
        "  voicetune train --set lora_r=32 --set learning_rate=2e-4\n"
        "  voicetune train --gpus 2 --multi-gpu deepspeed   # ZeRO-2 through accelerate\n"
    )
    parser.add_argument(
        "--profile",
        default=None,
        help="auto | cpu-demo | 8gb | 16gb | 24gb | 32gb (= 32gb-rtx5090) | 80gb | path/to/axolotl.yaml "
        "(default: train.profile in the config, else auto)",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="project config (default configs/voicetune.yaml)"
    )
    parser.add_argument(
        "--data", default=None, help="prepared data: a name under data/processed/ or a folder (default: demo)"
    )
    parser.add_argument("--run", default=None, help="run name: checkpoints/<run>/ (default: the data's name)")
    parser.add_argument(
        "--base-model", default=None, help="base model folder (default: the one the data was prepared for)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue from the latest complete checkpoint of this run",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="train again even if the run finished (its checkpoints are deleted)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="render the config, run preflight, print the exact command; train nothing",
    )
    parser.add_argument(
        "--wandb",
        choices=("off", "offline", "online"),
        default=None,
        help="Weights & Biases: off (default), offline (files in the run folder, nothing sent), "
        "online (sends metrics to wandb.ai). TensorBoard logs are always written.",
    )
    parser.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    parser.add_argument(
        "--epochs",
        type=float,
        default=None,
        help="passes over the data (default: from the profile, or from the corpus size)",
    )
    parser.add_argument("--sequence-len", type=int, default=None, help="tokens per packed row")
    parser.add_argument("--micro-batch", type=int, default=None, help="rows per GPU per forward pass")
    parser.add_argument("--grad-accum", type=int, default=None, help="micro batches per optimizer step")
    parser.add_argument("--lr", type=float, default=None, help="learning rate")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any Axolotl key, value in YAML (repeatable): --set lora_dropout=0.1; null removes",
    )
    parser.add_argument("--gpus", type=int, default=None, help="GPUs of this machine to train on (default 1)")
    parser.add_argument(
        "--multi-gpu",
        choices=("deepspeed", "fsdp"),
        default=None,
        help="with --gpus > 1: DeepSpeed ZeRO-2 (default) or FSDP2, from configs/deepspeed/",
    )


# --------------------------------------------------------------------------------------- resolution


@dataclass
class Inputs:
    settings: TrainSettings
    overrides: dict[str, Any]
    data_dir: Path
    data_manifest: dict[str, Any]
    base_model: Path
    run_name: str
    run_dir: Path
    data_format: str
    data_sequence_len: int | None


def resolve_inputs(args: argparse.Namespace) -> Inputs:
    flags = {
        "profile": args.profile,
        "data": args.data,
        "run": args.run,
        "base_model": args.base_model,
        "wandb": args.wandb,
        "max_steps": args.max_steps,
        "epochs": args.epochs,
        "sequence_len": args.sequence_len,
        "micro_batch": args.micro_batch,
        "grad_accum": args.grad_accum,
        "lr": args.lr,
        "gpus": args.gpus,
        "multi_gpu": args.multi_gpu,
    }
    settings = load_section(TrainSettings, "train", overrides=flags, source=args.config)
    overrides = ac.merge_overrides(settings.overrides, ac.parse_set(args.set))

    prepared = PreparedData.load(_data_dir(settings.data))
    data_dir, data_manifest, data_settings = prepared.folder, prepared.manifest, prepared.settings
    recorded_base = str(prepared.base_model) if prepared.base_model else None
    base_model = _base_model(settings.base_model or recorded_base)
    run_name = settings.run or data_dir.name
    if not _RUN_NAME.match(run_name):
        raise VoicetuneError(
            f"run name '{run_name}' is not a folder name: use letters, digits, '.', '_', '-'"
        )
    seq = data_settings.get("sequence_len")
    return Inputs(
        settings=settings,
        overrides=overrides,
        data_dir=data_dir,
        data_manifest=data_manifest,
        base_model=base_model,
        run_name=run_name,
        run_dir=checkpoint_dir(run_name),
        data_format=ac.detect_format(data_dir, data_settings.get("format")),
        data_sequence_len=int(seq) if isinstance(seq, int | float) and seq else None,
    )


def _data_dir(name: str) -> Path:
    path = Path(name).expanduser()
    if "/" in name or (path.is_dir() and (path / "manifest.json").is_file()):
        return path.resolve()
    return processed_dir(name)


def _base_model(value: str | None) -> Path:
    path = Path(value).expanduser() if value else default_base_model_dir()
    if not path.is_absolute():
        path = project_root() / path
    path = path.resolve()
    if not (path / "config.json").is_file():
        raise MissingArtifactError("base model", path, "voicetune base-model (or pass --base-model DIR)")
    return path


def base_model_identity(base_model: Path) -> str:
    """Its manifest's fingerprint, else config.json + weight file names and sizes (cheap, no 16 GB hash)."""
    manifest = read_manifest(base_model)
    if manifest and manifest.get("fingerprint"):
        return str(manifest["fingerprint"])
    files = sorted(
        (p.name, p.stat().st_size)
        for p in base_model.iterdir()
        if p.suffix in (".safetensors", ".bin", ".json", ".jinja")
    )
    return fingerprint(sha256_file(base_model / "config.json"), files)


# --------------------------------------------------------------------------------- profile choice


@dataclass
class ProfileChoice:
    name: str  # profile name or file path, as given
    cfg: dict[str, Any]
    reasons: list[str] = field(default_factory=list)
    auto: dict[str, Any] | None = None  # what auto chose (kept in run.json so a resume keeps it)
    recipe: dict[str, Any] | None = None  # the recipe from the data (kept in run.json likewise)


def _load_profile_for(
    name: str, gpu: preflight.GpuInfo | None, inputs: Inputs
) -> tuple[dict[str, Any], list[str]]:
    """A profile's config for this card, and why it was adjusted. A built-in profile's bf16 adapters
    become fp16 ones on a card without bf16, which fp16's grad scaler refuses: they stay fp32 there
    (unless the user set the key). A user's own YAML is left as written; preflight names the fix."""
    cfg = ac.load_profile(name)
    if (
        gpu is None
        or ac.canonical_profile(name) not in ac.PROFILES
        or "peft_autocast_adapter_dtype" in inputs.overrides
        or not preflight.fp16_adapters_fail(cfg, gpu)
    ):
        return cfg, []
    cfg.pop("peft_autocast_adapter_dtype")
    why = f"{gpu.name} has no bf16: LoRA weights stay fp32 (fp16 ones fail fp16's scaler)"
    return cfg, [f"profile {name}: {why}"]


def choose_profile(
    requested: str,
    gpu: preflight.GpuInfo | None,
    inputs: Inputs,
    sticky: dict[str, Any] | None,
    planned: dict[str, Any] | None = None,
) -> ProfileChoice:
    """The profile (auto: the one for this machine), then the recipe from the data over it.

    sticky: what auto chose when this run started (a resume keeps the profile); planned: the recipe's
    Axolotl keys recorded when this run started (a resume keeps them, whatever memory is free now)."""
    if requested != "auto":
        cfg, reasons = _load_profile_for(requested, gpu, inputs)
        choice = ProfileChoice(requested, cfg, reasons)
    elif sticky and sticky.get("profile"):
        cfg, adjusted = _load_profile_for(sticky["profile"], gpu, inputs)
        choice = ProfileChoice(sticky["profile"], cfg, adjusted, auto=sticky)
        choice.reasons.insert(
            0, f"auto: {sticky['profile']} as chosen when this run started ({sticky.get('reason')})"
        )
    elif gpu is None or not gpu.torch_cuda:
        why = "no NVIDIA GPU visible" if gpu is None else f"PyTorch cannot use {gpu.name}"
        reason = f"{why}: cpu-demo (LoRA in fp32 on the CPU; small and slow, for the demo)"
        choice = ProfileChoice(
            "cpu-demo",
            ac.load_profile("cpu-demo"),
            [f"auto: {reason}"],
            {"profile": "cpu-demo", "reason": reason},
        )
    else:
        name = ac.profile_for_gpu(gpu.total_gib)
        # adjusted before sizing: fp32 adapters (on cards without bf16) take more memory
        cfg, adjusted = _load_profile_for(name, gpu, inputs)
        reason = f"{gpu.describe()} -> profile {name}"
        choice = ProfileChoice(name, cfg, [f"auto: {reason}", *adjusted], {"profile": name, "reason": reason})
    if ac.canonical_profile(choice.name) not in ac.PROFILES:
        choice.reasons.append(f"recipe: {choice.name} is your own profile: used as written")
        return choice
    if planned:
        keys = dict(planned.get("keys") or {})
        choice.reasons.append("recipe: as planned when this run started")
        choice.recipe = planned
    else:
        plan = plan_recipe(choice.cfg, gpu, inputs, sized=requested == "auto")
        keys = plan.axolotl_keys()
        choice.reasons += [f"recipe: {line}" for line in plan.reasons]
        choice.recipe = {**plan.as_json(), "keys": keys}
    choice.cfg = ac.apply_overrides(choice.cfg, keys)
    return choice


# The recipe's keys a person can fix with a flag (TrainSettings field -> Axolotl key) or with --set.
_FIXED_FLAGS = {
    "max_steps": "max_steps",
    "epochs": "num_epochs",
    "sequence_len": "sequence_len",
    "micro_batch": "micro_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "lr": "learning_rate",
}


def plan_recipe(
    cfg: dict[str, Any], gpu: preflight.GpuInfo | None, inputs: Inputs, sized: bool
) -> recipe.Recipe:
    """voicetune.train.recipe for this data on this machine. sized (auto on a GPU): the largest micro
    batch the VRAM estimator fits at the data's sequence length; otherwise the profile's."""
    s = inputs.settings
    fixed = {
        key: inputs.overrides[key] for key in recipe.PLANNED_KEYS if inputs.overrides.get(key) is not None
    }
    for field_name, key in _FIXED_FLAGS.items():
        value = getattr(s, field_name)
        if value is not None:
            fixed[key] = value
    corpus = recipe.Corpus.from_manifest(inputs.data_manifest, ac.approx_train_tokens(inputs.data_dir))
    seq = int(fixed.get("sequence_len") or max(corpus.sequence_len, inputs.data_sequence_len or 0) or 512)
    on_gpu = gpu is not None and gpu.torch_cuda
    max_micro = int(cfg.get("micro_batch_size") or 1)
    if on_gpu and sized and gpu is not None:
        shape = vram.ModelShape.from_model_dir(inputs.base_model)
        memory_plan = vram.plan_from_axolotl({**cfg, **inputs.overrides})
        picked = vram.choose_batch_and_length(
            shape,
            memory_plan,
            gpu.free_bytes,
            min_sequence_len=seq,
            lengths=(seq,),
            batches=recipe.MICRO_BATCHES,
        )
        if picked is None:
            raise VoicetuneError(
                f"{inputs.base_model.name} does not fit in the {gpu.free_bytes / vram.GIB:.1f} GiB free on "
                f"{gpu.name} even at micro batch 1 and sequence_len {seq}: free GPU memory or use a "
                f"smaller model"
            )
        max_micro = picked.micro_batch_size
    machine = recipe.Machine(on_gpu=on_gpu, max_micro_batch=max_micro)
    return recipe.plan(replace(corpus, sequence_len=seq), machine, cfg, fixed=fixed)


# --------------------------------------------------------------------------------------- checkpoints


def _step_of(path: Path) -> int:
    try:
        return int(path.name.rsplit("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def checkpoints(output_dir: Path) -> tuple[list[Path], list[Path]]:
    """(complete, incomplete) checkpoint-N folders, by step. Complete = trainer_state.json written
    (the Trainer writes it last, after weights, optimizer and RNG state)."""
    if not output_dir.is_dir():
        return [], []
    found = sorted(
        (p for p in output_dir.glob("checkpoint-*") if p.is_dir() and _step_of(p) >= 0), key=_step_of
    )
    complete = [
        p
        for p in found
        if (p / "trainer_state.json").is_file()
        and any(
            (p / n).exists() for n in ("adapter_model.safetensors", "model.safetensors", "adapter_model.bin")
        )
    ]
    return complete, [p for p in found if p not in complete]


def launch_command(yaml_path: Path, gpus: int, on_gpu: bool, python: str | None = None) -> list[str]:
    """`accelerate launch ... -m axolotl.cli.train <yaml>`: what `axolotl train` runs, spelled out."""
    python = python or sys.executable
    script = Path(python).parent / "accelerate"
    command = [str(script), "launch"] if script.exists() else [python, "-m", "accelerate.commands.launch"]
    if not on_gpu:
        command += ["--cpu", "--num_processes", "1", "--num_cpu_threads_per_process", str(_cpu_count())]
    elif gpus > 1:
        command += ["--multi_gpu", "--num_processes", str(gpus)]
    else:
        command += ["--num_processes", "1"]
    command += [
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "axolotl.cli.train",
        str(yaml_path),
    ]
    return command


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ------------------------------------------------------------------------------------ log streaming


_METRICS = re.compile(r"\{'(?:loss|eval_loss|train_runtime)'[^{}]*\}")


@dataclass
class LogWatcher:
    """Picks the Trainer's metric dicts out of the stream, each with the time it arrived."""

    train: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    evals: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    tail: str = ""
    last_lines: list[str] = field(default_factory=list)

    def feed(self, text: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        buffer = self.tail + text
        end = 0
        for match in _METRICS.finditer(buffer):
            self._record(match.group(0), now)
            end = match.end()
        rest = buffer[end:]
        cut = rest.rfind("{'")
        self.tail = rest[cut:][-8192:] if cut >= 0 else ""
        lines = [line.strip() for line in re.split(r"[\r\n]", text) if line.strip()]
        self.last_lines = (self.last_lines + lines)[-40:]

    def _record(self, text: str, now: float) -> None:
        import ast

        try:
            raw = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return
        values: dict[str, float] = {}
        for key, value in raw.items():
            with contextlib.suppress(TypeError, ValueError):
                values[str(key)] = float(value)
        if "train_runtime" in values:
            self.final = values
        elif "eval_loss" in values:
            self.evals.append((now, values))
        elif "loss" in values:
            self.train.append((now, values))

    def throughput(self) -> dict[str, float | None]:
        """Median per-step rates between consecutive training logs with no evaluation in between."""
        evals = [t for t, _ in self.evals]
        tokens, trainable, seconds = [], [], []
        for (t0, a), (t1, b) in zip(self.train, self.train[1:], strict=False):
            if t1 <= t0 or any(t0 < t <= t1 for t in evals):
                continue
            seconds.append(t1 - t0)
            if "tokens/total" in a and "tokens/total" in b:
                tokens.append((b["tokens/total"] - a["tokens/total"]) / (t1 - t0))
            if "tokens/trainable" in a and "tokens/trainable" in b:
                trainable.append((b["tokens/trainable"] - a["tokens/trainable"]) / (t1 - t0))
        return {
            "seconds_per_step": _median(seconds),
            "tokens_per_second": _median(tokens),
            "trainable_tokens_per_second": _median(trainable),
        }

    def peak_vram_gib(self, part: str = "all") -> float | None:
        """The largest allocated peak Axolotl logged: in training steps ("train"), in evaluations
        ("eval") or both ("all"). Axolotl resets the counter at every log, so an eval log holds the
        evaluation's own peak and the next training log only training steps."""
        key = "memory/max_allocated (GiB)"
        entries = {"train": self.train, "eval": self.evals, "all": self.train + self.evals}[part]
        values = [v.get(key, 0.0) for _, v in entries]
        if part == "all":
            values.append(self.final.get(key, 0.0))
        return max(values, default=0.0) or None


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def stream(
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    log_path: Path,
    watcher: LogWatcher,
    run_dir: Path | None = None,
) -> int:
    """Run command; copy its output to our stdout and to log_path as it comes; return its exit code.

    The trainer leads its own process group, recorded in run_dir: if this process is killed outright
    (SIGKILL, a closed terminal), the next `voicetune train` on the run finds and stops it. SIGTERM (a
    timeout, systemd, a scheduler) stops the trainer as Ctrl-C does: by default it would end this
    process alone and leave the trainer's group running. The handler is in place before the trainer
    starts, so no moment is left uncovered."""
    previous = _raise_on_sigterm()
    try:
        return _stream(command, env, cwd, log_path, watcher, run_dir)
    finally:
        _restore_sigterm(previous)


def _stream(
    command: list[str],
    env: dict[str, str],
    cwd: Path,
    log_path: Path,
    watcher: LogWatcher,
    run_dir: Path | None,
) -> int:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with open(log_path, "ab") as log:
        log.write(f"\n===== voicetune train {utc_now()}: {shlex.join(command)}\n".encode())
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if run_dir is not None:
            resume.record_trainer(run_dir, proc.pid)
        assert proc.stdout is not None
        out = sys.stdout.buffer
        try:
            fd = proc.stdout.fileno()
            while chunk := os.read(fd, 1 << 16):
                out.write(chunk)
                out.flush()
                log.write(chunk)
                log.flush()
                watcher.feed(decoder.decode(chunk))
            code = proc.wait()
        except BaseException:
            # Ctrl-C or a termination request: pass it to the trainer's group, let it stop cleanly.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            raise
        finally:
            if run_dir is not None and proc.poll() is not None:
                resume.forget_trainer(run_dir)
        return code


def _raise_on_sigterm() -> Any:
    """Turn SIGTERM into KeyboardInterrupt while the trainer runs (main thread only); returns the
    handler to restore."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, interrupt)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


# ----------------------------------------------------------------------------------------- the verb


@dataclass
class _Plan:
    """What this run will train: the profile chosen, the rendered Axolotl config, its fingerprints."""

    inputs: Inputs
    choice: ProfileChoice
    gpu: Any
    attention: str
    on_cpu: bool
    cfg: dict[str, Any]
    fp: str
    resume_fp: str  # what a resume may not change (steps, epochs, GPU count and cadence it may)
    state: dict[str, Any] | None


@dataclass
class _Start:
    """Where training starts: fresh, from a checkpoint, or extending a finished run."""

    finished: dict[str, Any] | None
    extending: bool = False
    resume_from: Path | None = None
    incomplete: list[Path] = field(default_factory=list)


def run(args: argparse.Namespace) -> int:
    """plan -> resume -> render + preflight -> launch -> finish, under the run folder's lock."""
    started = time.monotonic()
    inputs = resolve_inputs(args)
    apply_private_env(None if inputs.settings.wandb == "off" else inputs.settings.wandb)
    run_dir = inputs.run_dir
    header(f"train: {inputs.data_dir} on {inputs.base_model} -> {run_dir}")

    with exclusive_lock(run_dir, "training into"):
        orphan = resume.stop_orphaned_trainer(run_dir)
        if orphan is not None:
            say(f"train: stopped the trainer left running by a killed `voicetune train` (group {orphan})")
        plan = plan_training(args, inputs)
        start = decide_start(args, plan)
        if start is None:
            return 0
        yaml_path, command, report = render_and_check(args, plan, start)
        if args.dry_run:
            say(f"dry run: rendered {yaml_path}")
            say(f"dry run: would run (in {run_dir}):\n  {shlex.join(command)}")
            return 0
        prepare_run_folder(args, plan, start, command)
        watcher = LogWatcher()
        train_started = time.monotonic()
        code = launch(plan.inputs, yaml_path, command, watcher)
        if code is None:
            return 130
        manifest = _finish(
            run_dir,
            plan.inputs,
            plan.choice,
            plan.cfg,
            plan.fp,
            report,
            watcher,
            train_seconds=time.monotonic() - train_started,
            wall=time.monotonic() - started,
            resumed_from=start.resume_from,
        )
        manifest["resume_fingerprint"] = plan.resume_fp
        write_manifest(run_dir, manifest)
    _summary(manifest)
    return 0


def plan_training(args: argparse.Namespace, inputs: Inputs) -> _Plan:
    """Choose the profile (and the recipe from the data), render the config, fingerprint it."""
    settings, run_dir = inputs.settings, inputs.run_dir
    state = _read_json(run_dir / RUN_STATE)
    gpu = preflight.read_gpu()
    sticky = state.get("auto") if state and not args.force and settings.profile == "auto" else None
    planned = state.get("recipe") if state and args.resume and not args.force else None
    choice = choose_profile(settings.profile, gpu, inputs, sticky, planned)
    attention, attention_reason = preflight.attention_for(gpu)
    on_cpu = not (gpu is not None and gpu.torch_cuda)
    spec = _spec(inputs, choice, attention, on_cpu=on_cpu)
    cfg = ac.render(choice.cfg, spec)
    data_fp, base_fp = inputs.data_manifest.get("fingerprint"), base_model_identity(inputs.base_model)
    fp = fingerprint(ac.fingerprint_view(cfg), data_fp, base_fp, settings.gpus)
    resume_fp = fingerprint(resume.resume_view(cfg), data_fp, base_fp)
    for line in choice.reasons:
        say(line)
    if not ac._attention_set(choice.cfg):
        say(f"attention: {attention} ({attention_reason})")
    for note in spec.notes:
        say(f"note: {note}")
    return _Plan(inputs, choice, gpu, attention, on_cpu, cfg, fp, resume_fp, state)


def decide_start(args: argparse.Namespace, plan: _Plan) -> _Start | None:
    """None when the run is up to date; else where to start, refusing anything that would mix two
    trainings (other settings or data under the same run name)."""
    run_dir = plan.inputs.run_dir
    finished = read_manifest(run_dir)
    start = _Start(finished)
    if finished and finished.get("step") == "train":
        if finished.get("fingerprint") == plan.fp and not args.force:
            say(
                f"train: up to date: {run_dir} already holds this training "
                f"(step {finished.get('global_step')}); --force trains it again"
            )
            return None
        start.extending = bool(args.resume and finished.get("resume_fingerprint") == plan.resume_fp)
        if not args.force and not start.extending:
            raise VoicetuneError(
                f"{run_dir} holds a finished training with other settings or data: pass --force to "
                f"replace it, --run NEW_NAME to keep both, or --resume to continue it when only "
                f"--max-steps/--epochs/--gpus changed"
            )
    output_dir = run_dir / "output"
    complete, start.incomplete = checkpoints(output_dir)
    if args.force:
        return start
    if complete and args.resume:
        if not _same_training(plan.state, plan.fp, plan.resume_fp):
            raise VoicetuneError(
                f"the settings or data changed since {run_dir.name} started: resuming would mix two "
                f"trainings; pass --force to start over, or train into a new --run"
            )
        start.resume_from = complete[-1]
        verb = "extending the finished run" if start.extending else "resuming"
        say(f"train: {verb} from {start.resume_from.name}")
    elif complete:
        raise VoicetuneError(
            f"{run_dir} holds checkpoints of an unfinished training (latest {complete[-1].name}): pass "
            f"--resume to continue it, or --force to start over"
        )
    elif args.resume:
        say(f"train: nothing to resume in {output_dir} (no complete checkpoint): starting from step 0")
    if start.resume_from is not None:
        # a checkpoint may come from another GPU count: re-lay it, and re-render for where it resumes
        inputs, start.resume_from = _adapt_to_gpu_count(
            plan.inputs, plan.state or finished or {}, start.resume_from
        )
        plan.inputs = inputs
        spec = _spec(inputs, plan.choice, plan.attention, start.resume_from, on_cpu=plan.on_cpu)
        plan.cfg = ac.render(plan.choice.cfg, spec)
        if resume.is_portable(start.resume_from):
            plan.cfg["plugins"] = [*(plan.cfg.get("plugins") or []), resume.PORTABLE_PLUGIN]
    return start


def render_and_check(args: argparse.Namespace, plan: _Plan, start: _Start) -> tuple[Path, list[str], Any]:
    """Write the rendered Axolotl YAML and run preflight on it (Axolotl's own schema included)."""
    inputs, run_dir, gpu = plan.inputs, plan.inputs.run_dir, plan.gpu
    yaml_name = "axolotl.dry-run.yaml" if args.dry_run and start.finished else "axolotl.yaml"
    yaml_path = run_dir / yaml_name
    write_text_atomic(
        yaml_path,
        ac.dump_yaml(
            plan.cfg,
            [
                f"Rendered by `voicetune train` from profile {plan.choice.name} for run {inputs.run_name}.",
                "Edit the profile (or pass --set key=value), not this file: every run rewrites it.",
            ],
        ),
    )
    on_gpu = gpu is not None and gpu.torch_cuda
    command = launch_command(yaml_path, inputs.settings.gpus, on_gpu)
    ctx = preflight.Context(
        yaml_path=yaml_path,
        run_dir=run_dir,
        data_dir=inputs.data_dir,
        data_format=inputs.data_format,
        base_model=inputs.base_model,
        gpu=gpu,
        gpus=inputs.settings.gpus,
        dry_run=args.dry_run,
    )
    return yaml_path, command, preflight.run_preflight(plan.cfg, ctx)


def prepare_run_folder(args: argparse.Namespace, plan: _Plan, start: _Start, command: list[str]) -> None:
    """Clear what must go (--force, a cut-off checkpoint) and record the run's state for --resume."""
    run_dir = plan.inputs.run_dir
    if args.force:
        _clear_run(run_dir)
    if start.extending:
        (run_dir / "manifest.json").unlink(missing_ok=True)  # no longer a finished training
    for folder in start.incomplete:
        say(f"train: removing {folder.name}: it was cut off while being written")
        shutil.rmtree(folder, ignore_errors=True)
    write_json_atomic(
        run_dir / RUN_STATE,
        {
            "fingerprint": plan.fp,
            "resume_fingerprint": plan.resume_fp,
            "gpus": plan.inputs.settings.gpus,
            "gradient_accumulation_steps": plan.cfg.get("gradient_accumulation_steps"),
            "started": utc_now(),
            "profile": plan.choice.name,
            "auto": plan.choice.auto,
            "recipe": plan.choice.recipe,
            "command": command,
            "resumed_from": str(start.resume_from) if start.resume_from else None,
        },
    )


def launch(inputs: Inputs, yaml_path: Path, command: list[str], watcher: LogWatcher) -> int | None:
    """Run Axolotl, streaming its log; None when interrupted (checkpoints kept for --resume)."""
    run_dir = inputs.run_dir
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", WANDB_DIR=str(run_dir))
    # what `axolotl train` sets by default, and what the 8 GB runs were measured with: reserved
    # memory stays near allocated instead of fragmenting (benchmarks/results/throughput-h200-8gb-*)
    env.setdefault("PYTORCH_ALLOC_CONF", "expandable_segments:True")
    header(f"axolotl train: {yaml_path} (log: {run_dir / 'train.log'})")
    try:
        code = stream(command, env, run_dir, run_dir / "train.log", watcher, run_dir)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: checkpoints so far are in {run_dir / 'output'}; continue with --resume",
            file=sys.stderr,
        )
        return None
    if code != 0:
        raise VoicetuneError(
            f"axolotl train failed (exit {code}): {_last_error(watcher)}; the full log is "
            f"{run_dir / 'train.log'}"
        )
    return code


# On a CPU, Axolotl's evaluation (it always evaluates once before the first step) over a whole val
# split costs more than the training itself: evaluate on an evenly spread sample instead.
CPU_EVAL_EXAMPLES = 16


def cpu_val_sample(val: Path, run_dir: Path, limit: int = CPU_EVAL_EXAMPLES) -> Path:
    """At most `limit` val examples, evenly spread over the file, written beside the run (stable path)."""
    lines = [line for line in val.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) <= limit:
        return val
    step = len(lines) / limit
    sample = [lines[int(i * step)] for i in range(limit)]
    target = run_dir / "val-cpu-sample.jsonl"
    write_text_atomic(target, "\n".join(sample) + "\n")
    return target


def mixed_train_file(train: Path, run_dir: Path, keep_modes: list[str] | tuple[str, ...]) -> Path:
    """The training pairs of the kept modes only (the recipe's mix), in their prepared order, written
    beside the run (stable path, so a resume reads the same file)."""
    kept = []
    for line in train.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            mode = json.loads(line).get("mode")
        except ValueError as exc:
            raise VoicetuneError(f"{train} has a line that is not JSON: prepare the data again") from exc
        if mode is None or mode in keep_modes:
            kept.append(line)
    if not kept:
        raise VoicetuneError(f"{train} holds no {' or '.join(keep_modes)} pairs: prepare the data again")
    target = run_dir / "train-mix.jsonl"
    write_text_atomic(target, "\n".join(kept) + "\n")
    return target


def _spec(
    inputs: Inputs,
    choice: ProfileChoice,
    attention: str,
    resume_from: Path | None = None,
    on_cpu: bool = False,
) -> ac.RunSpec:
    s = inputs.settings
    val = inputs.data_dir / "val.jsonl"
    has_val = val.is_file() and val.stat().st_size > 0
    val_file = cpu_val_sample(val, inputs.run_dir) if has_val and on_cpu else None
    keep_modes = (choice.recipe or {}).get("keep_modes")
    train_file = (
        mixed_train_file(inputs.data_dir / "train.jsonl", inputs.run_dir, keep_modes) if keep_modes else None
    )
    return ac.RunSpec(
        run_name=inputs.run_name,
        run_dir=inputs.run_dir,
        base_model=inputs.base_model,
        data_dir=inputs.data_dir,
        data_format=inputs.data_format,
        data_sequence_len=inputs.data_sequence_len,
        train_tokens=ac.approx_train_tokens(inputs.data_dir),
        has_val=has_val,
        val_file=val_file,
        val_examples=_count_lines(val_file or val) if has_val else None,
        max_steps=s.max_steps,
        epochs=s.epochs,
        sequence_len=s.sequence_len,
        micro_batch=s.micro_batch,
        grad_accum=s.grad_accum,
        lr=s.lr,
        wandb=s.wandb,
        attention=attention,
        resume_from=resume_from,
        gpus=s.gpus,
        multi_gpu=s.multi_gpu,
        overrides=inputs.overrides,
        fit_eval_to_memory=not on_cpu,
        train_file=train_file,
        planned=choice.recipe is not None,
    )


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _clear_run(run_dir: Path) -> None:
    for name in ("manifest.json", RUN_STATE):
        (run_dir / name).unlink(missing_ok=True)
    for folder in ("output", PORTABLE_DIR):
        shutil.rmtree(run_dir / folder, ignore_errors=True)


# Where a checkpoint from another GPU count is re-laid for this one (see voicetune.train.resume).
PORTABLE_DIR = "resume-portable"


def _same_training(state: dict[str, Any] | None, fp: str, resume_fp: str) -> bool:
    """Whether an interrupted run's recorded settings allow resuming it with these ones."""
    if not state:
        return True
    if state.get("resume_fingerprint"):
        return bool(state["resume_fingerprint"] == resume_fp)
    return state.get("fingerprint") in (None, fp)  # written before resume fingerprints existed


def _adapt_to_gpu_count(inputs: Inputs, recorded: dict[str, Any], checkpoint: Path) -> tuple[Inputs, Path]:
    """Resume on another GPU count: keep the global batch, and re-lay a DeepSpeed checkpoint."""
    s = inputs.settings
    old_gpus = int(recorded.get("gpus") or 1)
    if old_gpus == s.gpus:
        return inputs, checkpoint
    old_ga = recorded.get("gradient_accumulation_steps")
    if s.grad_accum is None and isinstance(old_ga, int):
        new_ga = resume.scaled_grad_accum(old_ga, old_gpus, s.gpus)
        if new_ga is not None:
            say(
                f"train: checkpoint written on {old_gpus} GPU(s), resuming on {s.gpus}: gradient "
                f"accumulation {old_ga} -> {new_ga} keeps the global batch"
            )
            inputs = replace(inputs, settings=s.model_copy(update={"grad_accum": new_ga}))
        else:
            say(f"train: the global batch changes: {old_ga} x {old_gpus} GPUs cannot be split over {s.gpus}")
    shards = resume.deepspeed_world_size(checkpoint)
    if shards is None or shards == s.gpus:
        return inputs, checkpoint
    if s.gpus > 1:
        raise VoicetuneError(
            f"{checkpoint} holds DeepSpeed ZeRO optimizer shards for {shards} GPUs, and DeepSpeed cannot "
            f"re-partition them for {s.gpus}: resume with --gpus {shards}, or with --gpus 1"
        )
    portable = resume.portable_checkpoint(
        checkpoint, inputs.run_dir / PORTABLE_DIR, f"DeepSpeed shards for {shards} GPUs, resuming on 1"
    )
    say(
        f"train: {checkpoint.name} was written by DeepSpeed on {shards} GPUs: resuming on 1 GPU from the "
        f"adapter, step, data position and LR schedule; the optimizer moments start afresh"
    )
    return inputs, portable


def _last_error(watcher: LogWatcher) -> str:
    for line in reversed(watcher.last_lines):
        if re.search(r"(Error|Exception|error:)", line) and not line.startswith("warnings.warn"):
            return line[:300]
    return watcher.last_lines[-1][:300] if watcher.last_lines else "no output"


def _finish(
    run_dir: Path,
    inputs: Inputs,
    choice: ProfileChoice,
    cfg: dict[str, Any],
    fp: str,
    report: preflight.Report,
    watcher: LogWatcher,
    train_seconds: float,
    wall: float,
    resumed_from: Path | None,
) -> dict[str, Any]:
    output_dir = run_dir / "output"
    adapter = output_dir / "adapter_model.safetensors"
    if not adapter.is_file() or not (output_dir / "adapter_config.json").is_file():
        raise VoicetuneError(f"Axolotl finished but {adapter} is missing: see {run_dir / 'train.log'}")
    complete, _ = checkpoints(output_dir)
    state = _read_json(complete[-1] / "trainer_state.json") if complete else None
    history = (state or {}).get("log_history", [])
    train_logs = [h for h in history if "loss" in h]
    eval_logs = [h for h in history if "eval_loss" in h]
    rates = watcher.throughput()
    estimate = report.estimate
    outputs = {
        "axolotl.yaml": sha256_file(run_dir / "axolotl.yaml"),
        "output/adapter_model.safetensors": sha256_file(adapter),
        "output/adapter_config.json": sha256_file(output_dir / "adapter_config.json"),
    }
    settings = {
        **{k: v for k, v in inputs.settings.model_dump().items() if v not in (None, {}, [])},
        "requested_profile": inputs.settings.profile,
        "profile": choice.name,
        "rendered": {
            k: cfg.get(k)
            for k in (
                "adapter",
                "load_in_4bit",
                "lora_r",
                "lora_alpha",
                "lora_dropout",
                "lora_target_modules",
                "sequence_len",
                "micro_batch_size",
                "gradient_accumulation_steps",
                "learning_rate",
                "num_epochs",
                "max_steps",
                "optimizer",
                "attn_implementation",
                "sample_packing",
            )
        },
    }
    return build_manifest(
        "train",
        fp,
        settings=settings,
        inputs={
            "data": inputs.data_manifest.get("fingerprint"),
            "base_model": base_model_identity(inputs.base_model),
        },
        outputs=outputs,
        libraries=LIBRARIES,
        # relative to the run folder: a moved project, or a run copied under a new name, still works
        adapter_dir=stored_path(output_dir, run_dir),
        base_model=stored_path(inputs.base_model, run_dir),
        data_dir=stored_path(inputs.data_dir, run_dir),
        data_fingerprint=inputs.data_manifest.get("fingerprint"),
        profile=choice.name,
        recipe=choice.recipe,
        quantized_4bit=bool(cfg.get("load_in_4bit")),
        max_steps=(state or {}).get("max_steps", cfg.get("max_steps")),
        global_step=(state or {}).get("global_step"),
        epoch=(state or {}).get("epoch"),
        final_train_loss=train_logs[-1]["loss"] if train_logs else _last(watcher.train, "loss"),
        final_eval_loss=eval_logs[-1]["eval_loss"] if eval_logs else _last(watcher.evals, "eval_loss"),
        first_eval_loss=eval_logs[0]["eval_loss"] if eval_logs else None,
        train_loss_mean=watcher.final.get("train_loss"),
        tokens_per_second=rates["tokens_per_second"],
        trainable_tokens_per_second=rates["trainable_tokens_per_second"],
        seconds_per_step=rates["seconds_per_step"],
        peak_vram_gib=watcher.peak_vram_gib(),
        peak_vram_train_gib=watcher.peak_vram_gib("train"),
        peak_vram_eval_gib=watcher.peak_vram_gib("eval"),
        vram_estimate_gib=_gib(estimate.highest_peak) if estimate else None,
        vram_estimate_train_gib=_gib(estimate.peak_allocated) if estimate else None,
        vram_estimate_eval_gib=_gib(estimate.eval_peak) if estimate else None,
        data_stats=report.data.__dict__ if report.data else None,
        preflight_seconds=round(report.seconds, 1),
        train_seconds=round(train_seconds, 1),
        wall_seconds=round(wall, 1),
        resumed_from=resumed_from.name if resumed_from else None,
        gpus=inputs.settings.gpus,
    )


def _gib(value: int) -> float:
    return round(value / vram.GIB, 2)


def _last(entries: list[tuple[float, dict[str, float]]], key: str) -> float | None:
    values = [v[key] for _, v in entries if key in v]
    return values[-1] if values else None


def _summary(manifest: dict[str, Any]) -> None:
    def fmt(value: Any, spec: str = ".3f") -> str:
        return format(value, spec) if isinstance(value, int | float) else "n/a"

    header("train: done")
    say(f"adapter:     {manifest['adapter_dir']}")
    say(f"steps:       {manifest.get('global_step')} of {manifest.get('max_steps')}")
    say(
        f"train loss:  {fmt(manifest.get('final_train_loss'))}   "
        f"eval loss: {fmt(manifest.get('first_eval_loss'))} -> {fmt(manifest.get('final_eval_loss'))}"
    )
    say(
        f"throughput:  {fmt(manifest.get('tokens_per_second'), '.0f')} tokens/s "
        f"({fmt(manifest.get('trainable_tokens_per_second'), '.0f')} trainable), "
        f"{fmt(manifest.get('seconds_per_step'), '.2f')} s/step"
    )
    if manifest.get("peak_vram_gib"):
        parts = [
            f"{manifest[peak]} GiB {where} (estimate {manifest.get(est, 'n/a')})"
            for peak, est, where in (
                ("peak_vram_train_gib", "vram_estimate_train_gib", "in training steps"),
                ("peak_vram_eval_gib", "vram_estimate_eval_gib", "in evaluation"),
            )
            if manifest.get(peak)
        ]
        say(f"peak VRAM:   {', '.join(parts) or str(manifest['peak_vram_gib']) + ' GiB'} allocated")
    say(f"wall time:   {fmt(manifest.get('wall_seconds'), '.0f')} s")
