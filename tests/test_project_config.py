"""The project config (configs/voicetune.yaml) and `--config`: an Axolotl YAML given there is refused
in one line that says where it belongs (--profile), instead of being read as "no settings"."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from voicetune.core.errors import VoicetuneError
from voicetune.core.settings import default_config_path, load_project_config

AXOLOTL_YAML = Path(__file__).parent / "fixtures" / "axolotl" / "qlora-upstream-style.yml"


def test_the_project_config_loads() -> None:
    config = load_project_config(default_config_path())
    assert {"data", "train"} <= set(config)


def test_an_axolotl_yaml_as_project_config_is_refused_with_the_right_flag(tmp_path: Path) -> None:
    with pytest.raises(VoicetuneError, match=rf"is an Axolotl config .* --profile {AXOLOTL_YAML}$"):
        load_project_config(AXOLOTL_YAML)
    minimal = tmp_path / "seed.yaml"
    minimal.write_text("base_model: x\ndatasets:\n  - path: a/b\n    type: alpaca\nadapter: lora\n")
    with pytest.raises(VoicetuneError, match="--profile"):
        load_project_config(minimal)


def test_a_project_config_with_sections_is_not_mistaken_for_axolotls(tmp_path: Path) -> None:
    own = tmp_path / "mine.yaml"
    own.write_text("train:\n  profile: 24gb\n  data: mine\n")
    assert load_project_config(own) == {"train": {"profile": "24gb", "data": "mine"}}


def test_a_missing_config_file_is_an_error_when_given(tmp_path: Path) -> None:
    with pytest.raises(VoicetuneError, match="no such file"):
        load_project_config(tmp_path / "nope.yaml")


def test_train_script_refuses_an_axolotl_yaml_as_config_in_one_line(repo_root: Path) -> None:
    result = subprocess.run(
        ["bash", "training/2_train_lora.sh", "--config", str(AXOLOTL_YAML), "--dry-run"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    assert f"--profile {AXOLOTL_YAML}" in errors[0]


def test_wandb_is_off_unless_asked(tmp_path: Path) -> None:
    # "Private by default": no wandb files or process unless --wandb offline|online
    from voicetune.train import axolotl_config as ac
    from voicetune.train.train import TrainSettings

    assert TrainSettings().wandb == "off"
    assert TrainSettings.model_validate({"wandb": False}).wandb == "off"  # YAML's bare `off`
    assert load_project_config(default_config_path())["train"].get("wandb", "off") == "off"
    spec = ac.RunSpec(run_name="r", run_dir=tmp_path / "run", base_model=tmp_path, data_dir=tmp_path)
    profile = {"wandb_project": None, "wandb_entity": None, "micro_batch_size": 1}  # as Axolotl's examples
    assert not [key for key in ac.render(profile, spec) if key.startswith("wandb_")]
    asked = ac.render(profile, ac.RunSpec(**{**spec.__dict__, "wandb": "offline"}))
    assert asked["wandb_mode"] == "offline" and asked["wandb_project"] == "voicetune"
