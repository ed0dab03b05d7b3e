"""The training recipe from the data: updates first, then the batch, then throughput.

Pure (no torch, no Axolotl): from the prepared corpus (words, documents, examples, tokens, the mix
of pair modes) and what the machine can hold, `plan()` decides how many optimizer updates the voice
needs, the largest batch that keeps them, the epochs, the learning rate, the LoRA rank, the
checkpoint cadence (for the voice curve) and the mix of write/continue/rewrite pairs, and says why
in one line each. The rules and the evidence behind them:

- Updates before throughput. An adapter learns a voice by taking steps, not by seeing tokens in big
  batches. On an H200 (issue 20) `--profile auto` once filled the card: sequence 4096 x micro batch
  16 with packing, ~65k tokens an optimizer step, so 3 epochs of the author's 84k training words
  were 3 updates and the voice did not move; the same run at micro batch 4 x sequence 512 (225
  updates, 171 s) moved it a lot. So the number of updates is planned first, from the corpus size:
  `target_updates` gives ~300 for 20k words, ~460 for 84k, ~600 for 200k, at most 1,000 (a few
  hundred updates for a writer's corpus; more text, a few more steps, since each step then sees
  text the adapter has not fitted yet).
- Epochs: 3 under 200k words, 2 under 2M, 1 above (with lr 1e-4, r 64, a few hundred thousand
  tokens of one author overfit after about three epochs: val loss turns up). A corpus too small for
  the target even at one row per update gets more passes, at most MAX_EPOCHS.
- The batch: rows (packed sequences of the data's sequence length) per update = the epochs' rows /
  the target updates, rounded down, at least 1; the micro batch is the largest that fits memory up to
  that, gradient accumulation makes up the rest. Throughput is tuned within that, never against it.
- On a CPU the profile's `max_steps` x rows a step is a budget of rows (time): it is spent on as many
  updates as the target asks, one row each if need be, instead of few large ones.
- Learning rate: the profile's, raised so that lr x updates >= LR_UPDATES (0.08: on the H200, 816
  updates at 1e-4 moved the demo model's voice score from 0.45 to 0.75, benchmarks/results/
  gpu-h200-voice; Adam's step size is about lr whatever the batch), at most MAX_LR.
- LoRA rank: the profile's, at most 16 under 30k words (a small corpus fits in fewer parameters;
  alpha stays 2 x r, so the update's scale is unchanged).
- Mix: the prepared mix of pairs, unless the budget covers less than one epoch: then rewrite pairs
  are left out (their prompt holds a plain twin of the passage, so they teach the fewest author
  words per token) and the rows go to continue and write pairs.
- Checkpoints: CHECKPOINTS evenly spaced saves (each with an eval loss), all kept, so that the
  voice curve (voicetune.voice.checkpoint_choice) can score each one and merge the best.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

WORDS_LOW = 20_000
MIN_UPDATES = 200
MAX_UPDATES = 1_000
MAX_EPOCHS = 6
LR_UPDATES = 0.08  # lr x updates of the H200 run that moved the voice: 816 x 1e-4
MAX_LR = 1e-3
SMALL_CORPUS_WORDS = 30_000
SMALL_CORPUS_RANK = 16
# Share of a packed row that holds tokens (the rest is the tail left empty): 0.78 measured on the H200
# (benchmarks/results/gpu-h200-voice: 0.9 planned 703 steps of the demo author at 512 tokens, Axolotl
# packed them into 816).
PACKING_EFFICIENCY = 0.78
CHECKPOINTS = 5
CPU_CHECKPOINTS = 2  # each costs an evaluation and a point on the voice curve: minutes on a CPU
# micro batches the VRAM estimator is asked about (the largest that fits, up to what the plan needs)
MICRO_BATCHES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
# the Axolotl keys a recipe sets; a person who sets one (flag or --set) keeps it, the recipe plans around it
PLANNED_KEYS = (
    "sequence_len",
    "micro_batch_size",
    "gradient_accumulation_steps",
    "num_epochs",
    "learning_rate",
    "lora_r",
    "lora_alpha",
    "max_steps",
    "save_steps",
    "eval_steps",
    "save_total_limit",
)


@dataclass(frozen=True)
class Corpus:
    """What the prepared data holds (from its manifest: voicetune.core.artifacts.PreparedData)."""

    words: int  # the author's words in the training split
    documents: int
    examples: int  # training pairs
    tokens: int  # tokens of all training pairs, chat template included
    sequence_len: int  # no example is longer (the data was chunked for it)
    modes: Mapping[str, int] = field(default_factory=dict)  # training pairs per mode

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], fallback_tokens: int = 0) -> Corpus:
        counts = (manifest.get("counts") or {}).get("train") or {}
        if not isinstance(counts, Mapping):  # an older manifest: the number of training pairs
            counts = {"pairs": counts}
        stats = (manifest.get("token_stats") or {}).get("train") or {}
        settings = manifest.get("settings") or {}
        examples = int(counts.get("pairs") or stats.get("examples") or 0)
        return cls(
            words=int(counts.get("words") or manifest.get("words") or 0),
            documents=int(counts.get("docs") or 0),
            examples=examples,
            tokens=int(stats.get("total") or fallback_tokens),
            sequence_len=int(stats.get("sequence_len") or settings.get("sequence_len") or 512),
            modes={str(k): int(v) for k, v in (counts.get("modes") or {}).items()},
        )


@dataclass(frozen=True)
class Machine:
    """What the recipe needs to know of the machine."""

    on_gpu: bool
    max_micro_batch: int  # the largest micro batch that fits at the data's sequence length
    description: str = ""


@dataclass
class Recipe:
    updates: int
    epochs: float
    rows_per_epoch: int
    micro_batch: int
    grad_accum: int
    sequence_len: int
    learning_rate: float
    lora_r: int
    lora_alpha: int
    save_steps: int
    max_steps: int | None  # set when a budget (CPU) ends the run before the epochs do
    keep_modes: tuple[str, ...] | None  # None: every mode as prepared
    reasons: list[str] = field(default_factory=list)

    @property
    def rows_per_step(self) -> int:
        return self.micro_batch * self.grad_accum

    def axolotl_keys(self) -> dict[str, Any]:
        """The Axolotl keys this recipe sets (over the profile's)."""
        keys: dict[str, Any] = {
            "sequence_len": self.sequence_len,
            "micro_batch_size": self.micro_batch,
            "gradient_accumulation_steps": self.grad_accum,
            "num_epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            # every checkpoint is kept and evaluated: the voice curve scores each one
            "save_steps": self.save_steps,
            "eval_steps": self.save_steps,
            "save_total_limit": None,
        }
        keys["max_steps"] = self.max_steps
        return keys

    def as_json(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "epochs": self.epochs,
            "rows_per_epoch": self.rows_per_epoch,
            "rows_per_step": self.rows_per_step,
            "tokens_per_step": self.rows_per_step * self.sequence_len,
            "micro_batch": self.micro_batch,
            "grad_accum": self.grad_accum,
            "sequence_len": self.sequence_len,
            "learning_rate": self.learning_rate,
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "save_steps": self.save_steps,
            "max_steps": self.max_steps,
            "keep_modes": list(self.keep_modes) if self.keep_modes else None,
            "reasons": list(self.reasons),
        }


def target_updates(words: int) -> int:
    """Optimizer updates a corpus of `words` needs: ~300 at 20k words, ~600 at 200k (x^0.3), in
    MIN_UPDATES..MAX_UPDATES, rounded to tens."""
    raw = 300 * (max(words, 1) / WORDS_LOW) ** 0.3
    return int(min(MAX_UPDATES, max(MIN_UPDATES, round(raw / 10) * 10)))


def epochs_for_words(words: int) -> int:
    """3 under 200k words, 2 under 2M, else 1 (about three epochs overfit a writer's corpus)."""
    if words < 200_000:
        return 3
    if words < 2_000_000:
        return 2
    return 1


def rows_per_epoch(corpus: Corpus, sequence_len: int, packing: bool) -> int:
    """Packed rows of `sequence_len` one pass over the training pairs fills (examples unpacked)."""
    if not packing:
        return max(1, corpus.examples)
    return max(1, math.ceil(corpus.tokens / (sequence_len * PACKING_EFFICIENCY)))


def _words(n: float) -> str:
    return f"{n / 1000:.0f}k" if n >= 1000 else f"{n:.0f}"


def plan(
    corpus: Corpus,
    machine: Machine,
    profile: Mapping[str, Any],
    *,
    fixed: Mapping[str, Any] | None = None,
) -> Recipe:
    """The recipe for `corpus` on `machine`, starting from the profile's keys.

    `fixed`: Axolotl keys the person set (flags, --set); the recipe plans around them and never
    changes them (a fixed micro batch still gets the updates from gradient accumulation)."""
    fixed = dict(fixed or {})
    reasons: list[str] = []
    seq = int(fixed.get("sequence_len") or corpus.sequence_len)
    packing = bool(profile.get("sample_packing", False))
    per_epoch = rows_per_epoch(corpus, seq, packing)
    target = target_updates(corpus.words)

    budget_rows: int | None = None
    if not machine.on_gpu and profile.get("max_steps") and "max_steps" not in fixed:
        budget_rows = (
            int(profile["max_steps"])
            * int(profile.get("micro_batch_size") or 1)
            * int(profile.get("gradient_accumulation_steps") or 1)
        )

    if "num_epochs" in fixed:
        epochs: float = float(fixed["num_epochs"])
        epochs_why = "as set"
    else:
        epochs = epochs_for_words(corpus.words)
        epochs_why = "about three epochs overfit a writer's corpus (val loss turns up)"
        if per_epoch * epochs < target and budget_rows is None:
            more = min(MAX_EPOCHS, math.ceil(target / per_epoch))
            if more > epochs:
                epochs = more
                epochs_why = f"a small corpus: more passes to reach ~{target} updates, at most {MAX_EPOCHS}"
    total_rows = per_epoch * epochs
    if budget_rows is not None:
        total_rows = min(total_rows, budget_rows)

    rows_step = max(1, int(total_rows // target))
    # The rows of a step in as few micro batches as memory allows, split evenly (rounded down, so the
    # updates stay at or above the target).
    if "micro_batch_size" in fixed:
        micro = int(fixed["micro_batch_size"])
        accum = int(fixed.get("gradient_accumulation_steps") or max(1, rows_step // micro))
    elif "gradient_accumulation_steps" in fixed:
        accum = int(fixed["gradient_accumulation_steps"])
        micro = max(1, min(machine.max_micro_batch, rows_step // accum))
    else:
        accum = math.ceil(rows_step / max(1, machine.max_micro_batch))
        micro = max(1, rows_step // accum)
    rows_step = micro * accum
    updates = max(1, math.ceil(total_rows / rows_step))
    max_steps: int | None = int(fixed["max_steps"]) if fixed.get("max_steps") else None
    if budget_rows is not None and budget_rows < per_epoch * epochs:
        max_steps = updates
    if max_steps is not None:
        updates = min(updates, max_steps) if budget_rows is None else max_steps

    covered = updates * rows_step / per_epoch
    within = budget_rows is not None and budget_rows < per_epoch * epochs
    reasons.append(
        f"updates first: {_words(corpus.words)} words -> {updates} optimizer steps of "
        f"{rows_step * seq:,} tokens ({rows_step} x {seq}), "
        + (
            f"{covered:.2g} epochs (the CPU budget: {budget_rows} rows of the {per_epoch} an epoch holds)"
            if within
            else f"{epochs:g} epochs ({epochs_why})"
        )
        + f"; the target for {_words(corpus.words)} words is ~{target} (3 updates left a voice where "
        f"it was, 225 moved it)"
    )
    if "micro_batch_size" not in fixed:
        reasons.append(
            f"batch: micro batch {micro} x gradient accumulation {accum}: the largest batch that keeps "
            f"~{target} updates"
            + (
                f" (the GPU would hold {machine.max_micro_batch} a step)"
                if machine.max_micro_batch > micro
                else ""
            )
        )

    base_lr = float(fixed.get("learning_rate") or profile.get("learning_rate") or 2e-4)
    lr = base_lr
    if "learning_rate" not in fixed and base_lr * updates < LR_UPDATES:
        lr = min(MAX_LR, LR_UPDATES / updates)
        reasons.append(
            f"learning rate {lr:.2g} (profile {base_lr:.2g}): lr x updates >= {LR_UPDATES} "
            f"({updates} updates; 816 at 1e-4 moved the voice on the H200)"
        )
    else:
        reasons.append(
            f"learning rate {lr:.2g}: {'as set' if 'learning_rate' in fixed else 'the profile'}'s "
            f"(lr x updates = {lr * updates:.3g} >= {LR_UPDATES})"
        )

    rank = int(fixed.get("lora_r") or profile.get("lora_r") or 16)
    alpha = int(fixed.get("lora_alpha") or profile.get("lora_alpha") or 2 * rank)
    if "lora_r" not in fixed and corpus.words < SMALL_CORPUS_WORDS and rank > SMALL_CORPUS_RANK:
        ratio = alpha / rank
        rank = SMALL_CORPUS_RANK
        alpha = round(ratio * rank) if "lora_alpha" not in fixed else alpha
        reasons.append(
            f"LoRA rank {rank} (alpha {alpha}): {_words(corpus.words)} words fit in fewer parameters"
        )
    else:
        reasons.append(f"LoRA rank {rank} (alpha {alpha}): the profile's")

    keep: tuple[str, ...] | None = None
    mix = ", ".join(f"{m} {n}" for m, n in sorted(corpus.modes.items())) or "as prepared"
    if covered < 1 and corpus.modes.get("rewrite") and len(corpus.modes) > 1:
        keep = tuple(sorted(m for m in corpus.modes if m != "rewrite"))
        reasons.append(
            f"mix: {' + '.join(keep)} pairs only (prepared: {mix}): the budget covers {covered:.0%} of an "
            f"epoch, and a rewrite pair spends its prompt on a plain twin of the passage"
        )
    else:
        reasons.append(f"mix: as prepared ({mix} training pairs)")

    checkpoints = CHECKPOINTS if machine.on_gpu else CPU_CHECKPOINTS
    save_steps = max(1, math.ceil(updates / checkpoints))
    reasons.append(
        f"checkpoints: every {save_steps} steps, each with an eval loss, all kept: the voice curve "
        f"scores each and the merge takes the best"
    )
    return Recipe(
        updates=updates,
        epochs=epochs,
        rows_per_epoch=per_epoch,
        micro_batch=micro,
        grad_accum=accum,
        sequence_len=seq,
        learning_rate=lr,
        lora_r=rank,
        lora_alpha=alpha,
        save_steps=save_steps,
        max_steps=max_steps,
        keep_modes=keep,
        reasons=reasons,
    )
