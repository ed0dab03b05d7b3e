"""run_demo.sh writes each step's seconds, the command and the machine to timings.json / timings.md
beside the report, so the README's timing table can come from a file a script wrote. The writer is
run here on its own (the whole demo is tests/test_e2e_demo.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _writer() -> str:
    text = (REPO / "run_demo.sh").read_text(encoding="utf-8")
    return text[text.index("json_string() {") : text.index("run_setup() {")]


def test_timings_are_valid_json_with_every_step_and_the_command(tmp_path: Path) -> None:
    home = tmp_path / "demo home"
    script = tmp_path / "harness.sh"
    script.write_text(
        "set -euo pipefail\n"
        f"HOME_DIR='{home}'\n"
        "DEMO_COMMAND='./run_demo.sh --run demo-cpu --input \"my notes\\été\"'\n"
        + _writer()
        + 'STEP_NAMES=("base model" "prepare" "train")\n'
        "STEP_TIMES=(38 13 595)\n"
        'STEP_ARTIFACTS=("$HOME_DIR/models/base" "$HOME_DIR/data/processed/d\\"é mo"\n'
        '    "$HOME_DIR/checkpoints/x")\n'
        'write_timings "$HOME_DIR/benchmarks/results/demo-cpu"\n',
        encoding="utf-8",
    )
    subprocess.run(["bash", str(script)], check=True, capture_output=True, text=True, timeout=60)
    out = home / "benchmarks" / "results" / "demo-cpu"
    timings = json.loads((out / "timings.json").read_text(encoding="utf-8"))
    assert timings["command"] == './run_demo.sh --run demo-cpu --input "my notes\\été"'
    assert [(s["step"], s["seconds"], s["artifact"]) for s in timings["steps"]] == [
        ("base model", 38, "models/base"),
        ("prepare", 13, 'data/processed/d"é mo'),
        ("train", 595, "checkpoints/x"),
    ]
    assert timings["total_seconds"] == 646
    assert timings["machine"]["cpus"] >= 1 and timings["finished"].endswith("Z")
    table = (out / "timings.md").read_text(encoding="utf-8")
    assert "| train | 595 | `checkpoints/x` |" in table and "| total | 646 | |" in table
    assert not list(out.glob("*.tmp"))
