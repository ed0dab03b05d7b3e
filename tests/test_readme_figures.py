"""Every figure in the README comes from a committed results file (benchmarks/check_figures.py).

The real README is checked against the results files git holds; a synthetic README and results
folder, in a git repository of their own, show what the check catches and how it reads numbers."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "check_figures.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_figures", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_figures"] = module
    spec.loader.exec_module(module)
    return module


cf = _load()


def test_every_figure_of_the_readme_is_in_a_committed_results_file() -> None:
    results = cf.Results.committed(REPO)
    findings = cf.check((REPO / "README.md").read_text(encoding="utf-8"), results)
    assert len(findings) > 20, "the README's results sections were not found"
    failed = [cf.describe(f, "README.md") for f in cf.failures(findings)]
    assert not failed, "figures no committed results file holds:\n" + "\n".join(failed)


# ------------------------------------------------------------------------------ a synthetic checkout

RESULTS = {
    "benchmarks/results/run-a/summary.json": (
        '{"tokens_per_second": 9684.31, "peak_vram_gib": 12.994, "mfu": 0.4412, "speedup": 2.8012,\n'
        ' "delta_pct": -1.46, "parity_max_diff": 6.93e-05}\n'
    ),
    "benchmarks/results/run-a/train.log": " 57%|#####     | 4/7 [00:00<00:00,  8.20it/s]\n",
    "benchmarks/results/run-a/README.md": "Notes by a person: 123.45 tokens/s, 7.77 GiB.\n",
    "benchmarks/results/run-b/table.md": (
        "| arm | tokens/s | peak GiB |\n|---|---|---|\n| c | 16,896 | 33.9 |\n| a | 8,354 | 34.4 |\n"
    ),
}


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    for name, text in RESULTS.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "benchmarks"], check=True)
    (tmp_path / "benchmarks/results/run-c").mkdir()
    (tmp_path / "benchmarks/results/run-c/summary.json").write_text('{"tokens_per_second": 5555.5}\n')
    return tmp_path  # run-c exists on disk but no commit (nor the index) holds it


def _failed(checkout: Path, markdown: str) -> list[str]:
    findings = cf.check(markdown, cf.Results.committed(checkout))
    return [f.figure.text for f in cf.failures(findings)]


def test_numbers_are_normalised_before_they_are_compared(checkout: Path) -> None:
    readme = """# x

### Measured

The profile ran at 9,684 tokens/s (2.80x plain), 44.1% MFU, 13.0 GiB peak (12.99 to the hundredth),
the estimator -1.5% off, parity 6.9e-05; 16,896 against 8,354 on one GPU (2.02x).
"""
    assert _failed(checkout, readme) == []


def test_a_figure_no_results_file_holds_fails(checkout: Path) -> None:
    readme = """### Measured

Training ran at 9,684 tokens/s and 9,685 tokens/s, 2.9x plain, 45.0% MFU, 12.98 GiB.
"""
    assert _failed(checkout, readme) == ["9,685", "2.9x", "45.0%", "12.98"]


def test_units_and_hand_written_notes_do_not_back_a_figure(checkout: Path) -> None:
    # 8.2 GiB is not a progress bar's 8.20it/s; a README.md beside the results is a person's note
    readme = "### Measured\n\nEvaluation peaked at 8.2 GiB; 123.45 tokens/s; 7.77 GiB.\n"
    assert _failed(checkout, readme) == ["8.2", "123.45", "7.77"]
    assert _failed(checkout, "### Measured\n\n8.20 steps a second.\n") == []


def test_a_block_is_checked_against_the_files_it_cites(checkout: Path) -> None:
    cited = (
        "### Measured\n\n- 33.9 GiB and 9,684 tokens/s (`benchmarks/results/run-b/`)\n- 9,684 tokens/s\n\n"
        "### More\n\n9,684 tokens/s\n"
    )
    # run-b lacks 9,684: the item that cites it fails, and so does the next item (it cites nothing,
    # so its section's citations apply); a section that cites nothing searches every results file
    findings = cf.check(cited, cf.Results.committed(checkout))
    assert [(f.figure.text, f.figure.line) for f in cf.failures(findings)] == [("9,684", 3), ("9,684", 4)]
    assert findings[-1].where == "benchmarks/results/run-a/summary.json:1"
    by_name = "### Measured\n\n33.9 GiB (`table.md`)\n"
    assert _failed(checkout, by_name) == []
    uncommitted = "### Measured\n\n5,555 tokens/s (`benchmarks/results/run-c/summary.json`)\n"
    assert _failed(checkout, uncommitted) == ["5,555"]


def test_what_is_not_a_figure(checkout: Path) -> None:
    readme = """### Measured

Axolotl 0.19 and Python 3.11 on a Llama-3.1-8B shape, 40 steps, 2 cores, `--lr 2.5e-4`,
[a link](benchmarks/results/x-1.5.md).

```
$ voicetune train --set lora_dropout=0.07
```

<!-- advise-output: --gpu rtx4090 -->
| model | tokens/s |
|---|---|
| Qwen2.5-7B | 1,234.5 |
<!-- /advise-output -->

## Your own writing, step by step

Set 0.77 and 3.33x here: a how-to section holds settings, not results.
"""
    findings = cf.check(readme, cf.Results.committed(checkout))
    assert [f.figure.text for f in findings] == []


def test_the_script_exits_nonzero_and_names_each_missing_figure(checkout: Path) -> None:
    readme = checkout / "README.md"
    readme.write_text("### What the demo showed\n\nPerplexity 38.44 -> 34.76 (9,684 tokens/s).\n")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(checkout), str(readme)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        f"{readme}:3: 38.44 (section 'What the demo showed'): in none of any results file under "
        "benchmarks/results/",
        f"{readme}:3: 34.76 (section 'What the demo showed'): in none of any results file under "
        "benchmarks/results/",
    ]
    assert lines[-1] == f"{readme}: 3 figures, 2 not found in a committed results file"
    traced = subprocess.run(
        [sys.executable, str(SCRIPT), "--root", str(checkout), "--trace", str(readme)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    assert "9,684 (section 'What the demo showed'): benchmarks/results/run-a/summary.json:1" in traced
