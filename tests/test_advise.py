"""`voicetune advise`: the catalogues, the rows against the estimator and the committed measurements,
the issue's bars (8 / 24 / 80 GB), the card sources, and the README's tables against the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voicetune.cli import main
from voicetune.core.errors import VoicetuneError
from voicetune.core.paths import repo_dir
from voicetune.machine.gpu import FAKE_DIR_ENV
from voicetune.train import advise as A
from voicetune.train import vram

GIB = vram.GIB
RESULTS = repo_dir() / "benchmarks" / "results"
FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"

# Parameter counts as the model cards state them (Hugging Face model pages). The shape files carry
# no biases (Qwen's q/k/v) and count Gemma-2's four norms a layer as two: well under 1%.
PUBLISHED_PARAMS_B = {
    "SmolLM2-135M": 0.1345,
    "Qwen2.5-0.5B": 0.49,
    "Llama-3.2-1B": 1.24,
    "Qwen2.5-1.5B": 1.54,
    "Qwen2.5-3B": 3.09,
    "Llama-3.2-3B": 3.21,
    "Phi-3.5-mini": 3.82,
    "Mistral-7B-v0.3": 7.25,
    "Qwen2.5-7B": 7.61,
    "Llama-3.1-8B": 8.03,
    "Gemma-2-9B": 9.24,
    "Mistral-Nemo-12B": 12.25,
    "Qwen2.5-14B": 14.7,
    "Qwen2.5-32B": 32.5,
    "Llama-3.1-70B": 70.6,
}


@pytest.fixture(scope="module")
def models() -> list[A.ModelEntry]:
    return A.load_models()


@pytest.fixture(scope="module")
def anchors() -> list[A.Anchor]:
    return A.load_anchors()


def by_name(advice: A.Advice, name: str) -> A.Row:
    return next(r for r in advice.rows if r.model == name)


def advise_json(*argv: str, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["advise", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------------------------ catalogues


def test_model_catalogue_matches_published_sizes(models: list[A.ModelEntry]) -> None:
    assert {m.name for m in models} == set(PUBLISHED_PARAMS_B)
    for entry in models:
        assert entry.source, f"{entry.key}: say where the shape was read"
        assert entry.params / 1e9 == pytest.approx(PUBLISHED_PARAMS_B[entry.name], rel=0.012), entry.name
    assert [m.params for m in models] == sorted(m.params for m in models)


def test_gpu_catalogue() -> None:
    gpus = {g.key: g for g in A.load_gpus()}
    for key in (
        "rtx3060",
        "rtx3090",
        "rtx4060-laptop",
        "rtx4070",
        "rtx4090",
        "rtx5090",
        "l4",
        "t4",
    ):
        assert key in gpus
    for key in ("a100-40gb", "a100-80gb", "h100", "h200"):
        assert key in gpus
    assert not gpus["t4"].bf16 and gpus["t4"].compute_capability == (7, 5)
    assert gpus["rtx5090"].compute_capability == (12, 0)
    assert all(g.peak_tflops > 0 and g.peak_source for g in gpus.values())
    # the committed measurements' own card figures agree with the catalogue
    h200 = json.loads((RESULTS / "throughput-h200.json").read_text())["gpu"]
    assert gpus["h200"].memory_mib == h200["memory_total_mib"]
    assert gpus["h200"].peak_tflops == h200["peak_bf16_tflops"]


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("rtx4090", "rtx4090"),
        ("RTX 4090", "rtx4090"),
        ("NVIDIA GeForce RTX 4090", "rtx4090"),
        ("NVIDIA GeForce RTX 3060", "rtx3060"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("Tesla T4", "t4"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA GeForce RTX 4060 Laptop GPU", "rtx4060-laptop"),
    ],
)
def test_find_gpu(name: str, key: str) -> None:
    assert A.find_gpu(name, A.load_gpus()).key == key


def test_unknown_gpu_is_one_line_with_a_hint() -> None:
    with pytest.raises(VoicetuneError, match=r"did you mean .rtx4090.*--gpu-mem-gib"):
        A.find_gpu("rtx4900", A.load_gpus())


# ------------------------------------------------- measured shapes: the estimator and the speed


def _results() -> list[tuple[str, dict, dict]]:
    found = []
    for path in sorted(RESULTS.glob("throughput-*.json")):
        data = json.loads(path.read_text())
        found += [(path.name, data, run) for run in data["runs"]]
    return found


def test_catalogue_holds_the_measured_shapes(models: list[A.ModelEntry]) -> None:
    """The 8B and SmolLM2 rows are the shapes the committed runs measured (random weights of them)."""
    catalogue = {m.name: m.shape for m in models}
    names = {"8b": "Llama-3.1-8B", "smol": "SmolLM2-135M"}
    for _, data, _ in _results():
        for key, model in data["models"].items():
            measured = A._shape_from_result(model["shape"])
            assert _same_shape(catalogue[names[key]], measured), key
            assert A.matmul_params(measured) * 6 == model["flops_per_token"]["6n"]


def _same_shape(a: vram.ModelShape, b: vram.ModelShape) -> bool:
    from dataclasses import replace

    return replace(a, max_position_embeddings=None) == replace(b, max_position_embeddings=None)


def test_estimator_rows_agree_with_the_measurements(models: list[A.ModelEntry]) -> None:
    """For every committed Axolotl run (voicetune's profiles and Axolotl's defaults), the estimate for
    the catalogue's shape under the run's own rendered config is within 10% of the measured peak."""
    catalogue = {
        "8b": by_key(models, "Llama-3.1-8B"),
        "smol": by_key(models, "SmolLM2-135M"),
    }
    checked = 0
    for name, _, run in _results():
        if run.get("status") != "ok" or not run.get("axolotl_config") or not run.get("peak_alloc_train_gib"):
            continue
        plan = vram.plan_from_axolotl(run["axolotl_config"])
        predicted = vram.estimate(catalogue[run["model"]].shape, plan).peak_allocated / GIB
        measured = run["peak_alloc_train_gib"]
        assert predicted == pytest.approx(measured, rel=0.10), (
            name,
            run["arm"],
            run.get("variant"),
        )
        checked += 1
    assert checked >= 10


def by_key(models: list[A.ModelEntry], name: str) -> A.ModelEntry:
    return next(m for m in models if m.name == name)


def test_mfu_is_derived_from_the_measured_tokens_per_s(anchors: list[A.Anchor]) -> None:
    assert {a.model for a in anchors} == {"Llama-3.1-8B shape", "SmolLM2-135M shape"}
    measured = {
        (name, run["model"], run["micro_batch"]): run["mfu_6n"]
        for name, _, run in _results()
        if run["arm"] == "c" and not run.get("variant") and run.get("status") == "ok"
    }
    for a in anchors:
        key = (a.file, "8b" if "8B" in a.model else "smol", a.micro_batch)
        assert a.mfu == pytest.approx(measured[key], abs=6e-4)


def test_speed_reproduces_the_measurement_on_its_own_card(
    models: list[A.ModelEntry], anchors: list[A.Anchor]
) -> None:
    """The 8B at the measured micro step on the H200's peak gives back the measured tokens/s."""
    eight_b = by_key(models, "Llama-3.1-8B")
    speed = A.estimate_speed(eight_b.matmul_params, 8 * 2048, 989.4, anchors)
    assert speed.tokens_per_s == pytest.approx(9684.25, rel=1e-3)
    assert "44.1% MFU measured on H200" in speed.basis and "throughput-h200-8b-8seqs.json" in speed.basis
    # between the two measured sizes: interpolated, and said so
    mid = A.estimate_speed(by_key(models, "Llama-3.2-1B").matmul_params, 16 * 4096, 100.0, anchors)
    assert mid.mfu is not None and 0.0645 < mid.mfu < 0.4407
    assert "interpolated by size" in mid.basis
    # a card twice as fast: twice the tokens/s
    double = A.estimate_speed(eight_b.matmul_params, 8 * 2048, 2 * 989.4, anchors)
    assert double.tokens_per_s == pytest.approx(2 * speed.tokens_per_s)


