"""Preflight on Axolotl configs as people write them: the shape of Axolotl's own examples passes
(keys left empty are warnings, not errors); what this machine lacks is all it reports."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_data import write_prepared

from voicetune.core.errors import VoicetuneError
from voicetune.train import axolotl_config as ac
from voicetune.train import preflight

FIXTURES = Path(__file__).parent / "fixtures" / "axolotl"
UPSTREAM_STYLE = sorted(FIXTURES.glob("*.yml"))


def _render(profile: Path, tmp_path: Path, base_model: Path) -> tuple[dict, preflight.Context]:
    data = write_prepared(tmp_path / "data", sequence_len=256)
    spec = ac.RunSpec(run_name="t", run_dir=tmp_path / "run", base_model=base_model, data_dir=data)
    cfg = ac.render(ac.load_profile(str(profile)), spec)
    ctx = preflight.Context(
        yaml_path=profile,
        run_dir=tmp_path / "run",
        data_dir=data,
        data_format="chat_template",
        base_model=base_model,
        gpu=None,  # the machine of the test suite (CI has no GPU)
    )
    return cfg, ctx


def test_the_fixtures_keep_what_upstream_examples_have() -> None:
    assert len(UPSTREAM_STYLE) == 2
    for path in UPSTREAM_STYLE:
        raw = ac.load_yaml_mapping(path)
        empty = {key for key, value in raw.items() if value is None}
        assert {"debug", "wandb_project", "fsdp", "deepspeed", "local_rank", "lora_model_dir"} <= empty
        assert raw["lora_target_linear"] is True and raw["special_tokens"]["pad_token"]
        assert "/" in raw["datasets"][0]["path"]  # a hub dataset, replaced by the run's data


@pytest.mark.parametrize("profile", UPSTREAM_STYLE, ids=lambda p: p.name)
def test_upstream_style_config_passes_preflight_but_for_this_machine(
    profile: Path, tmp_path: Path, base_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, ctx = _render(profile, tmp_path, base_model_dir)
    assert cfg["datasets"][0]["path"].endswith("train.jsonl")  # the hub dataset was replaced
    assert cfg["base_model"] == str(base_model_dir)
    assert preflight.known_mistakes(cfg) == []
    warnings: list[str] = []
    caps = preflight.capabilities_for(None, 1)
    assert preflight.schema_problems(cfg, *caps, warnings) == []
    assert any("debug" in line and "ignored" in line for line in warnings), warnings

    # the whole preflight as `voicetune train --dry-run` runs it: what the machine lacks is a warning
    report = preflight.run_preflight(cfg, preflight.Context(**{**ctx.__dict__, "dry_run": True}))
    assert report.errors == []
    lacking = preflight.hardware_problems(cfg, None, 1)
    assert lacking, "4/8-bit loading and flash-attention need a GPU"
    assert {f"on this machine: {line}" for line in lacking} <= set(report.warnings)

    # and training for real on this machine stops on exactly those lines, nothing else
    capsys.readouterr()
    with pytest.raises(VoicetuneError, match=rf"preflight found {len(lacking)} problem"):
        preflight.run_preflight(cfg, ctx)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("preflight: error:")]
    assert errors == [f"preflight: error: {line}" for line in lacking]


def test_an_unknown_key_with_a_value_is_still_an_error(tmp_path: Path, base_model_dir: Path) -> None:
    cfg, _ = _render(UPSTREAM_STYLE[0], tmp_path, base_model_dir)
    cfg["lora_rr"] = 8  # a typo: Axolotl would train with its default r, silently
    warnings: list[str] = []
    problems = preflight.schema_problems(cfg, *preflight.capabilities_for(None, 1), warnings)
    assert problems == [
        "unknown key 'lora_rr': Axolotl 0.19 would ignore it silently: did you mean 'lora_r'? "
        "fix or remove it"
    ]
    assert all("lora_rr" not in line for line in warnings)


def test_empty_unknown_keys_are_one_warning() -> None:
    known = {"lora_r", "micro_batch_size"}
    cfg = {"lora_r": None, "debug": None, "my_note": None, "micro_batch_size": 2, "typo_key": 3}
    assert preflight.empty_unknown_keys(cfg, known) == [
        "2 key(s) Axolotl 0.19 does not know, left empty, are ignored: debug, my_note"
    ]
    assert [line.split("'")[1] for line in preflight.unknown_keys(cfg, known)] == ["typo_key"]
