"""voicetune doctor: the real checks on this CPU box, and the GPU rows on fake readings (a GPU that cannot
exist here; torch stays the real CPU build, so the rows must say it cannot use the card)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voicetune.machine import doctor, gpu

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"


def ctx_for(case: str) -> doctor.Context:
    return doctor.Context(readings=gpu.readings_from_dir(FIXTURES / case), root=REPO)


def rows_by_name(rows: list[doctor.Row]) -> dict[str, doctor.Row]:
    return {r.name: r for r in rows}


def test_every_check_returns_a_row_with_a_known_status():
    rows = doctor.run_checks(ctx_for("no-gpu"))
    assert len(rows) == len(doctor.CHECKS)
    assert {r.status for r in rows} <= {doctor.OK, doctor.WARN, doctor.FAIL, doctor.SKIP}
    for r in rows:
        if r.status in (doctor.FAIL, doctor.WARN):
            assert r.fix, f"{r.name} fails without a fix"


def test_cpu_box_reports_no_gpu_cleanly_and_the_demo_path():
    pytest.importorskip("torch")
    rows = rows_by_name(doctor.run_checks(ctx_for("no-gpu")))
    assert rows["GPU"].status == doctor.SKIP and "no NVIDIA GPU" in rows["GPU"].detail
    for name in ("compute capability", "VRAM", "driver", "kernels for card", "bf16", "4-bit nf4 matmul"):
        assert rows[name].status == doctor.SKIP, name
    assert rows["torch"].status == doctor.OK
    assert rows["flash-attn"].status == doctor.SKIP and "SDPA" in rows["flash-attn"].detail


def test_gpu_readings_with_a_cpu_torch_fail_with_the_fix():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a real GPU")
    rows = rows_by_name(doctor.run_checks(ctx_for("rtx5090-wsl")))
    assert rows["GPU"].status == doctor.OK and "RTX 5090" in rows["GPU"].detail
    assert "12.0 (sm_120)" in rows["compute capability"].detail
    assert rows["WSL"].detail.startswith("WSL2")
    assert rows["torch"].status == doctor.FAIL and "setup/1_install_pytorch.sh" in rows["torch"].fix
    assert rows["mode"].status == doctor.FAIL


def test_blackwell_on_an_old_windows_driver():
    row = doctor.check_driver(ctx_for("rtx5090-wsl-old-driver"))
    assert row.status == doctor.FAIL and "12.8" in row.detail
    assert "Windows NVIDIA driver" in row.fix and "wsl --shutdown" in row.fix
    assert doctor.check_driver(ctx_for("h100-cuda13")).status == doctor.OK


def test_small_vram_and_a_failing_driver():
    assert doctor.check_vram(ctx_for("rtx3060-12gb")).status == doctor.OK
    broken = doctor.check_gpu(ctx_for("driver-not-loaded"))
    assert broken.status == doctor.FAIL and "couldn't communicate" in broken.detail and broken.fix


def test_a_crashing_check_becomes_a_failed_row(monkeypatch):
    def boom(ctx: doctor.Context) -> doctor.Row:
        raise RuntimeError("simulated")

    monkeypatch.setitem(doctor.CHECKS, "gpu", boom)
    (row,) = doctor.run_checks(ctx_for("no-gpu"), ["gpu"])
    assert row.status == doctor.FAIL and "RuntimeError: simulated" in row.detail


def test_cli_json_and_table_on_this_machine():
    env = {k: v for k, v in os.environ.items() if k != gpu.FAKE_DIR_ENV}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-m", "voicetune", "doctor", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    data = json.loads(out.stdout)
    names = [c["name"] for c in data["checks"]]
    assert names[0] == "GPU" and "4-bit nf4 matmul" in names and "RAM" in names
    failed = [c for c in data["checks"] if c["status"] == "fail"]
    assert out.returncode == (1 if failed else 0)
    table = subprocess.run(
        [sys.executable, "-m", "voicetune", "doctor", "--check", "disk", "--check", "ram"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert table.returncode == 0 and table.stdout.startswith("disk") and "2 checks:" in table.stdout