def test_no_peak_no_speed(anchors: list[A.Anchor]) -> None:
    speed = A.estimate_speed(10**9, 4096, None, anchors)
    assert speed.tokens_per_s is None and "--gpu NAME" in speed.basis


# ------------------------------------------------------------------------------- the bars


def test_8gb_json(capsys: pytest.CaptureFixture[str], models: list[A.ModelEntry]) -> None:
    out = advise_json("--gpu-mem-gib", "8", capsys=capsys)
    rows = {r["model"]: r for r in out["models"]}
    for row in rows.values():
        assert set(row) >= {
            "model",
            "fits",
            "profile",
            "micro_batch",
            "max_sequence_len",
            "peak_gib",
        }
        assert set(row) >= {"tokens_per_s", "hours_for_data", "basis"}
        assert row["profile"] == "8gb"
    assert not rows["Qwen2.5-14B"]["fits"]
    assert not rows["Llama-3.1-70B"]["fits"]
    # the 8B at 2048 tokens: whatever the estimator says, the row says the same
    eight_b = by_key(models, "Llama-3.1-8B")
    plan = A.profile_plan(eight_b, A.card_from_memory(8), "8gb")
    at_2048 = vram.estimate(
        eight_b.shape,
        vram_replace(plan, micro_batch_size=1, sequence_len=2048, eval_micro_batch_size=1),
    )
    fits_2048 = at_2048.minimum <= 8 * GIB
    row = rows["Llama-3.1-8B"]
    assert ((row["max_sequence_len"] or 0) >= 2048) == fits_2048
    assert row["fits"] or not fits_2048


