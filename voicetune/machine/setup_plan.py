"""`voicetune setup-plan [STEP]`: print what setup/ will do on this machine, and why.

The numbered setup scripts call this with `--shell` and eval the KEY='value' lines (values are quoted
with shlex.quote), so every decision is made here, in tested Python, and the shell only executes it.
Standard library only: runs as `PYTHONPATH=$ROOT python3 -m voicetune setup-plan` before the venv exists.

Steps: python (step 0), torch (1), check-torch (1, after install: exit 1 when the kernels do not cover
the card), axolotl (2), stack (3), record (3: write setup/installed.json), all (default: the whole plan).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from voicetune.machine import plan as P
from voicetune.machine.gpu import Readings, read_machine
from voicetune.machine.probe import PythonInfo, probe_python

STEPS = ("all", "python", "torch", "check-torch", "axolotl", "stack", "record")
ROOT = Path(__file__).resolve().parents[2]


def venv_dir(root: Path = ROOT) -> Path:
    return Path(os.environ.get("VOICETUNE_VENV") or root / ".venv")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "step", nargs="?", default="all", choices=STEPS, help="which part of the plan (default: all)"
    )
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--shell", action="store_true", help="KEY='value' lines for setup/*.sh to eval")
    out.add_argument("--json", action="store_true", help="the plan as JSON")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="plan each step as the venv will be after the steps before it (the plan never installs)",
    )
    parser.add_argument("--python", help="interpreter to plan for (default: the venv's, else python3)")
    parser.add_argument("--attention", choices=("flash-attn", "sdpa"), help="record: what step 3 ended with")
    parser.add_argument(
        "--no-network", action="store_true", help="do not check whether package indexes answer"
    )


def _reachable(url: str, timeout: float = 3.0) -> bool:
    host = url.split("://", 1)[-1].split("/", 1)[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _pyproject_sha(root: Path) -> str:
    path = root / "pyproject.toml"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else ""


def declared_dependencies(root: Path) -> list[str]:
    """Names of pyproject.toml's dependencies plus the [demo] extra (what `-e .[demo]` installs)."""
    try:
        import tomllib

        project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8")).get("project", {})
    except (ImportError, OSError, ValueError):
        return []
    specs = list(project.get("dependencies", [])) + list(
        project.get("optional-dependencies", {}).get("demo", [])
    )
    names = []
    for spec in specs:
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._\-]*)", spec)
        if match:
            names.append(match.group(1))
    return names


def installed_json_path(root: Path = ROOT) -> Path:
    return root / "setup" / "installed.json"


