"""Where searches scan vectors: the one place that decides, and what `xmodal info` and `xmodal serve` report.

- faiss-gpu installed and seeing a GPU: faiss scans on the GPU.
- otherwise a GPU torch can use (CUDA, or Apple's mps): torch scans there, in fp16 matrix products with top-k
  (faiss-gpu's official wheels need CUDA 12; many users have faiss-cpu beside a CUDA torch);
- otherwise the CPU: numpy for exact scans, faiss-cpu for approximate indexes.
On a GPU every segment that fits in its memory is scanned exactly; the stored float32 vectors then score the
shortlist, so the answer is the exact one (see search/scan.py).
"""
from __future__ import annotations

import glob
import os
import platform
import sys
from dataclasses import dataclass

from ..indexer.models import is_gpu, resolve_device


@dataclass(frozen=True)
class SearchPlacement:
    device: str  # "cpu", "cuda", "cuda:1", "mps"
    engine: str  # "numpy" (faiss-cpu for approximate indexes) | "torch" | "faiss-gpu"
    reason: str

    @property
    def on_gpu(self) -> bool:
        return self.engine != "numpy"

    def describe(self) -> str:
        return f"{self.engine} on {self.device} ({self.reason})"


CPU = SearchPlacement("cpu", "numpy", "asked for")


def choose_placement(requested: str | None = "auto") -> SearchPlacement:
    """`requested`: "auto", "cpu", "cuda", "cuda:N" or "mps", as for models. "auto" imports torch only on a
    machine that may have a GPU: a one-shot search elsewhere does not pay for the import."""
    if requested == "cpu":
        return CPU
    faiss_gpus = faiss_gpu_count()
    if requested in (None, "", "auto"):
        if faiss_gpus:
            return SearchPlacement("cuda", "faiss-gpu", f"faiss sees {faiss_gpus} GPU(s)")
        if not gpu_possible():
            return SearchPlacement("cpu", "numpy", "no GPU on this machine")
    device = resolve_device(requested)
    if not is_gpu(device):
        return SearchPlacement("cpu", "numpy", "torch sees no GPU")
    if faiss_gpus and device.startswith("cuda"):
        return SearchPlacement(device, "faiss-gpu", f"faiss sees {faiss_gpus} GPU(s)")
    why = "faiss has no GPU support installed" if device.startswith("cuda") else "Apple GPU"
    return SearchPlacement(device, "torch", why)


def faiss_gpu_count() -> int:
    import faiss

    counter = getattr(faiss, "get_num_gpus", None)
    return int(counter()) if counter else 0


def gpu_possible() -> bool:
    """Whether this machine may have a GPU torch can use, known without importing torch (4 s)."""
    if "torch" in sys.modules:
        return True  # already paid for: ask torch itself
    if os.path.exists("/proc/driver/nvidia/version") or glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd"):
        return True  # an NVIDIA driver, or AMD's ROCm
    return sys.platform == "darwin" and platform.machine() == "arm64"
