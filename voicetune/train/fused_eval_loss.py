"""An Axolotl plugin, listed under `plugins:` in every GPU profile: Liger's fused loss in evaluation
too. Axolotl imports it by name in the training process; `voicetune` itself never does.

Liger's fused linear + cross-entropy never builds the [tokens x vocabulary]
logits, but Liger uses it only in training (`skip_logits` defaults to `self.training`). Evaluation
then builds the full logits in fp32: for an 8B model with a 128k vocabulary, 2 GiB per 2048 tokens,
more than a training step needs on an 8 GB card, and 28 GiB for SmolLM2 at eval batch 15 x 4096.
Axolotl's evaluation only wants the loss (it sets no compute_metrics), so the plugin asks the model
for the loss alone whenever the Trainer says so (`prediction_loss_only`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from axolotl.integrations.base import BasePlugin

NAME = "voicetune.train.fused_eval_loss.FusedEvalLossPlugin"


def loss_only_prediction_step(prediction_step: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap Trainer.prediction_step: when only the loss is wanted and labels are there, pass
    `skip_logits=True` so Liger's forward computes the loss fused, without logits."""

    def wrapped(
        model: Any, inputs: dict[str, Any], prediction_loss_only: bool, ignore_keys: Any = None
    ) -> Any:
        if prediction_loss_only and inputs.get("labels") is not None:
            inputs = {**inputs, "skip_logits": True}
        return prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)

    return wrapped


def accepts_skip_logits(model: Any) -> bool:
    """Whether the model's forward is one of Liger's (it takes `skip_logits`). Liger patches the
    forward of the architectures it supports (the class, or the instance); any other model's
    evaluation is left as Axolotl does it."""
    get_base_model = getattr(model, "get_base_model", None)  # a PEFT wrapper
    base = get_base_model() if callable(get_base_model) else model
    return "skip_logits" in inspect.signature(base.forward).parameters


class FusedEvalLossPlugin(BasePlugin):  # type: ignore[misc]
    """Evaluation through Liger's fused loss (see the module docstring)."""

    def post_trainer_create(self, cfg: Any, trainer: Any) -> None:
        if (
            cfg.liger_fused_linear_cross_entropy
            and trainer.compute_metrics is None
            and accepts_skip_logits(trainer.model)
        ):
            trainer.prediction_step = loss_only_prediction_step(trainer.prediction_step)
