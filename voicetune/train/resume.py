"""How `voicetune train --resume` continues a run: what may change, and checkpoints that move
between GPU counts.

A run may be resumed with more steps or epochs (extending a finished run), on another number of
GPUs, or with another checkpoint/eval cadence: none of these changes what was trained so far. Any
other change (data, base model, LoRA shape, learning rate...) would mix two trainings and is refused.

On another GPU count the global batch is kept: gradient accumulation is scaled by old/new GPUs.
A checkpoint written under DeepSpeed ZeRO holds the optimizer state in one shard per GPU, and
DeepSpeed refuses to load it on another count ("Automatic adjustment of ZeRO's optimizer state
partitioning with a new world size is not currently supported"). Such a checkpoint is resumed from
a portable view of it: the adapter weights, the step count, the data position, the RNG and the LR
schedule carry over; the Adam moments start afresh (they rebuild within tens of steps). The LR
schedule is restored by voicetune.train.axolotl_plugin.PortableResume, since the Trainer only reads
scheduler.pt when an optimizer.pt sits beside it.

Also here: the trainer process of a run whose `voicetune train` was killed (SIGKILL leaves no
chance to stop children) is found by its process group and stopped before a resume, so two
trainings never write into one folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from voicetune.core.manifest import write_json_atomic
from voicetune.train.axolotl_config import fingerprint_view

# Keys a resume may change without changing what the checkpoint holds.
RESUMABLE_KEYS = (
    "max_steps",
    "num_epochs",
    "gradient_accumulation_steps",
    "deepspeed",
    "fsdp",
    "fsdp_config",
    "fsdp_version",
    "eval_sample_packing",
    "save_steps",
    "saves_per_epoch",
    "eval_steps",
    "evals_per_epoch",
    "save_total_limit",
    "early_stopping_patience",
)
PORTABLE_MARKER = "voicetune-portable.json"
PORTABLE_PLUGIN = "voicetune.train.axolotl_plugin.PortableResume"
TRAINER_PID_FILE = "trainer.pid"
# DeepSpeed's per-GPU pieces; a portable view leaves them out.
_DEEPSPEED_ONLY = ("latest", "zero_to_fp32.py")


def resume_view(cfg: dict[str, Any]) -> dict[str, Any]:
    """The part of a rendered config that must not change between a checkpoint and its resume."""
    view = fingerprint_view(cfg)
    for key in RESUMABLE_KEYS:
        view.pop(key, None)
    return view


def scaled_grad_accum(grad_accum: int, old_gpus: int, new_gpus: int) -> int | None:
    """Gradient accumulation that keeps micro_batch x GA x GPUs; None when no whole number does."""
    total = grad_accum * old_gpus
    return total // new_gpus if total % new_gpus == 0 and total >= new_gpus else None


def deepspeed_world_size(checkpoint: Path) -> int | None:
    """How many GPUs wrote the DeepSpeed shards of a checkpoint (None: not a DeepSpeed checkpoint)."""
    shards = list(checkpoint.glob("global_step*/*optim_states.pt"))
    return len(shards) or None


def portable_checkpoint(checkpoint: Path, dest_root: Path, reason: str) -> Path:
    """A copy of checkpoint without its DeepSpeed shards, under dest_root/<checkpoint name>: what the
    Trainer resumes from on another GPU count. Files are hard links where the filesystem allows."""
    dest = dest_root / checkpoint.name
    temporary = dest_root / f".{checkpoint.name}.tmp-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    for item in checkpoint.iterdir():
        if item.name in _DEEPSPEED_ONLY or item.name.startswith("global_step"):
            continue
        target = temporary / item.name
        if item.is_dir():
            shutil.copytree(item, target)
        else:
            try:
                os.link(item, target)
            except OSError:
                shutil.copy2(item, target)
    # one process reads rng_state.pth; rank 0's state is the one to continue
    if not (temporary / "rng_state.pth").exists() and (temporary / "rng_state_0.pth").exists():
        os.link(temporary / "rng_state_0.pth", temporary / "rng_state.pth")
    write_json_atomic(
        temporary / PORTABLE_MARKER,
        {
            "source": str(checkpoint),
            "reason": reason,
            "restores": ["adapter weights", "step", "data position", "RNG", "LR schedule"],
            "starts_afresh": ["optimizer moments"],
        },
    )
    shutil.rmtree(dest, ignore_errors=True)
    temporary.rename(dest)
    return dest


def is_portable(checkpoint: Path | str | None) -> bool:
    return checkpoint is not None and (Path(checkpoint) / PORTABLE_MARKER).is_file()


# ---------------------------------------------------------------- the trainer of a killed run
def record_trainer(run_dir: Path, pid: int) -> None:
    """Remember the trainer's process group (it leads its own session) for a later resume."""
    write_json_atomic(run_dir / TRAINER_PID_FILE, {"pgid": pid, "started": time.time()})


def forget_trainer(run_dir: Path) -> None:
    (run_dir / TRAINER_PID_FILE).unlink(missing_ok=True)


def stop_orphaned_trainer(run_dir: Path, grace_s: float = 20.0) -> int | None:
    """Stop the trainer left running by a `voicetune train` that was killed; returns its pgid.

    Called under the run's lock, so no live voicetune owns that trainer any more. The group is only
    signalled when its leader still runs accelerate or axolotl (a recycled pid is left alone)."""
    record = run_dir / TRAINER_PID_FILE
    try:
        pgid = int(json.loads(record.read_text(encoding="utf-8"))["pgid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _is_trainer(pgid):
        forget_trainer(run_dir)
        return None
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _group_alive(pgid):
            time.sleep(0.2)
        if not _group_alive(pgid):
            break
    forget_trainer(run_dir)
    return pgid


def _is_trainer(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False
    return b"accelerate" in cmdline or b"axolotl" in cmdline


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies of the group count as gone
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