def _recorded(root: Path) -> dict[str, Any]:
    """setup/installed.json, when it describes the venv in use (else {})."""
    try:
        data = json.loads(installed_json_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and data.get("venv") == str(venv_dir(root)) else {}


def _probe(args: argparse.Namespace, import_torch: bool) -> tuple[PythonInfo, bool]:
    """(info, venv_exists). Without a venv: the base interpreter's version and no packages."""
    venv_python = venv_dir() / "bin" / "python"
    python = args.python or (str(venv_python) if venv_python.exists() else None)
    if python:
        info = probe_python(python, import_torch=import_torch)
        if info is not None:
            return info, True
    base = os.environ.get("VOICETUNE_PYTHON") or sys.executable
    info = probe_python(base, import_torch=False)
    version = info.version if info else tuple(sys.version_info[:3])
    return PythonInfo(version=version, executable=base), False  # type: ignore[arg-type]


def _emit(values: dict[str, Any]) -> None:
    for key, value in values.items():
        if isinstance(value, bool):
            value = "1" if value else "0"
        elif isinstance(value, list):
            value = "\n".join(str(v) for v in value)
        elif value is None:
            value = ""
        print(f"{key}={shlex.quote(str(value))}")


def _torch_values(tp: P.TorchPlan, check_index: bool) -> dict[str, Any]:
    url = os.environ.get("VOICETUNE_TORCH_INDEX_URL") or (tp.build.index_url if tp.build else "")
    mode = "extra" if tp.build and tp.build.cuda is None else "index"
    notes = list(tp.notes)
    if url and check_index and tp.status == "install" and not _reachable(url):
        if mode == "extra":
            # The +cpu pin cannot resolve to PyPI's CUDA wheel, so pip's own sources are safe to try.
            notes.append(f"{url} does not answer: using pip's configured sources")
            url = ""
        else:
            notes.append(
                f"{url} does not answer: the install will fail (set VOICETUNE_TORCH_INDEX_URL to a mirror)"
            )
    return {
        "TORCH_STATUS": tp.status,
        "TORCH_REASON": tp.reason,
        "TORCH_SPEC": tp.build.spec if tp.build else "",
        "TORCH_INDEX_URL": url,
        "TORCH_INDEX_MODE": mode,
        "TORCH_INSTALLED": tp.installed,
        "TORCH_NOTES": notes,
        "TORCH_FORCE": tp.force_reinstall,
    }


def _stack_values(fa: P.FlashAttnPlan, items: list[P.StackItem]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "FA_STATUS": fa.status,
        "FA_REASON": fa.reason,
        "FA_VERSION": fa.version,
        "FA_INSTALLED": fa.installed,
        "FA_WHEEL": fa.wheel,
        "FA_WHEEL_URL": fa.wheel_url,
        "FA_BUILD": fa.build,
        "FA_MAX_JOBS": fa.max_jobs,
        "FA_CUDA_ARCHS": fa.cuda_archs,
        "FA_NOTES": fa.notes,
        "STACK_ITEMS": " ".join(i.name for i in items),
    }
    for item in items:
        key = "ITEM_" + item.name.upper().replace("-", "_")
        values[f"{key}_STATUS"] = item.status
        values[f"{key}_SPEC"] = item.spec
        values[f"{key}_REASON"] = item.reason
    return values


def _print_human(title: str, status: str, reason: str, notes: list[str] | None = None) -> None:
    print(f"{title:<16} {status:<8} {reason}")
    for note in notes or []:
        print(f"{'':<16} {'':<8} note: {note}")


def _record(root: Path, readings: Readings, info: PythonInfo, attention: str | None) -> bool:
    """Write setup/installed.json when what it says changed; True when written."""
    path = installed_json_path(root)
    old = _recorded(root)
    data = {
        "written_by": "setup/3_install_training_stack.sh",
        "python": ".".join(map(str, info.version)),
        "venv": str(venv_dir(root)),
        "packages": dict(sorted(info.packages.items())),
        "torch_cuda": ".".join(map(str, info.torch_cuda)) if info.torch_cuda else None,
        "torch_arch_list": list(info.torch_arch_list or []),
        "attention": attention or old.get("attention") or ("sdpa" if not readings.has_gpu else None),
        "gpus": [{"name": g.name, "sm": g.sm, "vram_gib": g.vram_gib} for g in readings.gpus],
        "driver": readings.driver_version,
        "wsl": readings.wsl,
        "pyproject_sha256": _pyproject_sha(root),
    }
    if {k: v for k, v in old.items() if k != "recorded_at"} == data:
        return False
    import datetime as _dt

    data["recorded_at"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return True


def run(args: argparse.Namespace) -> int:
    step: str = args.step
    root = ROOT
    force_cpu = os.environ.get("VOICETUNE_CPU_ONLY", "") not in ("", "0")
    want = os.environ.get("VOICETUNE_TORCH_VERSION") or None
    readings = read_machine()
    # Importing torch costs seconds; only a GPU decision needs its CUDA version, kernels and C++ ABI
    # (on a CPU box the installed version, read from metadata, is enough). check-torch always imports.
    import_torch = step == "check-torch" or (readings.has_gpu and step != "python")
    info, venv_exists = _probe(args, import_torch=import_torch)
    shell, as_json = args.shell, args.json

    if step == "python":
        pp = P.plan_python(info.version)
        if shell:
            _emit({"PY_STATUS": pp.status, "PY_VERSION": pp.python, "PY_MESSAGE": pp.message})
        elif as_json:
            print(json.dumps({"python": pp.__dict__}, indent=2))
        else:
            _print_human("python", pp.status, pp.message)
        return 0 if pp.status != "blocked" else 1

    if step == "check-torch":
        ok, message = P.check_torch_covers(info, readings)
        print(("ok: " if ok else "error: ") + message)
        return 0 if ok else 1

    if step == "record":
        written = _record(root, readings, info, args.attention)
        print(f"{'wrote' if written else 'unchanged:'} {installed_json_path(root)}")
        return 0

    tp = P.plan_torch(readings, info, want=want, force_cpu=force_cpu)
    # The whole plan and any --dry-run look ahead: steps 2-3 as they will see the venv after step 1.
    look_ahead = step == "all" or args.dry_run
    ahead = P.after_torch(info, tp) if look_ahead else info
    ap = P.plan_axolotl(ahead)
    after_step2 = P.after_axolotl(ahead, ap) if look_ahead else ahead
    eff_readings = replace(readings, gpus=()) if force_cpu else readings
    fa = P.plan_flash_attn(eff_readings, after_step2, nvcc=readings.nvcc)
    items = P.plan_stack(
        eff_readings,
        after_step2,
        str(root),
        _pyproject_sha(root),
        _recorded(root).get("pyproject_sha256"),
        declared_dependencies(root),
    )

    if shell:
        if step == "torch":
            _emit(_torch_values(tp, check_index=not args.no_network))
        elif step == "axolotl":
            _emit(
                {
                    "AXO_STATUS": ap.status,
                    "AXO_REASON": ap.reason,
                    "AXO_VERSION": ap.version,
                    "AXO_INSTALLED": ap.installed,
                    "AXO_NOTES": ap.notes,
                    "AXO_TORCH": ahead.torch,
                    "AXO_CONSTRAINTS": ap.constraints,
                }
            )
        elif step == "stack":
            _emit(_stack_values(fa, items))
        else:
            _emit({**_torch_values(tp, False), **_stack_values(fa, items), "AXO_STATUS": ap.status})
        return 0

    if as_json:
        print(
            json.dumps(
                {
                    "machine": readings.to_json(),
                    "python": info.to_json(),
                    "venv": {"path": str(venv_dir()), "exists": venv_exists},
                    "torch": tp.to_json(),
                    "axolotl": ap.to_json(),
                    "flash_attn": fa.to_json(),
                    "stack": [i.to_json() for i in items],
                },
                indent=2,
            )
        )
        return 0

    # Human-readable: the whole plan, one line a decision.
    if readings.has_gpu:
        for g in readings.gpus:
            cc = f"{g.compute_capability[0]}.{g.compute_capability[1]}" if g.compute_capability else "?"
            print(f"GPU {g.index}: {g.name}, compute capability {cc} ({g.sm}), {g.vram_gib} GiB")
        cuda = readings.cuda_driver
        print(
            f"driver {readings.driver_version} (runs CUDA up to {cuda[0]}.{cuda[1]})"
            if cuda
            else f"driver {readings.driver_version}"
        )
    else:
        print("GPU: no NVIDIA GPU" + (f" (nvidia-smi: {readings.error})" if readings.error else ""))
    mem = (readings.mem_total_kib or 0) / 1024 / 1024
    print(f"host: {'WSL2' if readings.wsl else 'Linux'}, {readings.cpu_count} CPUs, {mem:.0f} GiB RAM")
    print(f"python: {'.'.join(map(str, info.version))} ({P.describe_python(info.minor)})")
    if args.python:
        print(f"interpreter: {info.executable or args.python} (--python)")
    else:
        print(f"venv: {venv_dir()} ({'exists' if venv_exists else 'not created yet'})")
    print()
    _print_human("1 torch", tp.status, tp.reason, tp.notes)
    if tp.build and tp.status == "install":
        idx = "--extra-index-url" if tp.build.cuda is None else "--index-url"
        print(f"{'':<25} pip install {tp.build.spec} {idx} {tp.build.index_url}")
    _print_human("2 axolotl", ap.status, ap.reason, ap.notes)
    _print_human("3 flash-attn", fa.status, fa.reason, fa.notes)
    if fa.status == "install":
        print(f"{'':<25} try wheel {fa.wheel_url}")
        print(
            f"{'':<25} else "
            + (
                f"build: MAX_JOBS={fa.max_jobs} FLASH_ATTN_CUDA_ARCHS={fa.cuda_archs}"
                if fa.build
                else "no build"
            )
            + "; on failure: PyTorch SDPA"
        )
    for item in items:
        _print_human(f"3 {item.name}", item.status, item.reason)
    if step == "all" and not args.dry_run:
        print("\n(this is the plan only; the setup/*.sh scripts carry it out)")
    return 0
