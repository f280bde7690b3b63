"""The one place that decides which device and precision a model runs on, and what the CPU can run."""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from ..errors import InferenceChoiceError, InvalidInputError, one_of, option

DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")  # N: a CUDA GPU's number
DEVICE_CHOICES = one_of(DEVICES)
_DEVICE = re.compile("|".join(re.escape(name).replace("N", r"\d+") for name in DEVICES))
CPU_FEATURES_ENV = "XMODAL_CPU_FEATURES"


def resolve_device(requested: str | None = None) -> str:
    """`None`/"auto" picks a CUDA GPU, else Apple's GPU (mps), else the CPU; anything else is checked."""
    if requested not in (None, "", "auto") and not _DEVICE.fullmatch(requested):
        raise InvalidInputError(f"unknown device {requested!r}; use {DEVICE_CHOICES}")  # before torch loads
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


def cpu_features() -> frozenset[str] | None:
    """The instruction-set flags this CPU reports (Linux /proc/cpuinfo: x86's `flags`, Arm's `Features`), less
    those XMODAL_CPU_FEATURES masks; None where the system does not say (then each runtime's own dispatch
    decides). The one place xmodal asks what the CPU has: which ways it can run follow from it.

    XMODAL_CPU_FEATURES="-avx512*,-amx*,-avx_vnni*" runs xmodal as it runs on a CPU without them (AVX2 only):
    to build an index on one machine the way a smaller one will run it, or to see what another machine will
    print. The runtimes' kernels still follow the CPU itself (bench/as_cpu.py changes those for benches)."""
    reported = _reported_features()
    if reported is None:
        return None
    masks = cpu_feature_masks(os.environ.get(CPU_FEATURES_ENV, ""))
    return frozenset(flag for flag in reported if not any(_masked(flag, mask) for mask in masks))


def cpu_feature_masks(setting: str) -> tuple[str, ...]:
    """XMODAL_CPU_FEATURES's flags to take as absent: comma-separated, each `-FLAG` or `-PREFIX*`."""
    masks = tuple(part.strip() for part in setting.split(",") if part.strip())
    wrong = [mask for mask in masks if not mask.startswith("-") or len(mask.rstrip("*")) < 2]
    if wrong:
        raise InferenceChoiceError(
            f"{CPU_FEATURES_ENV}={setting!r}: {wrong[0]!r} is not a flag to mask; write the instruction sets this "
            "CPU should be taken to lack, each with a leading -, e.g. -avx512_bf16,-amx* (or unset it)")
    return tuple(mask[1:] for mask in masks)


def _masked(flag: str, mask: str) -> bool:
    return flag.startswith(mask[:-1]) if mask.endswith("*") else flag == mask


@lru_cache(maxsize=1)
def _reported_features() -> frozenset[str] | None:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return None


def parse_cpuinfo(text: str) -> frozenset[str] | None:
    """The first processor's flags (x86) or features (Arm) in /proc/cpuinfo's text; None if it lists none."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def return_freed_memory() -> None:
    """Give the pages of memory freed since (a model let go) back to the system. glibc keeps what a thread
    freed in that thread's arena, mapped, until asked (malloc_trim); elsewhere there is nothing to ask."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        pass
