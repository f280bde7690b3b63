"""Run a bench as on an older x86-64 CPU, on a newer one: an AVX2-only CPU (AMD Zen 2 and 3, Intel Haswell to
Comet Lake), or one with AVX-512 but neither VNNI nor BF16 (Intel Skylake-SP).

Issue 30 asks for figures per kind of CPU; only a Zen 4 and a Zen 5 were at hand. The runtimes xmodal and its
peers use (ONNX Runtime's MLAS, OpenVINO and its oneDNN, torch, CTranslate2) choose their kernels from the CPUID
instruction, and no environment variable reaches all of them (oneDNN's ONEDNN_MAX_CPU_ISA leaves OpenVINO's
and ONNX Runtime's MLAS matrix products on AVX-512). On Linux, a CPU with CPUID faulting (cpuinfo flag
`cpuid_fault`) lets a process trap its own CPUID: bench/cpuid_mask.c, preloaded, answers with the newer
instruction sets cleared, in the process and in every process it starts. xmodal's own detector reads
/proc/cpuinfo, which XMODAL_CPU_FEATURES masks the same way.

What this measures: the older CPU's kernels on this CPU's cores (their clock, caches and memory), not that
CPU. The ways each runtime offers and their speed relative to one another are the older CPU's; absolute rates
are not.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("cpuid_mask.c")
KIND_ENV = "XMODAL_BENCH_CPU"  # which kind cpuid_mask.c answers as


@dataclass(frozen=True)
class Kind:
    label: str
    cleared: tuple[str, ...]  # the beginnings of the cleared flags' cpuinfo names

    def features(self) -> str:
        """XMODAL_CPU_FEATURES's form of the same."""
        return ",".join(f"-{prefix}*" for prefix in self.cleared)


KINDS = {
    "avx2": Kind("AVX2 only (AMD Zen 2 and 3, Intel Haswell to Comet Lake)", ("avx512", "amx", "avx_vnni")),
    "avx512": Kind("AVX-512 without VNNI or BF16 (Intel Skylake-SP)",
                   ("avx512_vnni", "avx512_bf16", "avx512ifma", "avx512vbmi", "avx512_vbmi2", "avx512_bitalg",
                    "avx512_vpopcntdq", "avx512_fp16", "avx512_vp2intersect", "amx", "avx_vnni")),
}
CHOICES = tuple(KINDS)


def library() -> Path:
    """The compiled mask, built once per source text into the temporary folder."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    built = Path(tempfile.gettempdir()) / f"xmodal-cpuid-mask-{digest}.so"
    if not built.exists():
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise SystemExit("--as-cpu needs a C compiler (cc): install gcc, or leave --as-cpu out")
        partial = built.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(partial), str(SOURCE)], check=True)
        partial.replace(built)
    return built


def can_mask() -> str | None:
    """Why this machine cannot run as another CPU, or None where it can."""
    if sys.platform != "linux" or os.uname().machine != "x86_64":
        return "--as-cpu needs Linux on x86-64"
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = ""
    if "cpuid_fault" not in flags.split():
        return "--as-cpu needs a CPU with CPUID faulting (cpuinfo flag cpuid_fault); this one has none"
    return None


def masked() -> Kind | None:
    """The kind of CPU this process runs as, or None where it runs as itself."""
    kind = KINDS.get(os.environ.get(KIND_ENV, ""))
    preloaded = os.environ.get("LD_PRELOAD", "").split(":")
    return kind if kind and can_mask() is None and str(library()) in preloaded else None


def describe(kind: Kind) -> str:
    return f"as {kind.label}: CPUID masked by bench/cpuid_mask.c, {', '.join(kind.cleared)} cleared"


def restart_as(name: str) -> None:
    """Start this bench again, the same arguments, as a CPU of kind `name`; returns where that is done already."""
    problem = can_mask()
    if problem:
        raise SystemExit(problem)
    if masked() == KINDS[name]:
        return
    env = dict(os.environ, XMODAL_CPU_FEATURES=KINDS[name].features(), **{KIND_ENV: name})
    env["LD_PRELOAD"] = ":".join(filter(None, [str(library()), env.get("LD_PRELOAD")]))
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.argv], env)
