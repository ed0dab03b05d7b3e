"""The artifact contract (voicetune.core.artifacts): typed readers, paths stored relative to each
artifact, so a moved project and a run folder copied under a new name keep pointing at their own files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from voicetune.core.artifacts import (
    SCRIPTS,
    MergedModel,
    PreparedData,
    TrainedRun,
    resolve_stored,
    stored_path,
)
from voicetune.core.errors import MissingArtifactError
from voicetune.core.manifest import build_manifest, write_manifest

REPO = Path(__file__).resolve().parent.parent


def _project(root: Path) -> Path:
    """A project with a base model folder, prepared data and a finished run whose manifest was written
    the way the train step writes it (fixture: the files are placeholders, nothing is loaded)."""
    base = root / "models" / "base"
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}")
    data = root / "data" / "processed" / "me"
    (data / "texts" / "test").mkdir(parents=True)
    (data / "test.jsonl").write_text("")
    write_manifest(
        data,
        build_manifest("prepare", "f-data", {"base_model": stored_path(base, data)}, {}, {"test.jsonl": "x"}),
    )
    run = root / "checkpoints" / "me"
    (run / "output").mkdir(parents=True)
    (run / "output" / "adapter_config.json").write_text("{}")
    manifest = build_manifest(
        "train",
        "f-run",
        {},
        {},
        {"output/adapter_config.json": "x"},
        adapter_dir=stored_path(run / "output", run),
        base_model=stored_path(base, run),
        data_dir=stored_path(data, run),
    )
    write_manifest(run, manifest)
    return root


def test_paths_are_stored_relative_to_the_artifact(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    recorded = json.loads((project / "checkpoints" / "me" / "manifest.json").read_text())
    assert recorded["adapter_dir"] == "output"
    assert recorded["base_model"] == os.path.join("..", "..", "models", "base")
    assert not any(os.path.isabs(recorded[k]) for k in ("adapter_dir", "base_model", "data_dir"))


def test_a_copied_run_reads_its_own_adapter_not_the_original(tmp_path: Path) -> None:
    project = _project(tmp_path / "p")
    shutil.copytree(project / "checkpoints" / "me", project / "checkpoints" / "me-copy")
    copy = TrainedRun.load(project / "checkpoints" / "me-copy")
    assert copy.adapter_dir == (project / "checkpoints" / "me-copy" / "output").resolve()
    assert copy.base_model == (project / "models" / "base").resolve()
    assert copy.data_dir == (project / "data" / "processed" / "me").resolve()


def test_a_moved_project_still_finds_everything(tmp_path: Path) -> None:
    project = _project(tmp_path / "before")
    moved = tmp_path / "elsewhere" / "after"
    moved.parent.mkdir()
    project.rename(moved)
    run = TrainedRun.load(moved / "checkpoints" / "me")
    assert run.adapter_dir == (moved / "checkpoints" / "me" / "output").resolve()
    assert run.base_model == (moved / "models" / "base").resolve() and run.base_model.is_dir()
    data = PreparedData.load(run.data_dir)
    assert data.base_model == (moved / "models" / "base").resolve()


def test_the_merge_verb_on_a_moved_project_and_a_copied_run(tmp_path: Path) -> None:
    """The whole CLI path (merge --dry-run resolves its inputs through the readers)."""
    project = _project(tmp_path / "before")
    moved = tmp_path / "after"
    project.rename(moved)
    shutil.copytree(moved / "checkpoints" / "me", moved / "checkpoints" / "renamed")
    env = {**os.environ, "VOICETUNE_HOME": str(moved)}
    for run in ("me", "renamed"):
        result = subprocess.run(
            [sys.executable, "-m", "voicetune", "merge", "--run", run, "--dry-run"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        adapter = (moved / "checkpoints" / run / "output").resolve()
        assert f"would merge {adapter} into {(moved / 'models' / 'base').resolve()}" in result.stdout


def test_older_absolute_paths_are_still_read(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    assert resolve_stored(str(tmp_path / "x"), folder) == tmp_path / "x"
    assert resolve_stored(None, folder) is None


def test_a_missing_artifact_names_the_script_to_run(tmp_path: Path) -> None:
    with pytest.raises(MissingArtifactError, match=SCRIPTS["train"]):
        TrainedRun.load(tmp_path / "nothing")
    with pytest.raises(MissingArtifactError, match=SCRIPTS["prepare"]):
        PreparedData.load(tmp_path / "nothing")
    assert MergedModel.find(tmp_path / "nothing") is None


def test_every_script_in_the_table_exists() -> None:
    scripts = {step: script for step, script in SCRIPTS.items() if not script.startswith("python -m")}
    missing = [script for script in scripts.values() if not (REPO / script).is_file()]
    assert missing == [], missing


@pytest.mark.parametrize(
    ("recorded", "scale"), [({}, 1.0), ({"lora_scale": 1.5}, 1.5), ({"lora_scale": 0.0}, 0.0)]
)
def test_a_merged_model_says_the_strength_it_was_folded_in_at(
    tmp_path: Path, recorded: dict, scale: float
) -> None:
    folder = tmp_path / "merged"
    folder.mkdir()
    write_manifest(folder, build_manifest("merge", "f-merge", {}, {}, {}, **recorded))
    assert MergedModel.load(folder).lora_scale == scale  # 0.0 (the base model) is a strength too