def vram_replace(plan: vram.TrainPlan, **changes: object) -> vram.TrainPlan:
    from dataclasses import replace

    return replace(plan, **changes)  # type: ignore[arg-type]


def test_24gb_takes_a_14b_and_80gb_a_70b(capsys: pytest.CaptureFixture[str]) -> None:
    rows = {r["model"]: r for r in advise_json("--gpu", "rtx4090", capsys=capsys)["models"]}
    assert rows["Qwen2.5-14B"]["fits"] and rows["Qwen2.5-14B"]["profile"] == "24gb"
    assert rows["Qwen2.5-14B"]["tokens_per_s"] > 0 and "MFU" in rows["Qwen2.5-14B"]["basis"]
    rows = {r["model"]: r for r in advise_json("--gpu-mem-gib", "80", capsys=capsys)["models"]}
    assert rows["Llama-3.1-70B"]["fits"] and rows["Llama-3.1-70B"]["profile"] == "80gb"


@pytest.mark.parametrize("gpu", ["rtx4060-laptop", "rtx3060", "t4", "rtx4090", "h100"])
def test_each_peak_is_the_estimators(gpu: str, models: list[A.ModelEntry]) -> None:
    """Every row's peak and choice are vram's: choose_batch_and_length, then estimate's highest_peak."""
    card = A.card_from_spec(A.find_gpu(gpu, A.load_gpus()))
    advice = A.advise(card, models=models, anchors=[])
    for entry, row in zip(models, advice.rows, strict=True):
        plan = A.profile_plan(entry, card, row.profile)
        picked = vram.choose_batch_and_length(entry.shape, plan, card.free_bytes, min_sequence_len=512)
        assert row.fits == (picked is not None)
        if picked is not None:
            assert (row.micro_batch, row.sequence_len) == (
                picked.micro_batch_size,
                picked.sequence_len,
            )
            assert row.peak_gib == round(picked.estimate.highest_peak / GIB, 2)
        if row.max_sequence_len:
            longer = vram_replace(
                plan,
                micro_batch_size=1,
                sequence_len=row.max_sequence_len + 256,
                eval_micro_batch_size=1,
            )
            cap = entry.shape.max_position_embeddings or A.LENGTH_CAP
            assert row.max_sequence_len + 256 > min(cap, A.LENGTH_CAP) or (
                vram.estimate(entry.shape, longer).minimum > card.free_bytes
            )


