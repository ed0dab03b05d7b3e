#!/usr/bin/env python3
"""How close voicetune.train.vram's estimates come to measured peaks, split honestly.

Calibration: the runs the estimator was written and tuned against (every measurement committed
before 2026-12-02: the throughput-*.json files listed in CALIBRATION_FILES and the points of
EXTRA_CALIBRATION from other result folders). One term, the backward's transients, was sized from
the gaps they left, so their errors are in-sample.
Held-out: runs measured after the estimator was frozen for them (HELD_OUT_FILES: new sequence
lengths, the allocator-capped 8gb profile, micro batches and settings never seen), predicted by the
same code before their numbers were known.

Each point compares one phase: `train` (peak allocated over the training steps), `load` (peak
allocated from the process start to the first step; only where it was read correctly, see
LOAD_TRUSTED) and `eval` (evaluation). Estimates come from the estimator as it is now, from each
run's own recorded config, so a change to vram.py shows up here and in tests/test_throughput.py.

    python benchmarks/perf/estimator_accuracy.py          # writes benchmarks/results/estimator-accuracy.*
    python benchmarks/perf/estimator_accuracy.py --check  # exit 1 if the committed file is stale
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
PERF = Path(__file__).resolve().parent
if str(PERF) not in sys.path:
    sys.path.insert(0, str(PERF))

import throughput as tp  # noqa: E402

from voicetune.core.manifest import write_json_atomic, write_text_atomic  # noqa: E402
from voicetune.train import vram  # noqa: E402

OUT_JSON = RESULTS / "estimator-accuracy.json"
OUT_MD = RESULTS / "estimator-accuracy.md"
# What the README states and tests/test_throughput.py asserts for the held-out set.
HELD_OUT_TOLERANCE = 0.10
CALIBRATION_TOLERANCE = 0.10

CALIBRATION_FILES = (
    "throughput-h100-80gb-hbm3.json",
    "throughput-h200.json",
    "throughput-h200-8b-8seqs.json",
    "throughput-h200-smol-16seqs.json",
)
HELD_OUT_FILES: tuple[str, ...] = (
    "throughput-h200-8gb-seq2048.json",  # the 8gb profile, allocator capped at 7.6 GiB, and its twin
    "throughput-h200-8gb-seq4096.json",  # the same at 4096 tokens (never measured before)
    "throughput-h200-default-8seqs.json",  # the 80gb profile without checkpointing, b's loading peak
)

# Before 2026-12-02 the benchmark read the loading peak after Axolotl had reset torch's counters:
# only arm (a) (no Axolotl) has a true loading peak in the calibration files.
LOAD_TRUSTED_KEY = "load_peak_method"

_QLORA = {
    "adapter": "qlora",
    "load_in_4bit": True,
    "bf16": "auto",
    "lora_r": 64,
    "lora_dropout": 0.05,
    "lora_target_modules": list(vram.LLAMA_PROJECTIONS),
    "optimizer": "paged_adamw_8bit",
    "gradient_checkpointing": True,
    "attn_implementation": "sdpa",
    "sequence_len": 2048,
}
_LIGER = {
    "plugins": ["axolotl.integrations.liger.LigerPlugin"],
    "liger_rope": True,
    "liger_rms_norm": True,
    "liger_glu_activation": True,
    "liger_fused_linear_cross_entropy": True,
}
_EIGHT_GB = {
    **_QLORA,
    **_LIGER,
    "plugins": [*_LIGER["plugins"], "voicetune.train.fused_eval_loss.FusedEvalLossPlugin"],
    "peft_autocast_adapter_dtype": False,
    "activation_offloading": "hidden_states",
    "micro_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "eval_batch_size": 2,
}
# Measured peaks outside the throughput JSON files (all calibration): (source, model, label, phase,
# measured GiB, config).
EXTRA_CALIBRATION: tuple[tuple[str, str, str, str, float, dict[str, Any]], ...] = (
    (
        "gpu-h200x2-multi-gpu/README.md",
        "8b",
        "2xH200 80gb mb4x4096",
        "train",
        15.05,
        {**_QLORA, **_LIGER, "micro_batch_size": 4, "sequence_len": 4096, "gradient_accumulation_steps": 2},
    ),
    (
        "gpu-h200x2-multi-gpu/README.md",
        "8b",
        "2xH200 80gb mb4x4096",
        "eval",
        25.7,
        {**_QLORA, **_LIGER, "micro_batch_size": 4, "sequence_len": 4096, "gradient_accumulation_steps": 2},
    ),
    (
        "tests/test_train.py (H200, 80gb profile at 4096)",
        "8b",
        "80gb mb4x4096",
        "train",
        34.4,
        {**_QLORA, "micro_batch_size": 4, "gradient_accumulation_steps": 2, "sequence_len": 4096},
    ),
    (
        "tests/test_train.py (H100, an earlier run)",
        "8b",
        "liger offload mb1",
        "train",
        7.21,
        {
            **_QLORA,
            **_LIGER,
            "micro_batch_size": 1,
            "gradient_accumulation_steps": 4,
            "activation_offloading": "hidden_states",
        },
    ),
    (
        "gpu-h200-eval-memory/README.md",
        "8b",
        "8gb profile mb2x2048",
        "train",
        6.98,
        _EIGHT_GB,
    ),
    (
        "gpu-h200-eval-memory/README.md",
        "8b",
        "8gb profile mb2x2048",
        "eval",
        6.31,
        _EIGHT_GB,
    ),
    (
        "gpu-h200-smollm2/README.md",
        "smol",
        "80gb mb16x4096 eval15",
        "train",
        4.01,
        {**_QLORA, **_LIGER, "micro_batch_size": 16, "sequence_len": 4096, "eval_batch_size": 15},
    ),
    (
        "gpu-h200-smollm2/README.md",
        "smol",
        "80gb mb16x4096 eval15",
        "eval",
        28.47,
        {**_QLORA, **_LIGER, "micro_batch_size": 16, "sequence_len": 4096, "eval_batch_size": 15},
    ),
    (
        "gpu-h200-eval-memory/README.md",
        "smol",
        "80gb mb16x4096 eval1",
        "eval",
        2.16,
        {**_QLORA, **_LIGER, "micro_batch_size": 16, "sequence_len": 4096, "eval_batch_size": 1},
    ),
)


def _bench() -> Any:
    """benchmarks/perf/training_throughput.py, for the configs of plain-PEFT runs."""
    spec = importlib.util.spec_from_file_location("bench_throughput_acc", PERF / "training_throughput.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def run_config(run: dict[str, Any], bench: Any) -> dict[str, Any] | None:
    cfg = run.get("axolotl_config")
    if cfg is None and run.get("plain_settings"):
        known = {f.name for f in bench.fields(bench.Settings)}
        settings = bench.Settings(**{k: v for k, v in (run.get("settings") or {}).items() if k in known})
        cfg = bench.plain_equivalent(settings, run["plain_settings"])
    return cfg


def plan_key(model: str, cfg: dict[str, Any], phase: str) -> str:
    """What decides an estimate: the model, the phase and the memory-relevant plan."""
    return f"{model}|{phase}|{vram.plan_from_axolotl(cfg)!r}"


def estimate_gib(model: str, cfg: dict[str, Any], phase: str) -> float:
    shape = vram.ModelShape.from_config(tp.SHAPES[model].llama_config_kwargs())
    plan = vram.plan_from_axolotl(cfg)
    est = vram.estimate(shape, plan)
    value = {"train": est.peak_allocated, "eval": est.eval_peak, "load": est.load_peak}[phase]
    return round(value / tp.GIB, 2)


def point(
    source: str,
    model: str,
    label: str,
    phase: str,
    measured: float,
    cfg: dict[str, Any],
    role: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    est = estimate_gib(model, cfg, phase)
    return {
        "set": role,
        "source": source,
        "model": model,
        "label": label,
        "phase": phase,
        "sequence_len": cfg.get("sequence_len"),
        "micro_batch": cfg.get("micro_batch_size"),
        "measured_gib": measured,
        "estimate_gib": est,
        "error": round((est - measured) / measured, 4),
        "plan_key": plan_key(model, cfg, phase),
        **(extra or {}),
    }


def file_points(name: str, role: str, bench: Any) -> list[dict[str, Any]]:
    data = json.loads((RESULTS / name).read_text(encoding="utf-8"))
    points = []
    for run in data.get("runs", []):
        cfg = run_config(run, bench)
        if cfg is None or run.get("model") not in tp.SHAPES:
            continue
        extra = {"allocator_cap_gib": run.get("allocator_cap_gib"), "status": run.get("status")}
        if run.get("status") == "ok" and run.get("peak_alloc_train_gib"):
            points.append(
                point(
                    name, run["model"], run["label"], "train", run["peak_alloc_train_gib"], cfg, role, extra
                )
            )
        load = run.get("load_peak_alloc_gib")
        if load and (run.get(LOAD_TRUSTED_KEY) == "phase-folded" or run.get("arm") == "a"):
            points.append(point(name, run["model"], run["label"], "load", load, cfg, role, extra))
    return points


def collect() -> dict[str, Any]:
    bench = _bench()
    points: list[dict[str, Any]] = []
    for name in CALIBRATION_FILES:
        points += file_points(name, "calibration", bench)
    for source, model, label, phase, measured, cfg in EXTRA_CALIBRATION:
        points.append(point(source, model, label, phase, measured, cfg, "calibration"))
    for name in HELD_OUT_FILES:
        points += file_points(name, "held_out", bench)
    seen = {p["plan_key"] for p in points if p["set"] == "calibration"}
    for p in points:
        if p["set"] == "held_out":
            p["repeat_of_calibration_config"] = p["plan_key"] in seen
    summary = {}
    subsets = {
        "calibration": lambda p: p["set"] == "calibration",
        "held_out": lambda p: p["set"] == "held_out",
        "held_out_new_configs": lambda p: p["set"] == "held_out" and not p["repeat_of_calibration_config"],
    }
    for role, chosen in subsets.items():
        errors = [abs(p["error"]) for p in points if chosen(p)]
        summary[role] = {
            "points": len(errors),
            "max_abs_error": round(max(errors), 4) if errors else None,
            "mean_abs_error": round(sum(errors) / len(errors), 4) if errors else None,
        }
    return {
        "schema": 1,
        "command": "python benchmarks/perf/estimator_accuracy.py",
        "tolerance": {"calibration": CALIBRATION_TOLERANCE, "held_out": HELD_OUT_TOLERANCE},
        "summary": summary,
        "points": points,
        "notes": [
            "error = (estimate - measured) / measured; estimates from voicetune.train.vram as committed "
            "with this file, from each run's own recorded config.",
            "calibration = what vram.py was written and tuned against (all measurements committed before "
            "2026-12-02); held_out = runs it never saw before its estimate was fixed.",
            "held_out_new_configs leaves out held-out runs whose memory-relevant plan equals a "
            "calibration run's (arms a and b repeat earlier configs: new measurements, not new cases).",
            "load points: only runs whose loading peak was read before Axolotl's reset of torch's "
            "counters (arm a, and every run since the benchmark folds peaks per phase).",
        ],
    }


def render(results: dict[str, Any]) -> str:
    lines = [
        "# VRAM estimator accuracy",
        "",
        f"Written by `{results['command']}` from the committed results files. Tolerance stated in the "
        f"README: held-out within {100 * results['tolerance']['held_out']:.0f}% "
        "(asserted by tests/test_throughput.py).",
        "",
        "| set | points | max abs error | mean abs error |",
        "|---|---|---|---|",
    ]

    def fmt(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:.1f}%"

    for role, s in results["summary"].items():
        lines.append(f"| {role} | {s['points']} | {fmt(s['max_abs_error'])} | {fmt(s['mean_abs_error'])} |")
    lines += [
        "",
        "| set | source | model | run | phase | seq | mb | cap GiB | measured GiB | estimate GiB | error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in results["points"]:
        role = p["set"] + (" (repeat)" if p.get("repeat_of_calibration_config") else "")
        lines.append(
            f"| {role} | {p['source']} | {p['model']} | {p['label']} | {p['phase']} | "
            f"{p.get('sequence_len') or '—'} | {p.get('micro_batch') or '—'} | "
            f"{p.get('allocator_cap_gib') or '—'} | {p['measured_gib']:.2f} | "
            f"{p['estimate_gib']:.2f} | {100 * p['error']:+.1f}% |"
        )
    lines += ["", "## Notes", ""] + [f"- {n}" for n in results["notes"]] + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed file is stale")
    args = parser.parse_args(argv)
    results = collect()
    if args.check:
        committed = json.loads(OUT_JSON.read_text(encoding="utf-8")) if OUT_JSON.is_file() else None
        if committed != results:
            print(f"{OUT_JSON} is stale: run python benchmarks/perf/estimator_accuracy.py", file=sys.stderr)
            return 1
        return 0
    write_json_atomic(OUT_JSON, results)
    write_text_atomic(OUT_MD, render(results))
    print(f"wrote {OUT_JSON} and {OUT_MD}")
    for role, s in results["summary"].items():
        print(f"{role}: {s}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
