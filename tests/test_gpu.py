"""voicetune.machine.gpu: parsing nvidia-smi and host readings, on hand-written outputs (no GPU needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from voicetune.machine import gpu

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"


def load(case: str) -> gpu.Readings:
    return gpu.readings_from_dir(FIXTURES / case)


@pytest.mark.parametrize(
    ("case", "name", "cc", "vram_gib", "driver", "cuda", "wsl"),
    [
        ("rtx5090-linux", "NVIDIA GeForce RTX 5090", (12, 0), 31.8, "580.95.05", (13, 0), False),
        ("rtx5090-wsl", "NVIDIA GeForce RTX 5090", (12, 0), 31.8, "576.88", (12, 9), True),
        ("rtx5090-wsl-old-driver", "NVIDIA GeForce RTX 5090", (12, 0), 31.8, "566.36", (12, 7), True),
        ("rtx4090", "NVIDIA GeForce RTX 4090", (8, 9), 24.0, "550.144.03", (12, 4), False),
        ("rtx3060-12gb", "NVIDIA GeForce RTX 3060", (8, 6), 12.0, "535.183.01", (12, 2), False),
        ("a100-80gb", "NVIDIA A100-SXM4-80GB", (8, 0), 80.0, "570.172.08", (12, 8), False),
        ("h100-cuda13", "NVIDIA H100 80GB HBM3", (9, 0), 79.6, "580.95.05", (13, 0), False),
    ],
)
def test_fixture_readings(case, name, cc, vram_gib, driver, cuda, wsl):
    r = load(case)
    assert r.has_gpu and r.error is None
    (g,) = r.gpus
    assert (g.name, g.compute_capability, g.vram_gib) == (name, cc, vram_gib)
    assert g.sm == f"sm_{cc[0]}{cc[1]}"
    assert (r.driver_version, r.cuda_driver, r.wsl) == (driver, cuda, wsl)
    assert r.mem_total_kib and r.mem_available_kib and r.mem_available_kib <= r.mem_total_kib


def test_old_driver_without_compute_cap_field_falls_back_to_the_name_table():
    r = load("rtx3060-old-driver")
    (g,) = r.gpus
    assert g.compute_capability == (8, 6)  # from "RTX 30" since driver 470 rejects compute_cap
    assert r.driver_version == "470.256.02" and r.cuda_driver == (11, 4)


def test_no_gpu_and_failing_driver():
    none = load("no-gpu")
    assert not none.has_gpu and none.nvidia_smi is None and none.error is None
    broken = load("driver-not-loaded")
    assert not broken.has_gpu
    assert broken.error and "couldn't communicate with the NVIDIA driver" in broken.error


def test_parse_query_csv_multi_gpu_and_garbage():
    text = (
        "0, NVIDIA H100 80GB HBM3, 9.0, 81559, 1, 580.95.05\n"
        "1, NVIDIA H100 80GB HBM3, 9.0, 81559, 0, 580.95.05\n"
    )
    gpus, driver = gpu.parse_query_csv(text)
    assert [g.index for g in gpus] == [0, 1] and driver == "580.95.05"
    with pytest.raises(ValueError):
        gpu.parse_query_csv("this is not csv at all")
    # "[N/A]" memory (some vGPU setups) does not crash the parser
    (g,), _ = gpu.parse_query_csv("0, GRID A100D-4C, 8.0, [N/A], [N/A], 550.54.14")
    assert g.memory_total_mib == 0 and g.memory_used_mib is None


def test_small_parsers():
    assert gpu.parse_cuda_version(
        "| NVIDIA-SMI 580.95.05   Driver Version: 580.95.05   CUDA Version: 13.0 |"
    ) == (13, 0)
    assert gpu.parse_cuda_version("no header") is None
    assert gpu.parse_nvcc_version("Cuda compilation tools, release 12.8, V12.8.93") == (12, 8)
    assert gpu.is_wsl("5.15.167.4-microsoft-standard-WSL2", env={})
    assert not gpu.is_wsl("6.8.0-85-generic", env={})
    assert gpu.is_wsl("6.8.0-85-generic", env={"WSL_DISTRO_NAME": "Ubuntu"})
    assert gpu.parse_meminfo("MemTotal: 100 kB\nMemAvailable:  40 kB\n") == (100, 40)
    assert gpu.compute_cap_from_name("NVIDIA GeForce RTX 5070 Ti") == (12, 0)
    assert gpu.compute_cap_from_name("Some Unknown Card") is None


def test_fake_dir_env_redirects_read_machine(monkeypatch):
    monkeypatch.setenv(gpu.FAKE_DIR_ENV, str(FIXTURES / "rtx5090-wsl"))
    r = gpu.read_machine()
    assert r.gpus[0].sm == "sm_120" and r.wsl and r.cpu_count == 32


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_this_cpu_box_reads_as_no_gpu(monkeypatch):
    monkeypatch.delenv(gpu.FAKE_DIR_ENV, raising=False)
    r = gpu.read_machine()
    assert not r.has_gpu and r.error is None
    assert r.cpu_count >= 1 and r.mem_total_kib and r.mem_total_kib > 0
    assert r.to_json()["gpus"] == []
