"""An Axolotl plugin that finishes a resume from a portable checkpoint (see voicetune.train.resume).

The Trainer restores the adapter, the step, the data position and the RNG from such a checkpoint by
itself, but reads scheduler.pt only when optimizer.pt is beside it, and a checkpoint written under
DeepSpeed ZeRO on another GPU count has no usable optimizer.pt. This plugin loads scheduler.pt into
the new scheduler when training begins, so the learning rate continues where it stopped instead of
warming up again. voicetune adds it to the rendered config only for such a resume.

Runs inside the training process (imported by Axolotl), never in `voicetune` itself.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback

from voicetune.train.resume import is_portable

LOG = logging.getLogger("voicetune.train.resume")
SCHEDULER_FILE = "scheduler.pt"


class RestoreSchedulerCallback(TrainerCallback):
    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        scheduler = kwargs.get("lr_scheduler")
        path = self.checkpoint / SCHEDULER_FILE
        if scheduler is None or not path.is_file():
            LOG.warning("voicetune: %s has no %s: the LR schedule restarts", self.checkpoint, SCHEDULER_FILE)
            return
        import torch

        saved = torch.load(path, map_location="cpu", weights_only=True)
        _continue_schedule(scheduler, saved)
        lrs = ", ".join(f"{lr:.3g}" for lr in scheduler.get_last_lr())
        print(
            f"voicetune: resumed from a portable checkpoint at step {state.global_step}: LR schedule "
            f"restored (lr {lrs}); optimizer moments start afresh",
            flush=True,
        )


def _continue_schedule(scheduler: Any, saved: dict[str, Any]) -> None:
    """Move the new scheduler to the saved step. Only the step is taken: the saved base LRs belong
    to the old optimizer's parameter groups, which DeepSpeed lays out differently (loading them
    whole fails with "zip() argument 2 is shorter than argument 1" on the first step)."""
    lambdas = getattr(scheduler, "lr_lambdas", None)
    if lambdas is None or len(lambdas) != len(scheduler.base_lrs):
        scheduler.load_state_dict(saved)  # not a LambdaLR: its own state is all there is
        return
    scheduler.last_epoch = int(saved["last_epoch"])
    scheduler._step_count = int(saved.get("_step_count", scheduler.last_epoch + 1))
    values = [base * fn(scheduler.last_epoch) for fn, base in zip(lambdas, scheduler.base_lrs, strict=True)]
    for group, lr in zip(scheduler.optimizer.param_groups, values, strict=True):
        group["lr"] = lr
    scheduler._last_lr = values


class PortableResume(BasePlugin):
    def add_callbacks_post_trainer(self, cfg: Any, trainer: Any) -> list[Any]:
        checkpoint = cfg.get("resume_from_checkpoint") if cfg is not None else None
        return [RestoreSchedulerCallback(Path(checkpoint))] if is_portable(checkpoint) else []
