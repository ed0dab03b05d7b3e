"""`voicetune merge` on the real demo model with a real PEFT LoRA adapter: parity, the exact delta,
re-runs, refusals (damaged adapter, wrong base, pickles, small disk) and an interrupted merge."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lora_fixtures import make_data_dir, make_lora_adapter, make_run, make_tiny_llama, shared_adapter

from voicetune.cli import main
from voicetune.core.errors import VoicetuneError
from voicetune.core.manifest import sha256_file

REPO = Path(__file__).resolve().parent.parent
TEST_TEXTS = [
    "The sea was calm that morning, and the gulls were quiet on the harbour wall.",
    "She said nothing at all, which was, for her, a remarkable speech.",
]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Path:
    """A project home with data texts and a finished training run 'demo' (adapter made with PEFT)."""
    root = tmp_path_factory.mktemp("merge home")  # a space in the path, on purpose
    adapter = shared_adapter(tmp_path_factory, base_model_dir)
    data = make_data_dir(root, ["It was a dark night."], TEST_TEXTS)
    make_run(root, "demo", base_model_dir, adapter, data_dir=data)
    (root / "empty.yaml").write_text("{}\n")
    return root


def _merge(home: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setenv("VOICETUNE_HOME", str(home))
    return main(["merge", "--config", str(home / "empty.yaml"), *args])


@pytest.fixture(scope="module")
def merged(home: Path) -> Path:
    """The demo run merged, after a first attempt was killed while writing (SIGKILL: no clean-up).

    What the killed attempt left is recorded in interrupted.json for the test about interruptions.
    """
    parent = home / "merged_models"
    env = dict(os.environ, VOICETUNE_HOME=str(home), PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        [sys.executable, "-m", "voicetune", "merge", "--run", "demo", "--config", str(home / "empty.yaml")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    temporary = parent / f".demo.tmp-{process.pid}"
    deadline = time.monotonic() + 300
    # Kill it once it is writing the model (the temporary folder has its first file).
    while not (temporary.is_dir() and any(temporary.iterdir())):
        assert process.poll() is None, "the merge ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    evidence = {"final_existed": (parent / "demo").exists(), "temporary_left": temporary.exists()}
    with pytest.MonkeyPatch.context() as patch:
        assert _merge(home, patch, "--run", "demo") == 0
    evidence["temporary_after_rerun"] = temporary.exists()
    (home / "interrupted.json").write_text(json.dumps(evidence))
    return parent / "demo"


def test_an_interrupted_merge_leaves_no_final_folder_and_the_next_run_cleans_up(
    merged: Path, home: Path
) -> None:
    evidence = json.loads((home / "interrupted.json").read_text())
    assert evidence["final_existed"] is False, "a killed merge must not leave a folder that looks complete"
    assert evidence["temporary_left"] is True  # a killed process cannot clean up...
    assert evidence["temporary_after_rerun"] is False  # ...the next run does
    assert (merged / "manifest.json").is_file()


def _clone_run(home: Path, source: str, name: str) -> Path:
    """A copy of a training run under another name (its manifest points at its own output/)."""
    target = home / "checkpoints" / name
    shutil.copytree(home / "checkpoints" / source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["adapter_dir"] = str(target / "output")
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_merge_writes_a_complete_model_and_passes_parity(
    merged: Path, base_model_dir: Path, home: Path
) -> None:
    for name in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "generation_config.json",
        "manifest.json",
    ]:
        assert (merged / name).is_file(), name
    assert not list(merged.glob("*.bin")), "pickled weights must never be written"
    manifest = json.loads((merged / "manifest.json").read_text())
    assert manifest["step"] == "merge"
    # paths are stored relative to the merged folder (portable), and the reader resolves them
    assert (merged / manifest["base_model"]).resolve() == base_model_dir.resolve()
    assert (merged / manifest["data_dir"]).resolve() == (home / "data" / "processed" / "demo").resolve()
    assert manifest["dtype"] == "fp32"  # auto: the demo base is stored in fp32
    parity = manifest["parity"]
    assert parity["passed"] and parity["prompts"] == len(TEST_TEXTS)
    assert 0 < parity["max_abs_logit_diff"] <= parity["tolerance"] == 0.01
    effect = next(c for c in parity["comparisons"] if c["name"].startswith("adapter effect"))
    assert effect["max_abs_diff"] > 100 * parity["max_abs_logit_diff"], "the adapter must change the model"
    for name, digest in manifest["outputs"].items():
        assert sha256_file(merged / name) == digest, name
    assert {"torch", "transformers", "peft"} <= set(manifest["versions"])


def test_merged_weights_hold_exactly_the_lora_delta(merged: Path, base_model_dir: Path, home: Path) -> None:
    """Independent of PEFT's merge code: W_merged - W_base == (alpha / r) * B @ A, from the files."""
    from safetensors import safe_open

    adapter = home / "checkpoints" / "demo" / "output"
    config = json.loads((adapter / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    module = "model.layers.3.mlp.down_proj"
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as handle:
        a = handle.get_tensor(f"base_model.model.{module}.lora_A.weight")
        b = handle.get_tensor(f"base_model.model.{module}.lora_B.weight")
    with safe_open(str(base_model_dir / "model.safetensors"), "pt") as handle:
        base = handle.get_tensor(f"{module}.weight")
    with safe_open(str(merged / "model.safetensors"), "pt") as handle:
        after = handle.get_tensor(f"{module}.weight")
        untouched = handle.get_tensor("model.norm.weight")
    delta = scale * (b @ a)
    assert delta.abs().max() > 1e-3
    assert (after - base - delta).abs().max() < 1e-5
    with safe_open(str(base_model_dir / "model.safetensors"), "pt") as handle:
        assert (handle.get_tensor("model.norm.weight") == untouched).all()


def test_second_merge_is_up_to_date_and_writes_nothing(
    merged: Path, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (merged / "model.safetensors").stat().st_mtime_ns
    capsys.readouterr()
    assert _merge(home, monkeypatch, "--run", "demo") == 0
    assert "up to date" in capsys.readouterr().out
    assert (merged / "model.safetensors").stat().st_mtime_ns == before


def test_failed_parity_removes_the_output_and_exits_non_zero(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A merge that silently drops the adapter (PEFT's unload: wrappers removed, nothing folded) is
    caught by the logit comparison, and nothing is left behind."""
    import voicetune.model.merge as merge_module

    monkeypatch.setattr(merge_module, "fold_adapter", lambda peft_model: peft_model.unload())
    out = home / "merged_models" / "broken"
    assert _merge(home, monkeypatch, "--run", "demo", "--out", str(out)) == 1
    assert "parity check failed" in capsys.readouterr().err
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".broken.tmp")]


def test_truncated_adapter_is_refused_naming_the_file(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _clone_run(home, "demo", "truncated")
    weights = run / "output" / "adapter_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert _merge(home, monkeypatch, "--run", "truncated") == 1
    err = _one_line_error(capsys)
    assert str(weights) in err and "truncated" in err
    assert not (home / "merged_models" / "truncated").exists()


def test_missing_adapter_config_is_refused_naming_the_file(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from voicetune.model.merge import validate_adapter_dir

    run = _clone_run(home, "demo", "noconfig")
    (run / "output" / "adapter_config.json").unlink()
    # The training manifest lists its outputs, so the run is refused as incomplete...
    assert _merge(home, monkeypatch, "--run", "noconfig") != 0
    assert "adapter_config.json is missing" in _one_line_error(capsys)
    # ...and an adapter folder given without such a manifest is refused by the merge's own check.
    with pytest.raises(VoicetuneError, match=r"adapter_config\.json is missing"):
        validate_adapter_dir(run / "output")


def test_adapter_with_nan_is_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file, save_file

    run = _clone_run(home, "demo", "nan")
    weights = run / "output" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    first = sorted(tensors)[0]
    tensors[first][0, 0] = float("nan")
    save_file(tensors, str(weights))
    assert _merge(home, monkeypatch, "--run", "nan") == 1
    assert "NaN" in _one_line_error(capsys)


def test_pickled_adapter_is_refused_unless_allowed(home: Path) -> None:
    import torch
    from safetensors.torch import load_file

    from voicetune.model.merge import validate_adapter_dir

    folder = home / "pickled-adapter"
    folder.mkdir()
    source = home / "checkpoints" / "demo" / "output"
    shutil.copy(source / "adapter_config.json", folder)
    torch.save(load_file(str(source / "adapter_model.safetensors")), folder / "adapter_model.bin")
    with pytest.raises(VoicetuneError, match="--allow-pickle"):
        validate_adapter_dir(folder)
    info = validate_adapter_dir(folder, allow_pickle=True)
    assert "model.layers.0.self_attn.q_proj" in info.modules


def test_adapter_of_another_base_is_refused(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = make_tiny_llama(tmp_path / "tiny")
    capsys.readouterr()  # drop save_pretrained's progress bar
    assert (
        _merge(home, monkeypatch, "--run", "demo", "--base", str(tiny), "--out", str(tmp_path / "out")) == 1
    )
    err = _one_line_error(capsys)
    assert "does not belong to base" in err and str(tiny) in err
    assert not (tmp_path / "out").exists()


def test_same_shapes_but_other_weights_are_refused_by_the_declared_base(tmp_path: Path) -> None:
    """Two bases with identical shapes (think base vs instruct): the adapter_config's recorded base
    decides; a copy of the right base (other folder, same weights) is fine."""
    from voicetune.model.merge import check_adapter_matches_base, validate_adapter_dir

    base_a = make_tiny_llama(tmp_path / "a", seed=1)
    base_b = make_tiny_llama(tmp_path / "b", seed=2)
    copy_a = shutil.copytree(base_a, tmp_path / "copy of a")
    adapter = validate_adapter_dir(make_lora_adapter(base_a, tmp_path / "adapter", rank=4))
    check_adapter_matches_base(adapter, base_a)
    check_adapter_matches_base(adapter, copy_a)
    with pytest.raises(VoicetuneError, match=f"trained on {base_a}"):
        check_adapter_matches_base(adapter, base_b)


def test_too_small_disk_is_refused_before_writing(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], base_model_dir: Path
) -> None:
    import voicetune.model.merge as merge_module
    from voicetune.model.merge import estimate_output_bytes

    fp32 = estimate_output_bytes(base_model_dir, "fp32")
    assert abs(fp32 - (base_model_dir / "model.safetensors").stat().st_size) < 0.02 * fp32
    assert abs(estimate_output_bytes(base_model_dir, "bf16") - fp32 / 2) < 0.02 * fp32

    # A full disk cannot be made here: only the free-space figure is faked, the check is real.
    real = shutil.disk_usage
    monkeypatch.setattr(merge_module.shutil, "disk_usage", lambda p: real(p)._replace(free=100 << 20))
    out = home / "merged_models" / "nodisk"
    assert _merge(home, monkeypatch, "--run", "demo", "--out", str(out), "--force") == 1
    assert "not enough disk space" in _one_line_error(capsys)
    assert not out.exists()


def test_dequant_nf4_on_a_non_qlora_run_is_refused(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _merge(home, monkeypatch, "--run", "demo", "--base-weights", "dequant-nf4") == 1
    assert "QLoRA" in _one_line_error(capsys)


def test_missing_training_run_names_the_training_script(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _merge(home, monkeypatch, "--run", "never-trained") == 2
    assert "2_train_lora.sh" in _one_line_error(capsys)


@pytest.mark.slow
def test_qlora_merge_into_dequantised_weights_matches_the_model_as_trained(
    home: Path, monkeypatch: pytest.MonkeyPatch, base_model_dir: Path
) -> None:
    """A QLoRA run (quantized_4bit): merging into dequant(nf4(W)) reproduces 4-bit base + adapter,
    emulated on CPU with bitsandbytes' own quantise/dequantise (~1 min on 2 cores)."""
    adapter = home / "checkpoints" / "demo" / "output"
    make_run(
        home,
        "qlora",
        base_model_dir,
        adapter,
        data_dir=home / "data" / "processed" / "demo",
        quantized_4bit=True,
    )
    assert (
        _merge(home, monkeypatch, "--run", "qlora", "--base-weights", "dequant-nf4", "--dtype", "bf16") == 0
    )
    manifest = json.loads((home / "merged_models" / "qlora" / "manifest.json").read_text())
    assert manifest["base_weights"] == "dequant-nf4" and manifest["dtype"] == "bf16"
    as_trained = next(c for c in manifest["parity"]["comparisons"] if "as trained" in c["name"])
    assert as_trained["max_abs_diff"] <= manifest["parity"]["tolerance"]


def test_nf4_round_trip_is_bitsandbytes_own(base_model_dir: Path) -> None:
    import bitsandbytes.functional as bnbf
    import torch

    from voicetune.model.merge import dequantize_nf4_

    layer = torch.nn.Linear(576, 192, bias=False)
    original = layer.weight.detach().clone()
    dequantize_nf4_({"layer": layer})
    packed, state = bnbf.quantize_4bit(
        original.to(torch.bfloat16), blocksize=64, quant_type="nf4", compress_statistics=True
    )
    expected = bnbf.dequantize_4bit(packed, state).float()
    assert torch.equal(layer.weight, expected)
    error = (layer.weight - original).abs()
    assert 0 < error.mean() < 0.1 * original.abs().mean() * 4


def test_script_help_and_dry_run() -> None:
    script = REPO / "training" / "3_merge_adapter.sh"
    shown = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0
    assert "QLoRA" in shown.stdout and "--base-weights" in shown.stdout
    # --dry-run belongs to the verb (not re-implemented in bash): a run that never trained is one line
    dry = subprocess.run([str(script), "--run", "x", "--dry-run"], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 2 and "voicetune merge --run x --dry-run" in dry.stdout
    assert dry.stderr.strip().startswith("error:") and "2_train_lora.sh" in dry.stderr
    assert len(dry.stderr.strip().splitlines()) == 1


def test_declared_hub_id_conflicts_only_when_informative(tmp_path: Path) -> None:
    from voicetune.model.merge import declared_base_conflict

    base = tmp_path / "models" / "base"
    base.mkdir(parents=True)
    (base / "config.json").write_text(json.dumps({"_name_or_path": "meta-llama/Llama-3.1-8B"}))
    assert declared_base_conflict("", base) is None
    assert declared_base_conflict("models/base", base) is None  # a relative path to this very folder
    assert declared_base_conflict("mirror-org/Llama-3.1-8B", base) is None  # same model, other org
    assert "Qwen/Qwen2.5-7B" in (declared_base_conflict("Qwen/Qwen2.5-7B", base) or "")


def _checkpointed_run(home: Path, base_model_dir: Path, adapter: Path, name: str) -> Path:
    """A run whose output/ holds checkpoint-2 (the shared adapter) and checkpoint-4 (another one)."""
    run = make_run(home, name, base_model_dir, adapter, data_dir=home / "data" / "processed" / "demo")
    shutil.copytree(adapter, run / "output" / "checkpoint-2")
    other = make_lora_adapter(base_model_dir, home / f"{name}-other", seed=7)
    shutil.copytree(other, run / "output" / "checkpoint-4")
    for step in (2, 4):
        (run / "output" / f"checkpoint-{step}" / "optimizer.pt").write_bytes(b"resume state, not adapter")
    return run


def test_merge_takes_the_voice_curves_best_checkpoint_at_a_chosen_strength(
    home: Path,
    base_model_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--checkpoint best (the default) merges what voice_curve.json names and says why; --scale S
    folds in S x the delta (W + S * alpha/r * B @ A), checked against the files like the test above."""
    from safetensors import safe_open

    adapter = shared_adapter(tmp_path_factory, base_model_dir)
    run = _checkpointed_run(home, base_model_dir, adapter, "curved")
    why = "the highest voice score, 0.70 [0.5, 0.9], of 2 checkpoints"
    (run / "voice_curve.json").write_text(
        json.dumps({"best": {"step": 2, "checkpoint": "checkpoint-2", "why": why}})
    )
    capsys.readouterr()
    assert _merge(home, monkeypatch, "--run", "curved", "--scale", "0.5") == 0
    out = capsys.readouterr().out
    assert f"merge: checkpoint-2: chosen by the voice curve (voice_curve.json): {why}" in out
    assert "style strength x0.5" in out
    merged = home / "merged_models" / "curved"
    manifest = json.loads((merged / "manifest.json").read_text())
    assert manifest["checkpoint"] == "checkpoint-2" and manifest["lora_scale"] == 0.5
    assert "optimizer.pt" not in manifest["inputs"]["adapter"]  # resume state is not the adapter
    config = json.loads((adapter / "adapter_config.json").read_text())
    module = "model.layers.3.mlp.down_proj"
    with safe_open(str(adapter / "adapter_model.safetensors"), "pt") as handle:
        delta = (
            config["lora_alpha"]
            / config["r"]
            * (
                handle.get_tensor(f"base_model.model.{module}.lora_B.weight")
                @ handle.get_tensor(f"base_model.model.{module}.lora_A.weight")
            )
        )
    with safe_open(str(base_model_dir / "model.safetensors"), "pt") as handle:
        base = handle.get_tensor(f"{module}.weight")
    with safe_open(str(merged / "model.safetensors"), "pt") as handle:
        after = handle.get_tensor(f"{module}.weight")
    assert (after - base - 0.5 * delta).abs().max() < 1e-5

    # --checkpoint N and last; an unknown N names the saved ones
    assert _merge(home, monkeypatch, "--run", "curved", "--checkpoint", "4", "--dry-run") == 0
    assert "merge: checkpoint-4: asked for with --checkpoint" in capsys.readouterr().out
    assert _merge(home, monkeypatch, "--run", "curved", "--checkpoint", "last", "--dry-run") == 0
    assert "merge: last: the adapter the training ended with" in capsys.readouterr().out
    assert _merge(home, monkeypatch, "--run", "curved", "--checkpoint", "9", "--dry-run") == 1
    assert "use --checkpoint best, last or one of 2, 4" in capsys.readouterr().err

    # the strength the voice curve chose for its best checkpoint is the default; --scale overrides it
    scale_why = "x1.5: a stronger voice at no loss of fluency against the base model (...)"
    (run / "voice_curve.json").write_text(
        json.dumps({"best": {"step": 2, "checkpoint": "checkpoint-2", "why": why, "scale": 1.5,
                             "scale_why": scale_why}})
    )  # fmt: skip
    assert _merge(home, monkeypatch, "--run", "curved", "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"merge: strength chosen by the voice curve: {scale_why}" in out and "style strength x1.5" in out
    assert _merge(home, monkeypatch, "--run", "curved", "--scale", "1", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "strength chosen by the voice curve" not in out and "style strength" not in out
    assert _merge(home, monkeypatch, "--run", "curved", "--checkpoint", "last", "--dry-run") == 0
    assert "style strength" not in capsys.readouterr().out  # the curve's strength goes with its checkpoint


def test_without_a_voice_curve_best_merges_the_last_adapter_and_says_so(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _merge(home, monkeypatch, "--run", "demo", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "merge: last: no voice curve in" in out and "voicetune voice-curve --run demo" in out


def test_an_adapter_put_on_a_copy_of_the_loaded_base_is_the_model_read_from_disk(
    home: Path, base_model_dir: Path
) -> None:
    """The voice curve keeps the base in memory and merges each checkpoint into a copy: the same
    weights as loading base + adapter from disk, at a scale too, and the original base is untouched."""
    from copy import deepcopy

    import torch

    from voicetune.model.loading import load_for_inference

    adapter = home / "checkpoints" / "demo" / "output"
    base, _ = load_for_inference(base_model_dir, None, "cpu")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    for scale in (1.0, 1.5):
        copied, _ = load_for_inference(
            base_model_dir, adapter, "cpu", merge_adapter=True, lora_scale=scale, loaded=deepcopy(base)
        )
        read, _ = load_for_inference(base_model_dir, adapter, "cpu", merge_adapter=True, lora_scale=scale)
        for (name, mine), (_, theirs) in zip(
            copied.state_dict().items(), read.state_dict().items(), strict=True
        ):
            assert torch.equal(mine, theirs), name
        assert any(not torch.equal(mine, before[name]) for name, mine in copied.state_dict().items())
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())
