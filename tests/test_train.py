"""Training: every profile renders into a config Axolotl's own schema accepts, preflight names each
known mistake with its fix, the VRAM estimator's arithmetic, and the multi-GPU launch."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import throughput

from voicetune.train import axolotl_config as ac
from voicetune.train import preflight, vram
from voicetune.train.train import cpu_val_sample, launch_command

# the shapes throughput defines (checked there against the real models' parameter counts)
LLAMA_8B = vram.ModelShape.from_config(throughput.LLAMA_31_8B.llama_config_kwargs())


def _spec(tmp_path: Path, base_model: Path, **changes: object) -> ac.RunSpec:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "train.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    (data / "val.jsonl").write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    fields: dict[str, object] = dict(
        run_name="t", run_dir=tmp_path / "run", base_model=base_model, data_dir=data, data_sequence_len=256
    )
    fields.update(changes)
    return ac.RunSpec(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("profile", ac.PROFILES)
def test_every_profile_renders_and_passes_axolotls_schema(profile: str, tmp_path: Path, base_model_dir: Path):
    cfg = ac.render(ac.load_profile(profile), _spec(tmp_path, base_model_dir, max_steps=5))
    assert preflight.known_mistakes(cfg) == []
    gpu_caps = {"bf16": True, "fp8": False, "tf32": True, "n_gpu": 1, "compute_capability": "sm_90"}
    caps = gpu_caps if profile != "cpu-demo" else preflight.capabilities_for(None, 1)[0]
    assert preflight.schema_problems(cfg, caps, {"torch_version": "2.13.0"}) == []
    assert cfg["max_steps"] == 5 and cfg["output_dir"].endswith("run/output")
    assert cfg["seed"] == 42  # the same data order every run (Axolotl shuffles with cfg.seed)
    if profile != "cpu-demo":  # the reference QLoRA recipe
        assert cfg["adapter"] == "qlora" and cfg["load_in_4bit"] is True
        assert cfg["lora_target_modules"] == [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
    else:  # Triton LoRA kernels allocate on cuda: off on a CPU
        assert all(cfg[k] is False for k in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel"))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"evals_per_epoch": 4, "eval_steps": 10}, "evals_per_epoch"),
        ({"warmup_ratio": 0.1, "warmup_steps": 10}, "warmup_ratio"),
        ({"micro_batch_size": None}, "micro_batch_size is missing"),
        ({"adapter": "qlora", "load_in_4bit": False}, "load_in_4bit"),
    ],
)
def test_each_known_mistake_is_one_line_with_its_fix(change: dict, words: str) -> None:
    cfg = {**ac.load_profile("cpu-demo"), **change}
    problems = preflight.known_mistakes(cfg)
    assert len(problems) == 1 and words in problems[0]
    assert "\n" not in problems[0] and (":" in problems[0])


def test_wrong_types_are_caught_by_axolotls_schema(tmp_path: Path, base_model_dir: Path) -> None:
    cfg = ac.render(ac.load_profile("cpu-demo"), _spec(tmp_path, base_model_dir))
    cfg["micro_batch_size"] = "two"
    caps = preflight.capabilities_for(None, 1)[0]
    problems = preflight.schema_problems(cfg, caps, {"torch_version": "2.13.0"})
    assert problems and "micro_batch_size" in problems[0]


def test_estimator_arithmetic_on_the_8b_shape() -> None:
    plan = vram.TrainPlan(micro_batch_size=1, sequence_len=2048)
    lora = vram.lora_param_count(LLAMA_8B, 64, vram.LLAMA_PROJECTIONS)
    assert lora == 167_772_160  # r * (in + out) summed over the 7 projections of 32 layers
    estimate = vram.estimate(LLAMA_8B, plan)
    assert estimate.lora_weights == lora * 4  # fp32 adapter weights
    assert 4.5 * 2**30 < estimate.base_weights < 6.5 * 2**30  # ~8B params at ~4.5 bits
    no_ckpt = vram.estimate(LLAMA_8B, vram.TrainPlan(micro_batch_size=1, gradient_checkpointing=False))
    assert no_ckpt.saved_activations > 4 * estimate.saved_activations
    longer = vram.estimate(LLAMA_8B, vram.TrainPlan(micro_batch_size=1, sequence_len=4096))
    assert longer.peak_allocated > estimate.peak_allocated


_QLORA_8B = dict(
    adapter="qlora",
    load_in_4bit=True,
    bf16="auto",
    lora_r=64,
    lora_dropout=0.05,
    lora_target_modules=list(vram.LLAMA_PROJECTIONS),
    optimizer="paged_adamw_8bit",
    gradient_checkpointing=True,
    attn_implementation="sdpa",
    sequence_len=2048,
)
_LIGER = dict(
    plugins=["axolotl.integrations.liger.LigerPlugin"],
    liger_rope=True,
    liger_rms_norm=True,
    liger_glu_activation=True,
    liger_fused_linear_cross_entropy=True,
)


_BF16_ADAPTERS = dict(peft_autocast_adapter_dtype=False)
_NO_LORA_KERNELS = {key: False for key in vram.LORA_KERNEL_KEYS}  # what a plain PEFT script runs


# Peak allocated over the training steps, measured on the lent GPUs (benchmarks/results/
# throughput-h100-80gb-hbm3.md, throughput-h200.md and gpu-h200x2-multi-gpu/): the estimator must
# stay within 10% of each (issue 11). These are the estimator's calibration set, in-sample: vram.py
# was written against them and one term (the backward's transients) was sized from their gaps. The
# runs it never saw are checked in tests/test_throughput.py (benchmarks/results/estimator-accuracy.json).
# The benchmark keeps 4 sequences an optimizer step: micro batch 1 runs 4 accumulation steps.
def _ga(micro_batch: int) -> dict:
    return dict(micro_batch_size=micro_batch, gradient_accumulation_steps=4 // micro_batch)


_OFFLOAD = dict(activation_offloading="hidden_states")
_NO_DROPOUT = dict(lora_dropout=0.0)


@pytest.mark.parametrize(
    ("changes", "measured_gib"),
    [
        (dict(**_ga(1), upcast_frozen_fp32=True, **_NO_LORA_KERNELS), 13.57),  # H100, plain PEFT
        (_ga(1), 10.15),  # H100, Axolotl defaults
        (dict(**_ga(4), **_LIGER), 9.56),  # H100, arm (c)
        (dict(**_ga(1), **_OFFLOAD, **_LIGER), 7.21),
        (dict(micro_batch_size=4, gradient_accumulation_steps=2, sequence_len=4096), 34.4),  # H200
        (dict(**_ga(1), **_LIGER, **_BF16_ADAPTERS), 7.01),
        (dict(**_ga(2), **_NO_DROPOUT, **_LIGER, **_BF16_ADAPTERS), 7.71),
        (dict(**_ga(4), **_NO_DROPOUT, **_LIGER, **_BF16_ADAPTERS), 8.96),
        (dict(**_ga(4), **_LIGER, **_BF16_ADAPTERS), 9.24),
        (dict(**_ga(2), **_OFFLOAD, **_LIGER, **_BF16_ADAPTERS), 6.96),
        (dict(**_ga(2), **_OFFLOAD, **_NO_DROPOUT, **_LIGER, **_BF16_ADAPTERS), 6.81),
        # predicted (12.99 GiB) before it was measured: throughput-h200-8b-8seqs.md
        (dict(micro_batch_size=8, **_LIGER), 12.99),
    ],
    ids=[
        "plain",
        "axolotl-defaults",
        "liger-mb4",
        "liger-offload-mb1",
        "80gb-seq4096",
        "liger-bf16-mb1",
        "liger-bf16-nodrop-mb2",
        "liger-bf16-nodrop-mb4",
        "liger-bf16-mb4",
        "8gb-offload-mb2",
        "8gb-offload-nodrop-mb2",
        "liger-mb8",
    ],
)
def test_estimator_within_ten_percent_of_measured_peaks(changes: dict, measured_gib: float) -> None:
    cfg = {**_QLORA_8B, **changes}
    predicted = vram.estimate(LLAMA_8B, vram.plan_from_axolotl(cfg)).peak_allocated / 2**30
    assert abs(predicted / measured_gib - 1) <= 0.10, f"{predicted:.2f} GiB predicted vs {measured_gib}"


_NO_LIGER = dict(
    plugins=None,
    liger_rope=None,
    liger_rms_norm=None,
    liger_glu_activation=None,
    liger_fused_linear_cross_entropy=None,
)


# SmolLM2-135M shape, the same benchmark on the H200 (benchmarks/results/throughput-h200.md and
# throughput-h200-smol-16seqs.md). Its LoRA matrices are all under 100,000 elements, so even the
# paged optimizer keeps their states in ordinary GPU memory; the c variants move by what dropout
# (Axolotl's shared copies) and fp32 adapters cost.
@pytest.mark.parametrize(
    ("changes", "measured_gib"),
    [
        (dict(**_ga(1), **_NO_LIGER, upcast_frozen_fp32=True, **_NO_LORA_KERNELS), 1.72),  # plain PEFT
        (dict(**_ga(1), **_NO_LIGER), 1.55),  # Axolotl defaults
        (dict(**_ga(4), **_LIGER), 0.73),  # arm (c)
        (dict(**_ga(4), **_NO_DROPOUT, **_LIGER), 0.69),  # c:nodrop
        (dict(**_ga(4), **_LIGER, **_BF16_ADAPTERS), 0.70),  # c:bf16lora
        (dict(**_ga(4), **_NO_DROPOUT, **_LIGER, **_BF16_ADAPTERS), 0.65),  # c:fast
        (dict(micro_batch_size=16, **_LIGER), 2.10),  # arm (c) at 16 sequences a step
    ],
    ids=["plain", "axolotl-defaults", "c", "c-nodrop", "c-bf16lora", "c-fast", "c-mb16"],
)
def test_estimator_within_ten_percent_on_smollm2(changes: dict, measured_gib: float) -> None:
    cfg = {**_QLORA_8B, **changes}
    predicted = vram.estimate(SMOLLM2, vram.plan_from_axolotl(cfg)).peak_allocated / 2**30
    assert abs(predicted / measured_gib - 1) <= 0.10, f"{predicted:.2f} GiB predicted vs {measured_gib}"


def test_small_lora_matrices_keep_their_paged_optimizer_states_on_the_gpu() -> None:
    # bitsandbytes pages only state tensors of >= 100,000 elements. An 8B at r 64 pages all but k/v's
    # lora_B (1024 x 64); at r 16 only the MLP's long sides (gate/up lora_B, down lora_A: 16 x 14336);
    # SmolLM2 at r 64 none (64 x 1536 at most).
    def states(numel: int) -> int:
        return 2 * numel * LLAMA_8B.num_layers  # 8-bit: two 1-byte moments a parameter

    total, paged = vram.optimizer_state_bytes(LLAMA_8B, vram.TrainPlan(lora_r=64))
    assert total == 2 * vram.lora_param_count(LLAMA_8B, 64, vram.LLAMA_PROJECTIONS)
    assert paged == total - 2 * states(1024 * 64)
    total, paged = vram.optimizer_state_bytes(LLAMA_8B, vram.TrainPlan(lora_r=16))
    assert paged == 3 * states(16 * 14336)
    total, paged = vram.optimizer_state_bytes(SMOLLM2, vram.TrainPlan(lora_r=64))
    assert total == 2 * vram.lora_param_count(SMOLLM2, 64, vram.LLAMA_PROJECTIONS) and paged == 0
    # what is not paged is ordinary GPU memory: the same persistent bytes as the unpaged optimizer
    smol = vram.estimate(SMOLLM2, vram.TrainPlan(optimizer="paged_adamw_8bit"))
    assert smol.persistent == vram.estimate(SMOLLM2, vram.TrainPlan(optimizer="adamw_8bit")).persistent
    # a k_proj lora_B of 1024 x 2 is under 4,096 elements: 32-bit states, 8 bytes a parameter
    total, _ = vram.optimizer_state_bytes(LLAMA_8B, vram.TrainPlan(lora_r=2, lora_target_modules=("k_proj",)))
    assert total == states(2 * 4096) + 8 * 1024 * 2 * LLAMA_8B.num_layers


def test_axolotl_lora_kernels_share_one_dropout_copy_per_input() -> None:
    cfg = {**_QLORA_8B, **_LIGER, "micro_batch_size": 4}
    auto = vram.plan_from_axolotl(cfg)  # no kernel key set: Axolotl turns them on for QLoRA
    assert auto.lora_qkv_kernel and auto.lora_mlp_kernel
    plain = vram.plan_from_axolotl({**cfg, **_NO_LORA_KERNELS})
    assert not plain.lora_qkv_kernel and not plain.lora_mlp_kernel
    no_dropout = vram.plan_from_axolotl({**cfg, "lora_dropout": 0.0})

    def dropout_bytes(plan: vram.TrainPlan) -> int:
        return (
            vram.estimate(LLAMA_8B, plan).layer_working_set
            - vram.estimate(LLAMA_8B, replace(plan, lora_dropout=0.0)).layer_working_set
        )

    h, tokens, per_element = LLAMA_8B.hidden_size, 4 * 2048, 2 + 1  # bf16 copy + its mask
    q = LLAMA_8B.num_heads * LLAMA_8B.head_dim
    assert dropout_bytes(auto) == tokens * (h + q + h) * per_element  # qkv, o, gate/up
    assert dropout_bytes(plain) == tokens * (3 * h + q + 2 * h + LLAMA_8B.intermediate_size) * per_element
    assert vram.estimate(LLAMA_8B, no_dropout).peak_allocated < vram.estimate(LLAMA_8B, auto).peak_allocated


def test_estimator_on_the_two_gpu_run_training_and_evaluation() -> None:
    # 2 x H200, DeepSpeed ZeRO-2, profile 80gb with Liger, micro batch 4 x 4096 tokens x GA 2
    # (benchmarks/results/gpu-h200x2-multi-gpu/): training steps 15.05 GiB, evaluation 25.7 GiB.
    cfg = {**_QLORA_8B, **_LIGER, "micro_batch_size": 4, "sequence_len": 4096}
    cfg["gradient_accumulation_steps"] = 2
    estimate = vram.estimate(LLAMA_8B, vram.plan_from_axolotl(cfg))
    assert abs(estimate.peak_allocated / 2**30 / 15.05 - 1) <= 0.10
    assert abs(estimate.eval_peak / 2**30 / 25.7 - 1) <= 0.10
    assert estimate.required > estimate.eval_peak  # what must be free covers the evaluation too
    smaller = vram.estimate(LLAMA_8B, vram.plan_from_axolotl({**cfg, "eval_batch_size": 1}))
    assert smaller.eval_peak < estimate.eval_peak / 2  # a quarter of the logits


def test_estimator_models_bf16_adapters_and_offloading() -> None:
    def estimate(**changes: object) -> vram.Estimate:
        cfg = {**_QLORA_8B, "micro_batch_size": 4, **changes}
        return vram.estimate(LLAMA_8B, vram.plan_from_axolotl(cfg))

    base = estimate()
    assert estimate(peft_autocast_adapter_dtype=False).lora_weights * 2 == base.lora_weights
    offloaded = estimate(activation_offloading="hidden_states")
    assert offloaded.saved_activations * 16 == base.saved_activations  # 2 of 32 layer inputs stay


def test_auto_fit_picks_more_on_a_bigger_card() -> None:
    plan = vram.TrainPlan()
    small = vram.choose_batch_and_length(LLAMA_8B, plan, 12 * 2**30, 512)
    large = vram.choose_batch_and_length(LLAMA_8B, plan, 70 * 2**30, 512)
    assert small is not None and large is not None
    assert vram.choose_batch_and_length(LLAMA_8B, plan, 2 * 2**30, 512) is None


def test_two_gpus_launch_with_deepspeed_zero2(tmp_path: Path, base_model_dir: Path) -> None:
    cfg = ac.render(ac.load_profile("24gb"), _spec(tmp_path, base_model_dir, gpus=2))
    assert cfg["deepspeed"].endswith("configs/deepspeed/zero2.json") and Path(cfg["deepspeed"]).is_file()
    assert cfg["eval_sample_packing"] is False  # small val splits leave ranks without eval batches
    command = launch_command(tmp_path / "axolotl.yaml", 2, on_gpu=True)
    assert "--multi_gpu" in command and command[command.index("--num_processes") + 1] == "2"
    fsdp = ac.render(ac.load_profile("24gb"), _spec(tmp_path, base_model_dir, gpus=2, multi_gpu="fsdp"))
    assert "deepspeed" not in fsdp and fsdp.get("fsdp_config")


def test_eval_batch_never_exceeds_the_val_split(tmp_path: Path, base_model_dir: Path) -> None:
    # The H100 run that lost eval_loss: --profile auto chose micro batch 16, the val split had 15.
    big = ac.render(ac.load_profile("80gb"), _spec(tmp_path, base_model_dir, micro_batch=16, val_examples=15))
    assert big["eval_batch_size"] == 15 and big["eval_sample_packing"] is False
    two = ac.render(
        ac.load_profile("80gb"), _spec(tmp_path, base_model_dir, micro_batch=16, val_examples=15, gpus=2)
    )
    assert two["eval_batch_size"] == 7  # per GPU
    roomy = ac.render(ac.load_profile("24gb"), _spec(tmp_path, base_model_dir, val_examples=400))
    assert "eval_batch_size" not in roomy and roomy["eval_sample_packing"] is False


def test_cpu_runs_evaluate_on_an_even_sample(tmp_path: Path) -> None:
    val = tmp_path / "val.jsonl"
    val.write_text("".join(f'{{"i": {i}}}\n' for i in range(100)))
    sample = cpu_val_sample(val, tmp_path / "run", limit=10)
    lines = sample.read_text().splitlines()
    assert len(lines) == 10 and lines[0] == '{"i": 0}' and lines[-1] == '{"i": 90}'
    short = tmp_path / "short.jsonl"
    short.write_text('{"i": 1}\n')
    assert cpu_val_sample(short, tmp_path / "run", limit=10) == short


# SmolLM2-135M's shape (the demo model) and the 80gb profile as `--profile auto` rendered it on the
# lent H100/H200 (benchmarks/results/gpu-h200-smollm2/axolotl.yaml): micro batch 16 x 4096 tokens.
SMOLLM2 = vram.ModelShape.from_config(throughput.SMOLLM2_135M.llama_config_kwargs())
_SMOLLM2_80GB = {**_QLORA_8B, **_LIGER, "micro_batch_size": 16, "sequence_len": 4096}


def test_eval_batch_is_sized_to_stay_within_a_training_step() -> None:
    # Measured: evaluation at batch 15 peaked at 28.47 GiB (full logits, no fused loss) against
    # 4.01 GiB in training steps; at eval batch 1 it peaked at 2.16 GiB.
    plan = vram.plan_from_axolotl({**_SMOLLM2_80GB, "eval_batch_size": 15})
    assert abs(vram.estimate(SMOLLM2, plan).eval_peak / 2**30 / 28.47 - 1) <= 0.10
    assert abs(vram.estimate(SMOLLM2, plan).peak_allocated / 2**30 / 4.01 - 1) <= 0.10
    fitted = vram.eval_batch_within_training_peak(SMOLLM2, plan)
    assert fitted == 1
    at_one = vram.estimate(SMOLLM2, vram.plan_from_axolotl({**_SMOLLM2_80GB, "eval_batch_size": 1}))
    assert abs(at_one.eval_peak / 2**30 / 2.16 - 1) <= 0.10
    # a short sequence leaves room for a larger eval batch, never above the micro batch (with the
    # profile's gradient accumulation, whose kept gradients add to the training peak)
    short_cfg = {**_SMOLLM2_80GB, "sequence_len": 256, "gradient_accumulation_steps": 2}
    roomy = vram.eval_batch_within_training_peak(SMOLLM2, vram.plan_from_axolotl(short_cfg))
    assert 1 < roomy <= 16
    sized = vram.estimate(SMOLLM2, vram.plan_from_axolotl({**short_cfg, "eval_batch_size": roomy}))
    assert sized.eval_peak <= sized.peak_allocated


def test_auto_fit_sizes_the_eval_batch_apart_from_the_micro_batch() -> None:
    # Before: the eval peak at the micro batch counted against the card, so evaluation shrank the
    # training micro batch. Now auto picks the same micro batch as with a tiny eval.
    plan = vram.plan_from_axolotl(_SMOLLM2_80GB)
    choice = vram.choose_batch_and_length(SMOLLM2, plan, 78 * 2**30, 4096)
    assert choice is not None and choice.micro_batch_size >= 16


def test_rendered_eval_batch_fits_memory_on_a_gpu(tmp_path: Path, base_model_dir: Path) -> None:
    # without the fused eval loss (a profile of the user's own with Liger alone): shrink the batch
    # (with checkpointing: without it the 80gb profile's training peak is larger than the evaluation's)
    liger_alone = {"plugins": ["axolotl.integrations.liger.LigerPlugin"], "gradient_checkpointing": True}
    spec = dict(micro_batch=16, val_examples=15, data_sequence_len=4096)
    on_gpu = _spec(tmp_path, base_model_dir, fit_eval_to_memory=True, overrides=liger_alone, **spec)
    gpu = ac.render(ac.load_profile("80gb"), on_gpu)
    assert gpu["eval_batch_size"] == 1
    said = "eval_batch_size 1: evaluation builds the full logits"
    assert any(note.startswith(said) for note in on_gpu.notes)
    cpu = ac.render(ac.load_profile("80gb"), _spec(tmp_path, base_model_dir, overrides=liger_alone, **spec))
    assert cpu["eval_batch_size"] == 15  # only the val-split cap without the GPU fit
    chosen = ac.render(
        ac.load_profile("80gb"),
        _spec(
            tmp_path,
            base_model_dir,
            fit_eval_to_memory=True,
            overrides={**liger_alone, "eval_batch_size": 8},
            **spec,
        ),
    )
    assert chosen["eval_batch_size"] == 8  # --set eval_batch_size=8 is the user's call
    # voicetune's profiles fuse the loss in evaluation too: the batch stays as large as the split
    fused_spec = _spec(tmp_path, base_model_dir, fit_eval_to_memory=True, **spec)
    fused = ac.render(ac.load_profile("80gb"), fused_spec)
    assert fused["eval_batch_size"] == 15


def test_log_watcher_keeps_training_and_evaluation_peaks_apart() -> None:
    # The real Axolotl log of the H200 SmolLM2 run: it resets the peak counter at every log.
    from voicetune.train.train import LogWatcher

    log = Path(__file__).parents[1] / "benchmarks/results/gpu-h200-smollm2/train.log"
    watcher = LogWatcher()
    for line in log.read_text().splitlines(keepends=True):
        watcher.feed(line)
    assert len(watcher.train) == 40 and len(watcher.evals) == 11  # one before the first step
    assert watcher.peak_vram_gib("train") == 4.01
    assert watcher.peak_vram_gib("eval") == 2.16
    assert watcher.peak_vram_gib() == 4.01


def test_fused_eval_loss_plugin_asks_for_the_loss_alone() -> None:
    # The plugin runs inside Axolotl's trainer; here its wrapper gets a stand-in prediction_step
    # that records what the model would be called with (no GPU for Liger's kernels in CI).
    from voicetune.train.fused_eval_loss import loss_only_prediction_step

    seen: list[dict] = []
    step = loss_only_prediction_step(lambda model, inputs, loss_only, ignore_keys=None: seen.append(inputs))
    step(None, {"input_ids": [1], "labels": [1]}, True)
    step(None, {"input_ids": [1], "labels": [1]}, False)  # logits wanted (metrics, predictions)
    step(None, {"input_ids": [1]}, True)  # no labels: Liger needs them for the fused loss
    assert [inputs.get("skip_logits") for inputs in seen] == [True, None, None]


def test_every_gpu_profile_evaluates_with_the_fused_loss() -> None:
    from voicetune.train.fused_eval_loss import NAME

    for profile in ac.PROFILES:
        cfg = ac.load_profile(profile)
        fused = vram.plan_from_axolotl(cfg).fused_eval_loss
        assert fused == (profile != "cpu-demo") and (NAME in cfg.get("plugins", [])) == fused


def test_8gb_profile_fits_an_8b_model_in_seven_gib_training_and_evaluating() -> None:
    cfg = ac.load_profile("8gb")
    plan = vram.plan_from_axolotl(cfg)
    estimate = vram.estimate(LLAMA_8B, plan)
    assert plan.micro_batch_size == 2 and plan.sequence_len == 2048
    assert estimate.peak_allocated / 2**30 <= 7.0  # measured 6.96 GiB (c:8gb-offload)
    assert estimate.eval_peak <= estimate.peak_allocated  # the fused loss: no full logits
    liger_alone = {**cfg, "plugins": cfg["plugins"][:1], "eval_batch_size": 1}
    unfused = vram.estimate(LLAMA_8B, vram.plan_from_axolotl(liger_alone))
    assert unfused.eval_peak / 2**30 > 8  # what evaluation needed before, even at eval batch 1
    assert vram.eval_batch_within_training_peak(LLAMA_8B, plan) == 2  # no more than the micro batch
    assert [ac.profile_for_gpu(gib) for gib in (7.6, 11.6, 15.6, 23.5, 31.4, 79.1)] == [
        "8gb",
        "8gb",
        "16gb",
        "24gb",
        "32gb-rtx5090",
        "80gb",
    ]


@pytest.mark.parametrize(
    ("shape", "cfg", "measured_train", "measured_eval"),
    [
        # benchmarks/results/gpu-h200-eval-memory/: `voicetune train`, FusedEvalLossPlugin on
        (LLAMA_8B, {**ac.load_profile("8gb")}, 6.98, 6.31),  # profile 8gb, eval batch 2
        (
            SMOLLM2,
            {**_SMOLLM2_80GB, "plugins": ac.load_profile("80gb")["plugins"], "eval_batch_size": 15},
            4.01,
            1.49,
        ),
        (
            SMOLLM2,
            {**_SMOLLM2_80GB, "plugins": ac.load_profile("80gb")["plugins"], "eval_batch_size": 1},
            4.01,
            0.36,
        ),
    ],
    ids=["8b-8gb-profile", "smollm2-eval15", "smollm2-eval1"],
)
def test_estimator_within_ten_percent_with_the_fused_eval_loss(
    shape: vram.ModelShape, cfg: dict, measured_train: float, measured_eval: float
) -> None:
    estimate = vram.estimate(shape, vram.plan_from_axolotl(cfg))
    assert abs(estimate.peak_allocated / 2**30 / measured_train - 1) <= 0.10
    assert abs(estimate.eval_peak / 2**30 / measured_eval - 1) <= 0.10


def test_fused_eval_loss_only_for_models_liger_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    # A real (tiny, random) Llama and a real PEFT wrapper; Liger patches the class's forward, as
    # Axolotl's LigerPlugin does for the architectures Liger supports.
    import torch
    from liger_kernel.transformers.model.llama import lce_forward
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from voicetune.train.fused_eval_loss import accepts_skip_logits

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=64,
    )
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj"]))
    assert not accepts_skip_logits(model)  # unpatched: eval stays as Axolotl does it
    monkeypatch.setattr(LlamaForCausalLM, "forward", lce_forward)
    assert accepts_skip_logits(model)


def _card(free_gib: float, total_gib: float = 8.0) -> preflight.GpuInfo:
    return preflight.GpuInfo(
        name="an 8 GB card (stand-in: no GPU in CI)",
        count=1,
        free_bytes=int(free_gib * 2**30),
        total_bytes=int(total_gib * 2**30),
        compute_capability=(8, 9),
        torch_cuda=True,
        source="test",
    )


def test_a_small_card_is_tight_not_refused() -> None:
    # An 8B model on an 8 GB card (7.6 GiB free): the 8gb profile's peak (6.98 GiB measured) fits
    # only without the allocator's 10% slack. Auto picks it and says so; preflight warns.
    cfg = ac.load_profile("8gb")
    plan = vram.plan_from_axolotl(cfg)
    choice = vram.choose_batch_and_length(LLAMA_8B, plan, int(7.6 * 2**30), 2048)
    assert choice is not None and (choice.micro_batch_size, choice.sequence_len) == (2, 2048)  # as measured
    assert "no room for the allocator's slack" in choice.reason
    assert choice.estimate.minimum <= 7.6 * 2**30 < choice.estimate.required
    roomy = vram.choose_batch_and_length(LLAMA_8B, plan, 12 * 2**30, 2048)
    assert roomy is not None and "slack" not in roomy.reason
    _, problems, warnings = preflight.check_vram(cfg, LLAMA_8B, _card(7.6))
    assert problems == [] and len(warnings) == 1 and warnings[0].startswith("tight:")
    _, problems, warnings = preflight.check_vram(cfg, LLAMA_8B, _card(6.0))
    assert len(problems) == 1 and "needed at least" in problems[0] and warnings == []
    assert vram.choose_batch_and_length(LLAMA_8B, plan, 6 * 2**30, 2048) is None


_NO_FLAGS = SimpleNamespace(
    sequence_len=None, max_steps=None, epochs=None, micro_batch=None, grad_accum=None, lr=None
)


def test_cards_without_bf16_keep_lora_weights_in_fp32(base_model_dir: Path) -> None:
    # An RTX 2080 (Turing, 8 GB, no bf16: training runs in fp16). fp16 LoRA weights would stop the
    # first step with "Attempting to unscale FP16 gradients"; a built-in profile (auto, by name, or
    # resumed) drops the 8gb profile's bf16 adapters there, and preflight names the fix for a
    # user's own YAML.
    import dataclasses

    from voicetune.train.train import choose_profile

    turing = dataclasses.replace(_card(7.6), compute_capability=(7, 5))
    inputs = SimpleNamespace(
        base_model=base_model_dir,
        overrides={},
        data_sequence_len=256,
        data_manifest={},
        data_dir=base_model_dir,
        settings=_NO_FLAGS,
    )
    choice = choose_profile("auto", turing, inputs, None)  # type: ignore[arg-type]
    assert choice.name == "8gb" and "peft_autocast_adapter_dtype" not in choice.cfg
    assert any("has no bf16" in reason for reason in choice.reasons)
    for requested, sticky in (("8gb", None), ("auto", choice.auto)):
        again = choose_profile(requested, turing, inputs, sticky)  # type: ignore[arg-type]
        assert "peft_autocast_adapter_dtype" not in again.cfg
        assert any("profile 8gb:" in reason and "has no bf16" in reason for reason in again.reasons)
        assert preflight.hardware_problems(again.cfg, turing, 1) == []
    told = SimpleNamespace(**{**vars(inputs), "overrides": {"peft_autocast_adapter_dtype": False}})
    assert choose_profile("8gb", turing, told, None).cfg["peft_autocast_adapter_dtype"] is False  # type: ignore[arg-type]
    own_yaml = ac.load_profile("8gb")  # what a user's copy of the profile holds
    [problem] = preflight.hardware_problems(own_yaml, turing, 1)
    assert "peft_autocast_adapter_dtype: true" in problem
    assert preflight.hardware_problems(own_yaml, _card(7.6), 1) == []  # Ada: bf16
    ampere = choose_profile("auto", _card(7.6), inputs, None)  # type: ignore[arg-type]
    assert ampere.cfg["peft_autocast_adapter_dtype"] is False


def test_loading_peak_counts_the_embeddings_fp32_casts() -> None:
    # Axolotl casts the embedding, then the LM head, to fp32 while loading (and back before training):
    # with the head being cast, the embedding is fp32 and the head exists in both dtypes. Measured on
    # the H200 (benchmarks/results/throughput-h200-default-8seqs.json): 8.25 GiB for Axolotl's
    # defaults and for plain PEFT (prepare_model_for_kbit_training), 5.63 GiB with
    # embeddings_skip_upcast; a 7.6 GiB cap failed loading with "1.96 GiB asked, 6.29 GiB allocated".
    eight_gb = {
        **_QLORA_8B,
        **_LIGER,
        **_BF16_ADAPTERS,
        **_OFFLOAD,
        "micro_batch_size": 2,
        "gradient_accumulation_steps": 4,
    }  # the 8gb profile, its fused evaluation loss too
    eight_gb["plugins"] = [*_LIGER["plugins"], "voicetune.train.fused_eval_loss.FusedEvalLossPlugin"]
    casting = vram.estimate(LLAMA_8B, vram.plan_from_axolotl(eight_gb))
    skipping = vram.estimate(LLAMA_8B, vram.plan_from_axolotl({**eight_gb, "embeddings_skip_upcast": True}))
    head = LLAMA_8B.vocab_size * LLAMA_8B.hidden_size
    assert casting.load_peak - skipping.load_peak == 6 * head - skipping.lora_weights
    assert abs(casting.load_peak / 2**30 / 8.25 - 1) <= 0.01
    assert abs(skipping.load_peak / 2**30 / 5.63 - 1) <= 0.01
    # the cast is the run's worst moment: what must be free covers it, so a 7.6 GiB card "fits" only
    # without it (tight: no slack), and the training peak is the same either way
    assert casting.highest_peak == casting.load_peak > casting.peak_allocated == skipping.peak_allocated
    assert skipping.highest_peak == skipping.peak_allocated
    assert casting.minimum > 7.6 * 2**30 >= skipping.minimum
    plain = vram.plan_from_axolotl({**_QLORA_8B, "upcast_frozen_fp32": True, "embeddings_skip_upcast": True})
    assert abs(vram.load_peak_bytes(LLAMA_8B, plain) / 2**30 / 8.25 - 1) <= 0.01  # PEFT casts regardless
    # SmolLM2 ties its head to the embedding: one matrix cast; measured 0.23 GiB for plain PEFT
    smol_plain = vram.plan_from_axolotl({**_QLORA_8B, "upcast_frozen_fp32": True, **_NO_LORA_KERNELS})
    assert abs(vram.load_peak_bytes(SMOLLM2, smol_plain) / 2**30 / 0.23 - 1) <= 0.05


@pytest.mark.parametrize(("overrides", "trained"), [({}, False), ({"train_on_eos": "turn"}, True)])
def test_the_end_of_a_passage_is_not_taught_as_the_end_of_the_writing(
    overrides: dict, trained: bool, tmp_path: Path, base_model_dir: Path
) -> None:
    """Passages are cuts of longer texts: by default no end-of-turn label (the model learnt to stop
    after a line of dialogue); a profile or --set train_on_eos=turn puts it back. Checked with
    Axolotl's own chat_template tokenizing strategy on the rendered dataset entry."""
    from axolotl.prompt_strategies.chat_template import load
    from axolotl.utils.dict import DictDefault
    from transformers import AutoTokenizer

    cfg = ac.render(ac.load_profile("cpu-demo"), _spec(tmp_path, base_model_dir, overrides=overrides))
    assert "train_on_eos" not in cfg  # a dataset key: on every dataset, not at the top
    entries = cfg["datasets"] + cfg["test_datasets"]
    assert {entry["train_on_eos"] for entry in entries} == {"turn" if trained else "none"}
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    strategy = load(
        tokenizer,
        DictDefault({"sequence_len": 256, "train_on_inputs": False, "chat_template": None}),
        DictDefault(cfg["datasets"][0]),
    )
    row = {
        "messages": [
            {"role": "system", "content": "You are the author."},
            {"role": "user", "content": "Continue this passage."},
            {"role": "assistant", "content": "He said no."},
        ]
    }
    out = strategy.tokenize_prompt(row)
    labelled = [
        tokenizer.decode([i])
        for i, label in zip(out["input_ids"], out["labels"], strict=True)
        if label != -100
    ]
    assert "".join(labelled[:4]).strip() == "He said no."
    assert (tokenizer.eos_token in labelled) is trained
