"""The one place that decides which torch device and precision a model runs on."""
from __future__ import annotations

from ..errors import InvalidInputError, option


def resolve_device(requested: str | None = None) -> str:
    """`None`/"auto" picks CUDA when torch sees one, else CPU; anything else is checked."""
    import torch

    if requested in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInputError(
            f"{option('device', requested)} was asked for, but torch sees no CUDA GPU; use {option('device', 'cpu')}"
        )
    try:
        torch.device(requested)
    except RuntimeError as exc:
        raise InvalidInputError(
            f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N"
        ) from exc
    return requested


def precision_for(device: str) -> str:
    """fp16 halves memory and doubles throughput on GPUs; CPUs are faster in fp32."""
    return "fp16" if device.startswith("cuda") else "fp32"