def test_card_without_bf16_keeps_lora_in_fp32(models: list[A.ModelEntry]) -> None:
    t4 = A.card_from_spec(A.find_gpu("t4", A.load_gpus()))
    plan = A.profile_plan(models[0], t4, "8gb")
    assert plan.lora_fp32  # the 8gb profile's bf16 adapters would be fp16 here: train.py keeps fp32
    assert not A.profile_plan(models[0], A.card_from_memory(8), "8gb").lora_fp32
    assert any("No bf16" in note for note in A.card_notes(t4))


# ----------------------------------------------------------------------------- the card sources


def test_auto_without_a_gpu_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(FAKE_DIR_ENV, str(FIXTURES / "no-gpu"))
    assert main(["advise"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--gpu-mem-gib" in err and len(err.strip().splitlines()) == 1


def test_auto_reads_this_machine(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A fake nvidia-smi (tests/fixtures: an RTX 5090 under WSL2, 1,843 MiB in use)."""
    monkeypatch.setenv(FAKE_DIR_ENV, str(FIXTURES / "rtx5090-wsl"))
    out = advise_json("--gpu", "auto", capsys=capsys)
    assert "RTX 5090" in out["card"]["name"] and out["card"]["peak_tflops"] == 209.5
    assert out["card"]["free_bytes"] == (32607 - 1843) * 1024**2
    assert out["card"]["wsl"] and out["card"]["compute_capability"] == [12, 0]
    notes = " ".join(out["notes"])
    assert "CUDA 12.8" in notes and "SDPA" in notes and "WSL2" in notes and "pinned" in notes


def test_named_card_with_less_free(capsys: pytest.CaptureFixture[str]) -> None:
    out = advise_json("--gpu", "rtx4090", "--gpu-mem-gib", "20", capsys=capsys)
    assert out["card"]["free_bytes"] == 20 * GIB and out["card"]["peak_tflops"] == 165.2


# ------------------------------------------------------------------------------------- --data


def test_time_for_prepared_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "train.jsonl").write_text("x" * 400_000)  # ~100k tokens by train.py's epoch rule: 3 epochs
    manifest = {
        "settings": {"sequence_len": 1024},
        "token_stats": {"train": {"total": 90_000}},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    out = advise_json("--gpu", "rtx4090", "--data", str(folder), capsys=capsys)
    assert out["data"]["train_tokens"] == 90_000 and out["data"]["epochs"] == 3
    for row in out["models"]:
        if row["fits"]:
            assert row["sequence_len"] >= 1024  # auto never drops an example of the data
            assert row["hours_for_data"] == pytest.approx(270_000 / row["tokens_per_s"] / 3600, abs=0.006)
    assert main(["advise", "--gpu", "rtx4090", "--data", str(folder)]) == 0
    assert "time for data" in capsys.readouterr().out


# ---------------------------------------------------------------------------------- README + CLI


def test_readme_tables_are_the_commands_output() -> None:
    readme = (repo_dir() / "README.md").read_text(encoding="utf-8")
    blocks = A.readme_blocks(readme)
    assert {args for args, _, _ in blocks} >= {
        "--gpu rtx4060-laptop",
        "--gpu rtx3060",
        "--gpu rtx4090",
        "--gpu rtx5090",
    }
    for arguments, start, end in blocks:
        assert f"voicetune advise {arguments}" in readme[max(0, start - 400) : start], "show the command"
        assert readme[start:end] == A.output_for(arguments), (
            f"README's `voicetune advise {arguments}` table is stale: run python -c "
            f"'from voicetune.train.advise import refresh_readme; refresh_readme()'"
        )


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["advise", "--help"])
    assert exit_info.value.code == 0
    assert "--gpu-mem-gib" in capsys.readouterr().out


def test_bad_memory_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["advise", "--gpu-mem-gib", "0"]) == 1
    assert "--gpu-mem-gib" in capsys.readouterr().err
