"""Readings of the machine: NVIDIA GPUs (through `nvidia-smi`), WSL2, RAM and CPU count.

Standard library only: `setup/1_install_pytorch.sh` runs this with the system python before the venv
has anything in it. Parsing is split from reading so that tests run on `nvidia-smi` outputs written by
hand in the real formats of each driver generation (tests/fixtures/nvidia-smi/<case>/, not captured from
those machines: its README says how to add a real capture). `$VOICETUNE_FAKE_GPU_DIR` points the
readers at such a folder instead of the real machine: a fake for a GPU that cannot exist on a CPU box,
named as one.

A fixture folder holds `query.csv` (the output of QUERY_ARGS), `nvidia-smi.txt` (plain `nvidia-smi`,
for the "CUDA Version" in its header) and optionally `osrelease` (/proc/sys/kernel/osrelease),
`meminfo` (/proc/meminfo) and `nproc` (a number). A missing `query.csv` means "no nvidia-smi".
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAKE_DIR_ENV = "VOICETUNE_FAKE_GPU_DIR"
QUERY_FIELDS = "index,name,compute_cap,memory.total,memory.used,driver_version"
QUERY_ARGS = ("--query-gpu=" + QUERY_FIELDS, "--format=csv,noheader,nounits")
# Drivers older than ~510 do not know the compute_cap field; we ask again without it.
QUERY_FIELDS_OLD = "index,name,memory.total,memory.used,driver_version"
# WSL2 ships nvidia-smi from the Windows driver here, and it is not always on PATH.
WSL_NVIDIA_SMI = Path("/usr/lib/wsl/lib/nvidia-smi")

# Compute capability by product name, only for drivers too old to report it (first match wins).
_CC_BY_NAME: tuple[tuple[str, tuple[int, int]], ...] = (
    ("RTX PRO 6000 Blackwell", (12, 0)),
    ("RTX 50", (12, 0)),
    ("B200", (10, 0)),
    ("H200", (9, 0)),
    ("H100", (9, 0)),
    ("L40", (8, 9)),
    ("L4", (8, 9)),
    ("RTX 40", (8, 9)),
    ("RTX 6000 Ada", (8, 9)),
    ("A100", (8, 0)),
    ("A30", (8, 0)),
    ("RTX 30", (8, 6)),
    ("A6000", (8, 6)),
    ("A40", (8, 6)),
    ("A10", (8, 6)),
    ("T4", (7, 5)),
    ("RTX 20", (7, 5)),
    ("V100", (7, 0)),
    ("GTX 16", (7, 5)),
    ("GTX 10", (6, 1)),
)


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_capability: tuple[int, int] | None
    memory_total_mib: int
    memory_used_mib: int | None

    @property
    def sm(self) -> str:
        """'sm_120' for compute capability 12.0; '' when unknown."""
        cc = self.compute_capability
        return f"sm_{cc[0]}{cc[1]}" if cc else ""

    @property
    def vram_gib(self) -> float:
        return round(self.memory_total_mib / 1024, 1)


@dataclass(frozen=True)
class Readings:
    """Everything the install plan depends on about the machine (not about Python)."""

    gpus: tuple[Gpu, ...] = ()
    driver_version: str | None = None
    cuda_driver: tuple[int, int] | None = None  # the newest CUDA the driver supports
    wsl: bool = False
    mem_total_kib: int | None = None
    mem_available_kib: int | None = None
    cpu_count: int = 1
    nvidia_smi: str | None = None  # path used, or None when there is none
    nvcc: tuple[int, int] | None = None  # CUDA toolkit on PATH/CUDA_HOME (for source builds)
    error: str | None = None  # nvidia-smi is there but failed: its message

    @property
    def has_gpu(self) -> bool:
        return bool(self.gpus)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["gpus"] = [{**dataclasses.asdict(g), "sm": g.sm, "vram_gib": g.vram_gib} for g in self.gpus]
        return data


def _int_or_none(text: str) -> int | None:
    text = text.strip()
    return int(float(text)) if re.fullmatch(r"\d+(\.\d+)?", text) else None


def parse_compute_cap(text: str) -> tuple[int, int] | None:
    match = re.fullmatch(r"\s*(\d+)\.(\d+)\s*", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def compute_cap_from_name(name: str) -> tuple[int, int] | None:
    for needle, cc in _CC_BY_NAME:
        if needle.lower() in name.lower():
            return cc
    return None


def parse_query_csv(text: str, with_compute_cap: bool = True) -> tuple[list[Gpu], str | None]:
    """Parse `nvidia-smi --query-gpu=QUERY_FIELDS --format=csv,noheader,nounits` -> (gpus, driver)."""
    gpus: list[Gpu] = []
    driver: str | None = None
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if with_compute_cap and len(fields) == 6:
            index, name, cc_text, total, used, driver = fields
            cc = parse_compute_cap(cc_text) or compute_cap_from_name(name)
        elif not with_compute_cap and len(fields) == 5:
            index, name, total, used, driver = fields
            cc = compute_cap_from_name(name)
        else:
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        gpus.append(
            Gpu(
                index=int(index),
                name=name,
                compute_capability=cc,
                memory_total_mib=_int_or_none(total) or 0,
                memory_used_mib=_int_or_none(used),
            )
        )
    return gpus, driver


def parse_cuda_version(nvidia_smi_text: str) -> tuple[int, int] | None:
    """The 'CUDA Version: 12.8' in plain `nvidia-smi`'s header: the newest CUDA the driver runs."""
    match = re.search(r"CUDA Version\s*:\s*(\d+)\.(\d+)", nvidia_smi_text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def parse_driver_from_header(nvidia_smi_text: str) -> str | None:
    match = re.search(r"Driver Version\s*:\s*([\d.]+)", nvidia_smi_text)
    return match.group(1) if match else None


def is_wsl(osrelease: str, env: dict[str, str] | None = None) -> bool:
    """WSL2's kernel names itself 'microsoft-standard-WSL2'; WSL sets WSL_DISTRO_NAME too."""
    env = os.environ if env is None else env  # type: ignore[assignment]
    return "microsoft" in osrelease.lower() or "wsl" in osrelease.lower() or bool(env.get("WSL_DISTRO_NAME"))


def parse_meminfo(text: str) -> tuple[int | None, int | None]:
    """(MemTotal, MemAvailable) in KiB from /proc/meminfo."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"(\w+):\s+(\d+)", line)
        if match:
            values[match.group(1)] = int(match.group(2))
    return values.get("MemTotal"), values.get("MemAvailable")


def parse_nvcc_version(text: str) -> tuple[int, int] | None:
    """'Cuda compilation tools, release 12.8, V12.8.93' -> (12, 8)."""
    match = re.search(r"release (\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def find_nvcc() -> str | None:
    for candidate in (
        shutil.which("nvcc"),
        os.path.join(os.environ.get("CUDA_HOME", "/nonexistent"), "bin", "nvcc"),
        "/usr/local/cuda/bin/nvcc",
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_nvidia_smi() -> str | None:
    found = shutil.which("nvidia-smi")
    if found:
        return found
    return str(WSL_NVIDIA_SMI) if WSL_NVIDIA_SMI.exists() else None


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _run(cmd: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return proc.returncode, proc.stdout + proc.stderr


def readings_from_texts(
    query: str | None,
    header: str,
    osrelease: str = "",
    meminfo: str = "",
    cpu_count: int = 1,
    nvidia_smi: str | None = "nvidia-smi",
    query_old: str | None = None,
    env: dict[str, str] | None = None,
    nvcc: str = "",
) -> Readings:
    """Build Readings from the texts of nvidia-smi and /proc; `query` None means nvidia-smi is absent."""
    mem_total, mem_available = parse_meminfo(meminfo)
    base = Readings(
        wsl=is_wsl(osrelease, env),
        mem_total_kib=mem_total,
        mem_available_kib=mem_available,
        cpu_count=max(1, cpu_count),
        nvcc=parse_nvcc_version(nvcc),
    )
    if query is None:
        return base
    error: str | None = None
    gpus: list[Gpu] = []
    driver: str | None = None
    try:
        if "not a valid field" in query.lower() and query_old is not None:
            gpus, driver = parse_query_csv(query_old, with_compute_cap=False)
        else:
            gpus, driver = parse_query_csv(query)
    except ValueError:
        # nvidia-smi exists but cannot talk to the driver ("NVIDIA-SMI has failed ...").
        error = query.strip().splitlines()[0] if query.strip() else "nvidia-smi printed nothing"
    return dataclasses.replace(
        base,
        gpus=tuple(gpus),
        driver_version=driver or parse_driver_from_header(header),
        cuda_driver=parse_cuda_version(header),
        nvidia_smi=nvidia_smi,
        error=error,
    )


def readings_from_dir(folder: Path, env: dict[str, str] | None = None) -> Readings:
    """Readings from a fixture folder of such texts (see the module docstring)."""
    query_path = folder / "query.csv"
    nproc_text = _read_text(folder / "nproc").strip()
    return readings_from_texts(
        query=_read_text(query_path) if query_path.exists() else None,
        header=_read_text(folder / "nvidia-smi.txt"),
        osrelease=_read_text(folder / "osrelease"),
        meminfo=_read_text(folder / "meminfo"),
        cpu_count=int(nproc_text) if nproc_text.isdigit() else 8,
        nvidia_smi=f"fixture:{folder.name}" if query_path.exists() else None,
        query_old=_read_text(folder / "query-old.csv") or None,
        env=env if env is not None else {},
        nvcc=_read_text(folder / "nvcc.txt"),
    )


def read_machine() -> Readings:
    """Read this machine (or the fake folder named by $VOICETUNE_FAKE_GPU_DIR)."""
    fake = os.environ.get(FAKE_DIR_ENV)
    if fake:
        return readings_from_dir(Path(fake))
    smi = find_nvidia_smi()
    query: str | None = None
    query_old: str | None = None
    header = ""
    if smi:
        rc, query = _run([smi, *QUERY_ARGS])
        if rc != 0 and "not a valid field" in query.lower():
            _, query_old = _run([smi, "--query-gpu=" + QUERY_FIELDS_OLD, "--format=csv,noheader,nounits"])
        _, header = _run([smi])
    nvcc = find_nvcc()
    return readings_from_texts(
        query=query,
        header=header,
        osrelease=_read_text(Path("/proc/sys/kernel/osrelease")),
        meminfo=_read_text(Path("/proc/meminfo")),
        cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        nvidia_smi=smi,
        query_old=query_old,
        nvcc=_run([nvcc, "--version"])[1] if nvcc and smi else "",
    )
