"""Run a bench as on an AVX2-only x86-64 CPU (AMD Zen 2 and 3, Intel Haswell to Comet Lake) on a newer one.

Issue 30 asks for figures on an AVX2-only CPU; none was at hand. The runtimes xmodal and its peers use (ONNX
Runtime's MLAS, OpenVINO and its oneDNN, torch, CTranslate2) choose their kernels from the CPUID instruction,
and no environment variable reaches all of them (oneDNN's ONEDNN_MAX_CPU_ISA leaves OpenVINO's and ONNX
Runtime's MLAS matrix products on AVX-512). On Linux, a CPU with CPUID faulting (cpuinfo flag `cpuid_fault`)
lets a process trap its own CPUID: bench/cpuid_mask.c, preloaded, answers with AVX-512, AVX-VNNI and AMX
cleared, in the process and in every process it starts. xmodal's own detector reads /proc/cpuinfo, which
XMODAL_CPU_FEATURES masks the same way.

What this measures: AVX2's kernels on this CPU's cores (their clock, caches and memory), not an AVX2 CPU. The
ways each runtime offers and their speed relative to one another are an AVX2 CPU's; absolute rates are not.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SOURCE = Path(__file__).with_name("cpuid_mask.c")
CLEARED = ("avx512", "amx", "avx_vnni")  # the beginnings of the cleared flags' cpuinfo names
FEATURES = ",".join(f"-{prefix}*" for prefix in CLEARED)  # XMODAL_CPU_FEATURES's form of the same
LABEL = "AVX2 kernels (CPUID masked: AVX-512, AVX-VNNI, AMX cleared by bench/cpuid_mask.c)"


def library() -> Path:
    """The compiled mask, built once per source text into the temporary folder."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    built = Path(tempfile.gettempdir()) / f"xmodal-cpuid-mask-{digest}.so"
    if not built.exists():
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise SystemExit("--as-avx2 needs a C compiler (cc): install gcc, or leave --as-avx2 out")
        partial = built.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(partial), str(SOURCE)], check=True)
        partial.replace(built)
    return built


def can_mask() -> str | None:
    """Why this machine cannot run as an AVX2-only CPU, or None where it can."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return "--as-avx2 needs Linux on x86-64"
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = ""
    if "cpuid_fault" not in flags.split():
        return "--as-avx2 needs a CPU with CPUID faulting (cpuinfo flag cpuid_fault); this one has none"
    return None


def masked() -> bool:
    return str(library()) in os.environ.get("LD_PRELOAD", "").split(":") if can_mask() is None else False


def restart_as_avx2() -> None:
    """Start this bench again, the same arguments, with CPUID masked; returns where that is done already."""
    problem = can_mask()
    if problem:
        raise SystemExit(problem)
    if masked():
        return
    env = dict(os.environ, XMODAL_CPU_FEATURES=FEATURES)
    env["LD_PRELOAD"] = ":".join(filter(None, [str(library()), env.get("LD_PRELOAD")]))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def avx512_seen() -> bool:
    """Whether torch, in a fresh process, sees AVX-512: the check that the mask took."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                         check=True, capture_output=True, text=True).stdout
    return "AVX512" in out
