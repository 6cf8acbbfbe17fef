"""What the training job runs on: device, precision, compile, optimizer kernel, and the peak FLOPs behind MFU.

The GPU path is the one that matters for throughput (goal: MFU >= 40% for GPT-2 124M on an H100, the
figure llm.c reaches): bf16 autocast with fp32 master weights, TF32 for the remaining fp32 matmuls, flash
attention through SDPA (in the model), ``torch.compile`` and fused AdamW. On CPU (tests, laptops) the same
code runs in fp32 without compile; MFU is reported only where a peak is known (a table of GPUs, or
``--peak-tflops``).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

# Dense (no sparsity) tensor-core peaks in TFLOP/s, from NVIDIA's datasheets (llm.c's llmc/mfu.h derives
# the same figures from tensor-core counts and boost clocks). bf16 where the GPU has it; Volta and Turing
# have no bf16, so their entry is the fp16 peak, which is what they run (fp16 autocast + loss scaling).
# Order matters: the first pattern that matches the device name wins ("H100 PCIe" before "H100").
PEAK_TFLOPS: tuple[tuple[str, str, float], ...] = (
    (r"GH200", "GH200", 989.4),
    (r"H200", "H200", 989.4),
    (r"H100.*PCIe", "H100 PCIe", 756.0),
    (r"H100.*NVL", "H100 NVL", 835.0),
    (r"H100|H800", "H100 SXM", 989.4),
    (r"B200", "B200", 2250.0),
    (r"A100|A800", "A100", 312.0),
    (r"A10G", "A10G", 70.0),
    (r"\bA10\b", "A10", 125.0),
    (r"L40S", "L40S", 362.1),
    (r"\bL40\b", "L40", 181.0),
    (r"\bL4\b", "L4", 121.0),
    (r"RTX 6000 Ada|RTX A6000 ADA", "RTX 6000 Ada", 364.2),
    (r"RTX A6000", "RTX A6000", 154.8),
    (r"RTX 4090", "RTX 4090", 165.2),
    (r"RTX 3090", "RTX 3090", 71.0),
    (r"V100", "V100 (fp16)", 125.0),
    (r"\bT4\b", "T4 (fp16)", 65.0),
)


def lookup_peak_tflops(device_name: str) -> tuple[str, float] | None:
    """(table entry, TFLOP/s) for a CUDA device name such as 'NVIDIA H100 80GB HBM3', or None if unknown."""
    for pattern, label, tflops in PEAK_TFLOPS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return label, tflops
    return None


def select_device(requested: str = "auto") -> torch.device:
    """``auto``: cuda > mps > cpu. An explicit device that is not available is an error, not a fallback."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {requested!r} requested but MPS is not available")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    return f"CPU ({torch.get_num_threads()} threads)"


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA GPUs that have it (Ampere+), fp16 on older ones, none (fp32) on CPU and MPS."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def fused_adamw_available(device: torch.device) -> bool:
    """Whether ``torch.optim.AdamW(fused=True)`` accepts parameters on ``device`` (CUDA; CPU since torch 2.4)."""
    try:
        param = torch.nn.Parameter(torch.zeros(1, device=device))
        torch.optim.AdamW([param], fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def compile_supported(device: torch.device) -> bool:
    """torch.compile is worth it (and tested) on CUDA; on CPU it needs a C++ toolchain and minutes to warm up."""
    return device.type == "cuda" and hasattr(torch, "compile")


@dataclass(frozen=True)
class HardwarePlan:
    """Everything the job decided about the hardware; printed by ``--dry-run`` and stored in the report."""

    device: str
    device_name: str
    amp_dtype: str | None
    tf32: bool
    compile: bool
    fused_adamw: bool
    peak_tflops: float | None
    peak_source: str | None

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def torch_amp_dtype(self) -> torch.dtype | None:
        return {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(self.amp_dtype or "")

    @property
    def needs_grad_scaler(self) -> bool:
        return self.amp_dtype == "float16"


def plan_hardware(device: str = "auto", compile: bool | None = None, peak_tflops: float | None = None) -> HardwarePlan:
    """Decide device, precision, compile and optimizer kernel; find the peak FLOPs for MFU.

    ``compile=None`` means: on CUDA yes, elsewhere no. ``peak_tflops`` overrides the table (e.g. for a GPU
    the table does not know, or to state a CPU's peak); without either, MFU is reported as null.
    """
    dev = select_device(device)
    name = device_name(dev)
    amp = autocast_dtype(dev)
    use_compile = compile_supported(dev) if compile is None else bool(compile)
    if use_compile and not hasattr(torch, "compile"):
        raise ValueError("torch.compile requested but this torch has no torch.compile")
    source: str | None = None
    peak: float | None = None
    if peak_tflops is not None:
        peak, source = float(peak_tflops), "option --peak-tflops"
    elif dev.type == "cuda":
        found = lookup_peak_tflops(name)
        if found is not None:
            source, peak = f"table: {found[0]}", found[1]
        else:
            log.warning("no peak FLOPs known for %r; pass --peak-tflops to get MFU", name)
    return HardwarePlan(
        device=str(dev),
        device_name=name,
        amp_dtype=None if amp is None else str(amp).removeprefix("torch."),
        tf32=dev.type == "cuda",
        compile=use_compile,
        fused_adamw=fused_adamw_available(dev),
        peak_tflops=peak,
        peak_source=source,
    )


def configure_backends(plan: HardwarePlan) -> None:
    """Process-wide switches: TF32 matmuls and convolutions on CUDA (fp32 work outside autocast)."""
    if plan.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")


def autocast(plan: HardwarePlan) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on CUDA, a no-op elsewhere."""
    dtype = plan.torch_amp_dtype
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=plan.torch_device.type, dtype=dtype)


def make_optimizer(
    named_params: Iterable[tuple[str, torch.nn.Parameter]],
    plan: HardwarePlan,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not biases, LayerNorm gains), fused kernel when available."""
    decay, no_decay = [], []
    for _, param in named_params:
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    extra = {"fused": True} if plan.fused_adamw else {}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-8, **extra)


def mfu(flops_per_token: float, tokens_per_second: float, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilization: achieved model FLOP/s over the device's peak; None without a peak."""
    if peak_tflops is None or peak_tflops <= 0:
        return None
    return flops_per_token * tokens_per_second / (peak_tflops * 1e12)


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
