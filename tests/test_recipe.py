"""The recipe from the data (voicetune.train.recipe): updates first, then the batch; every rule with
its one-line reason; the keys a person sets are kept. Pure: milliseconds, no torch."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from voicetune.train import axolotl_config as ac
from voicetune.train import recipe

# The bundled author as `voicetune prepare --sequence-len 256` counts it (data/processed/demo).
SAKI = recipe.Corpus(
    words=169_398,
    documents=3,
    examples=2082,
    tokens=376_962,
    sequence_len=256,
    modes={"continue": 697, "rewrite": 616, "write": 769},
)
GPU_PROFILE = ac.load_profile("80gb")


def test_target_updates_grow_slowly_with_the_corpus() -> None:
    targets = [recipe.target_updates(w) for w in (1_000, 20_000, 84_000, 200_000, 2_000_000, 50_000_000)]
    assert targets == sorted(targets)
    assert targets[0] == recipe.MIN_UPDATES and targets[-1] == recipe.MAX_UPDATES
    assert targets[1] == 300 and 400 <= targets[2] <= 500 and 550 <= targets[3] <= 650


def test_a_big_card_no_longer_takes_the_voice_in_three_steps() -> None:
    # Issue 20: 84k words on an H200, auto filled the card (micro batch 16 x 4096, packed): 3 updates.
    corpus = recipe.Corpus(84_000, 4, 1000, 260_000, 512, {"continue": 500, "write": 300, "rewrite": 200})
    plan = recipe.plan(corpus, recipe.Machine(on_gpu=True, max_micro_batch=64), GPU_PROFILE)
    assert plan.updates >= 300  # a few hundred, not 3
    assert plan.rows_per_step * plan.sequence_len <= 4 * 512  # small steps, however much the card holds
    assert plan.epochs == 3 and plan.max_steps is None
    assert plan.reasons[0].startswith(f"updates first: 84k words -> {plan.updates} optimizer steps of")
    assert "the GPU would hold 64 a step" in plan.reasons[1]
    keys = plan.axolotl_keys()
    assert keys["micro_batch_size"] * keys["gradient_accumulation_steps"] == plan.rows_per_step
    assert keys["save_steps"] == keys["eval_steps"] and keys["save_total_limit"] is None
    assert plan.updates / keys["save_steps"] <= recipe.CHECKPOINTS  # five evaluated checkpoints at most


def test_the_batch_grows_with_the_corpus_not_the_updates() -> None:
    machine = recipe.Machine(on_gpu=True, max_micro_batch=8)
    small = recipe.plan(SAKI, machine, GPU_PROFILE)
    big_corpus = recipe.Corpus(2_000_000, 40, 30_000, 5_000_000, 512, {"continue": 30_000})
    big = recipe.plan(big_corpus, machine, GPU_PROFILE)
    assert big.rows_per_step > small.rows_per_step
    assert big.grad_accum > 1 and big.micro_batch <= 8  # what the card holds, the rest accumulated
    assert big.epochs == 1 and recipe.MAX_UPDATES <= big.updates <= 1.2 * recipe.MAX_UPDATES


def test_a_small_corpus_gets_more_passes_and_a_smaller_rank() -> None:
    corpus = recipe.Corpus(5_000, 2, 60, 12_000, 512, {"continue": 60})
    plan = recipe.plan(corpus, recipe.Machine(True, 16), GPU_PROFILE)
    assert plan.epochs == recipe.MAX_EPOCHS and plan.rows_per_step == 1
    assert plan.lora_r == recipe.SMALL_CORPUS_RANK and plan.lora_alpha == 2 * plan.lora_r
    assert any("more passes" in line for line in plan.reasons)
    assert any("fit in fewer parameters" in line for line in plan.reasons)
    assert plan.learning_rate * plan.updates >= recipe.LR_UPDATES - 1e-12


def test_on_a_cpu_the_profiles_budget_buys_updates_not_rows() -> None:
    profile = ac.load_profile("cpu-demo")
    plan = recipe.plan(SAKI, recipe.Machine(on_gpu=False, max_micro_batch=1), profile)
    budget = profile["max_steps"] * profile["micro_batch_size"]
    assert plan.rows_per_step == 1 and plan.updates == budget == plan.max_steps
    # less than one epoch: rewrite pairs (their prompt holds a plain twin of the passage) are left out
    assert plan.keep_modes == ("continue", "write")
    assert any(line.startswith("mix: continue + write pairs only") for line in plan.reasons)
    assert plan.save_steps == -(-budget // recipe.CPU_CHECKPOINTS)


def test_what_a_person_sets_is_kept() -> None:
    fixed = {"micro_batch_size": 2, "learning_rate": 5e-5, "lora_r": 8, "num_epochs": 1, "max_steps": 30}
    plan = recipe.plan(SAKI, recipe.Machine(True, 64), GPU_PROFILE, fixed=fixed)
    assert plan.micro_batch == 2 and plan.learning_rate == 5e-5 and plan.lora_r == 8
    assert plan.epochs == 1 and plan.max_steps == 30 and plan.updates == 30
    assert any("as set" in line for line in plan.reasons)


def test_the_recipe_renders_into_a_valid_axolotl_config(tmp_path: Path, base_model_dir: Path) -> None:
    from voicetune.train import preflight

    for name, machine in (("cpu-demo", recipe.Machine(False, 1)), ("80gb", recipe.Machine(True, 16))):
        profile = ac.load_profile(name)
        cfg = ac.apply_overrides(profile, recipe.plan(SAKI, machine, profile).axolotl_keys())
        data = tmp_path / "data"
        data.mkdir(exist_ok=True)
        for split in ("train", "val"):
            (data / f"{split}.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
        spec = ac.RunSpec("t", tmp_path / "run", base_model_dir, data, data_sequence_len=256, planned=True)
        rendered = ac.render(cfg, spec)
        assert preflight.known_mistakes(rendered) == []
        assert "save_total_limit" not in rendered and rendered["num_epochs"] == cfg["num_epochs"]


def test_choose_profile_prints_the_recipe_and_a_resume_keeps_it(tmp_path: Path, base_model_dir: Path) -> None:
    from voicetune.train.train import choose_profile, mixed_train_file

    manifest = {
        "settings": {"sequence_len": 256},
        "counts": {
            "train": {"docs": 3, "words": SAKI.words, "pairs": SAKI.examples, "modes": dict(SAKI.modes)}
        },
        "token_stats": {"train": {"examples": SAKI.examples, "total": SAKI.tokens, "sequence_len": 256}},
    }
    flags = SimpleNamespace(
        sequence_len=None, max_steps=None, epochs=None, micro_batch=None, grad_accum=None, lr=None
    )
    inputs = SimpleNamespace(
        base_model=base_model_dir, overrides={}, data_sequence_len=256, data_manifest=manifest,
        data_dir=tmp_path, settings=flags,
    )  # fmt: skip
    choice = choose_profile("auto", None, inputs, None)  # type: ignore[arg-type]
    assert choice.name == "cpu-demo" and choice.recipe is not None
    assert choice.cfg["micro_batch_size"] == 1 and choice.cfg["max_steps"] == 160
    recipe_lines = [line for line in choice.reasons if line.startswith("recipe: ")]
    assert len(recipe_lines) == 6 and all("\n" not in line for line in recipe_lines)
    again = choose_profile("auto", None, inputs, choice.auto, planned=choice.recipe)  # type: ignore[arg-type]
    assert again.cfg == choice.cfg and "recipe: as planned when this run started" in again.reasons
    own = tmp_path / "mine.yaml"
    own.write_text("adapter: lora\nmicro_batch_size: 3\n")
    mine = choose_profile(str(own), None, inputs, None)  # type: ignore[arg-type]
    assert mine.cfg["micro_batch_size"] == 3 and mine.recipe is None

    train = tmp_path / "train.jsonl"
    rows = [{"messages": [], "mode": mode} for mode in ("continue", "rewrite", "write", "rewrite")]
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    mixed = mixed_train_file(train, tmp_path / "run", ("continue", "write"))
    assert [json.loads(line)["mode"] for line in mixed.read_text().splitlines()] == ["continue", "write"]


@pytest.mark.parametrize("counts", [{"train": 24}, {}])
def test_an_older_manifest_still_plans(counts: dict) -> None:
    corpus = recipe.Corpus.from_manifest({"counts": counts, "settings": {"sequence_len": 256}}, 50_000)
    plan = recipe.plan(corpus, recipe.Machine(False, 1), ac.load_profile("cpu-demo"))
    assert plan.updates >= 1 and plan.sequence_len == 256
