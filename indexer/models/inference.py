"""How a model's towers run on this machine: the runtime (torch, ONNX Runtime, OpenVINO) and the precision
(fp32, bf16, int8), and the rule that says which vectors of another precision an index accepts.

`auto` picks the fastest way measured on this machine with the weights in use to hold parity with fp32
(models/calibrate.py); the shipped tables (OFFERED, measured per kind of CPU) only order what is measured first
and stand in for what was not measured; a way they know only from random weights is never picked unmeasured.
"""
from __future__ import annotations

import importlib.util
import platform
from dataclasses import dataclass

from ..errors import InferenceChoiceError, ModelMismatchError, option
from . import device

AUTO = "auto"
RUNTIMES = ("torch", "onnx", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
PARITY_COSINE = 0.995  # the lowest per-item cosine to fp32 (min, not mean) that counts as the same vectors
# The instruction sets a precision's kernels need, as /proc/cpuinfo names them. bf16 is offered where it was
# measured, on x86's bf16 instructions; an Arm CPU's bf16 runs other kernels, never measured here.
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "avx2", "asimddp")
# x86's int8 dot products in one instruction; without them, int8 kernels multiply uint8 by int8 in pairs summed
# into 16 bits (vpmaddubsw), which saturates: 2 x 255 x 127 passes 32767
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


TOWER_NAMES = {"image": "photos", "text": "texts"}
EXPORTED_RUNTIMES = ("onnx", "openvino")  # towers loaded one by one from their own files: they run apart


@dataclass(frozen=True)
class Inference:
    """One way of running a model: what an index records, and what a query encoder declares.

    `text`: the text tower's way, where it runs another than the image tower's (`runtime` and `precision`):
    chosen per tower where one tower's fastest way breaks parity on the weights in use, or is not the other's
    fastest (Calibration.table). Made with `per_tower`, so a way that is the same for both towers has none."""

    runtime: str = "torch"
    precision: str = "fp32"
    text: Inference | None = None

    @classmethod
    def per_tower(cls, image: Inference, text: Inference) -> Inference:
        return image if image == text else cls(image.runtime, image.precision, text)

    @property
    def split(self) -> bool:
        return self.text is not None

    def tower(self, name: str) -> Inference:
        """The way `name` ("image" or "text") runs."""
        return self.text if name == "text" and self.text is not None else Inference(self.runtime, self.precision)

    def towers(self) -> tuple[Inference, ...]:
        return (self.tower("image"), self.text) if self.text is not None else (self,)

    @property
    def exact(self) -> bool:
        """Every tower in fp32: the same vectors on any runtime and CPU."""
        return all(way.precision == "fp32" for way in self.towers())

    def describe(self) -> str:
        if self.text is None:
            return f"{self.precision} on {self.runtime}"
        return f"{self.tower('image').describe()} for photos, {self.text.describe()} for texts"


@dataclass(frozen=True)
class Measured:
    """One way's row of the table: model-only speed over torch fp32, and the lowest cosine to fp32 on real
    weights (None: measured on random weights only, so parity is not known)."""

    speedup: float
    min_cosine: float | None
    holds: bool | None = None  # measured here (models/calibrate.py): the cosine and the neighbours both held

    def keeps_parity(self) -> bool:
        if self.holds is not None:
            return self.holds
        return self.min_cosine is not None and self.min_cosine >= PARITY_COSINE


# bench/results/precision_cpu.txt (2-core AMD EPYC Zen 4, avx512_vnni + avx512_bf16). The offline model's
# ways apply to its image tower, and so do its figures; its text tower stays fp32 (models/offline.py).
OFFERED: dict[str, dict[Inference, Measured]] = {
    "offline": {
        Inference("openvino", "bf16"): Measured(8.40, 0.9956),
        Inference("onnx", "fp32"): Measured(4.88, 1.0),
        Inference("openvino", "fp32"): Measured(4.42, 1.0),
        Inference("torch", "bf16"): Measured(2.87, 0.9968),
        Inference("torch", "fp32"): Measured(1.0, 1.0),
    },
    "open_clip": {
        # measured on a Zen 5, not the Zen 4 (2026-12-07, ViT-B-32: photos 6.38x, texts 6.12x;
        # bench/results/calibrate_cpu.txt); random weights: parity on real ones is calibration's to find
        Inference("openvino", "int8"): Measured(6.25, None),
        Inference("openvino", "bf16"): Measured(2.70, None),
        Inference("onnx", "int8"): Measured(2.61, None),
        Inference("torch", "int8"): Measured(1.95, None),
        Inference("onnx", "fp32"): Measured(1.23, 1.0),
        Inference("openvino", "fp32"): Measured(1.19, 1.0),
        Inference("torch", "bf16"): Measured(1.19, None),
        Inference("torch", "fp32"): Measured(1.0, 1.0),
    },
}
# The same ways on an x86 CPU without int8 dot products (AVX2 only: Zen 2 and 3, Intel before Ice Lake), where
# OpenVINO's int8 kernels fall to a generic gemm and int8 weights take 7 bits (int8_weight_bits): measured with
# AVX2's kernels on the Zen 5 (bench/as_cpu.py; ViT-B-32 photos, bench/results/calibrate_cpu.txt). Only the
# order of measuring comes from here: a first run measures the first of these before the rest.
OFFERED_WITHOUT_INT8_DOT: dict[str, dict[Inference, Measured]] = {
    "open_clip": {
        Inference("onnx", "int8"): Measured(2.62, None),
        Inference("torch", "int8"): Measured(2.20, None),
        Inference("openvino", "int8"): Measured(1.63, None),
        Inference("onnx", "fp32"): Measured(1.61, 1.0),
        Inference("openvino", "fp32"): Measured(1.16, 1.0),
        Inference("torch", "fp32"): Measured(1.0, 1.0),
        # no such CPU has bf16 (every CPU with AVX512_BF16 or AMX has VNNI): here to be asked for and fall back
        Inference("openvino", "bf16"): Measured(1.0, None),
        Inference("torch", "bf16"): Measured(1.0, None),
    },
}
# Not offered, and why (measured, same table): said in the refusal.
REFUSED: dict[tuple[str, Inference], str] = {
    ("offline", Inference("torch", "int8")): "MiniLM's int8 vectors fall to a cosine of 0.92 to fp32",
    ("offline", Inference("onnx", "int8")): "EfficientNet-Lite0's int8 vectors fall to a cosine of 0.74 to fp32, "
                                             "and run 3x slower",
}
# A GPU runs torch in fp16, as before this table existed; its vectors have always been accepted beside fp32.
GPU = Inference("torch", "fp16")


@dataclass(frozen=True)
class Choice:
    """The way chosen, and, when it is not what was asked for, one line saying why (the CLI prints it)."""

    inference: Inference
    note: str | None = None


def cpu_only(runtime: str | None, precision: str | None) -> bool:
    """Whether a way asked for runs on the CPU alone (ONNX Runtime, bf16, int8): a device left to auto is then
    the CPU, and nobody asks torch about GPUs."""
    return (runtime or AUTO) not in (AUTO, "torch") or (precision or AUTO) not in (AUTO, "fp32")


def offered(family: str) -> dict[Inference, Measured]:
    """The ways `family` may run, fastest first as measured on a CPU of this one's kind."""
    table = OFFERED_WITHOUT_INT8_DOT if int8_weight_bits() == 7 else {}
    return table.get(family) or OFFERED.get(family, {Inference("torch", "fp32"): Measured(1.0, 1.0)})


def choose(family: str, runtime: str | None = AUTO, precision: str | None = AUTO, gpu: bool = False,
           measured: dict[Inference, Measured] | None = None) -> Choice:
    """The way a model of `family` runs, from what was asked (`auto` or a name) and what this machine has.

    `measured`: the ways timed on this machine with the weights in use (Calibration.table). Where given, auto
    picks the fastest of them that held parity, torch fp32 among them; a way asked for that broke parity on
    these weights is refused with its cosine; the shipped table (OFFERED) only orders what was not measured."""
    runtime, precision = _checked(runtime or AUTO, RUNTIMES, "runtime"), _checked(precision or AUTO, PRECISIONS,
                                                                                  "precision")
    if gpu:
        return _on_gpu(family, runtime, precision)
    table = {**offered(family), **(measured or {})}
    wanted = [w for w in table if runtime in (AUTO, w.runtime) and precision in (AUTO, w.precision)
              and not (w.split and (runtime, precision) != (AUTO, AUTO))]  # a way per tower is auto's alone
    if precision == AUTO:  # a precision left to auto is one that holds parity (measured here, where it was)
        wanted = [w for w in wanted if (w in measured if measured else True) and table[w].keeps_parity()]
    elif measured:
        broken = [w for w in wanted if w in measured and not measured[w].keeps_parity()]
        if broken and len(broken) == len(wanted):
            raise InferenceChoiceError(_broken(broken[0], measured[broken[0]]))
        wanted = [w for w in wanted if w not in broken]
    if not wanted:
        raise InferenceChoiceError(_not_offered(family, runtime, precision))
    asked = (runtime, precision) != (AUTO, AUTO)
    choice = _first_available(family, wanted, table, measured, asked)
    if measured and asked and choice.inference not in measured:
        unmeasured = (f"{choice.inference.describe()} was not measured on this machine: its parity with fp32 on "
                      "these weights is not known")
        choice = Choice(choice.inference, "; ".join(filter(None, (choice.note, unmeasured))))
    return choice


def _first_available(family: str, candidates: list[Inference], table: dict[Inference, Measured],
                     measured: dict[Inference, Measured] | None, asked: bool = False) -> Choice:
    """The fastest candidate this machine can run; else the fastest way here that holds parity with fp32 (what
    auto runs: never a slower way for want of the one asked), saying why."""
    notes = []
    for way in _fastest_first(candidates, table, measured):
        missing = missing_requirement(way)
        if missing is None:
            return Choice(way, "; ".join(notes) if notes and asked else None)
        notes.append(f"{way.describe()} is not available here ({missing})")
    holding = [w for w in (measured or table) if table[w].keeps_parity()]
    fallback = next((w for w in _fastest_first(holding, table, measured) if missing_requirement(w) is None),
                    Inference())
    here = "measured here" if measured else "here"
    return Choice(fallback, f"{'; '.join(notes)}: running {fallback.describe()}, the fastest way {here} that keeps "
                            "fp32's vectors")


def _fastest_first(ways: list[Inference], table: dict[Inference, Measured],
                   measured: dict[Inference, Measured] | None) -> list[Inference]:
    """Ways measured here first, fastest first; then the rest in the shipped table's order."""
    measured = measured or {}
    return sorted(ways, key=lambda w: (w not in measured, -table[w].speedup))


def _broken(way: Inference, found: Measured) -> str:
    return (f"{way.describe()} breaks parity with fp32 on these weights, measured on this machine (lowest cosine "
            f"{found.min_cosine:.4f}, {PARITY_COSINE} needed, and most nearest neighbours kept): leave "
            f"{option('precision')} at auto, or ask for fp32")


def missing_requirement(way: Inference) -> str | None:
    """Why this machine cannot run `way` (a runtime not installed, an instruction set the CPU lacks), or None."""
    if way.split:
        return next(filter(None, (missing_requirement(tower) for tower in way.towers())), None)
    runtime_package = {"onnx": "onnxruntime", "openvino": "openvino"}.get(way.runtime)
    if runtime_package:  # both run the tower exported to an ONNX file (the onnx package writes it)
        for package in (runtime_package, "onnx"):
            if not _installed(package):
                return f"{package} is not installed: pip install {package}"
    if way.precision == "bf16" and not cpu_has(*BF16_FLAGS):
        return f"this CPU lacks {' and '.join(BF16_FLAGS)}"
    if way.precision == "int8" and not cpu_has(*INT8_FLAGS):
        return f"this CPU lacks int8 dot-product instructions ({', '.join(INT8_FLAGS)})"
    return None


def _installed(module: str) -> bool:
    """Found without importing it (importing onnxruntime or openvino costs a query's time)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules: blocked on purpose
        return False


def int8_weight_bits() -> int:
    """The bits an int8 export gives its weights on this CPU: 8, or 7 on an x86 CPU without int8 dot products,
    whose pairs of products then stay within 16 bits. ViT-B-32's image tower in ONNX Runtime's int8, lowest
    cosine to fp32 over 39 photos: 0.9791 with 8-bit weights on AVX2's kernels (0.9794 on Skylake-SP's AVX-512
    ones), outside parity; 0.9995 with 7, at the same speed; 0.9998 with 8 on VNNI's (python
    bench/bench_int8_bits.py --as-cpu avx2; bench/results/int8_bits_cpu.txt)."""
    found = device.cpu_features()
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    return 7 if x86 and found is not None and not any(flag in found for flag in INT8_DOT_FLAGS) else 8


def cpu_has(*flags: str) -> bool:
    """Whether the CPU has any of `flags` (device.cpu_features); where the system does not say, assume it does
    and let the runtime's own dispatch decide."""
    found = device.cpu_features()
    return found is None or any(flag in found for flag in flags)


def _on_gpu(family: str, runtime: str, precision: str) -> Choice:
    if runtime not in (AUTO, "torch") or precision not in (AUTO, "fp32"):
        raise InferenceChoiceError(
            f"on a GPU xmodal runs torch as it always has; {option('runtime', runtime)} and "
            f"{option('precision', precision)} are for the CPU: add {option('device', 'cpu')}, or leave them at auto")
    return Choice(GPU if family == "open_clip" else Inference())  # the offline model stays fp32 on a GPU


def _checked(value: str, names: tuple[str, ...], what: str) -> str:
    if value != AUTO and value not in names:
        raise InferenceChoiceError(f"unknown {what} {value!r}; use {', '.join((AUTO, *names))}")
    return value


def _not_offered(family: str, runtime: str, precision: str) -> str:
    asked = " ".join(part for part, given in ((precision, precision != AUTO), (f"on {runtime}", runtime != AUTO))
                     if given)
    why = next((why for (name, way), why in REFUSED.items() if name == family and precision in (AUTO, way.precision)
                and runtime in (AUTO, way.runtime)), None)
    ways = ", ".join(w.describe() for w in offered(family))
    return (f"the {family} model does not run {asked}{f' ({why})' if why else ''}; it runs {ways} "
            f"({option('precision')} and {option('runtime')})")


def rerun_way(identity) -> Inference | None:
    """The way an index's recorded model (a ModelIdentity) runs again by default: its own, where it chose one
    from this table; None (auto) for a GPU's fp16 and for models that run their own way."""
    way = identity.inference
    return None if way == GPU or identity.family not in OFFERED else way


def parity(family: str, way: Inference, measured: dict[Inference, Measured] | None = None) -> float | None:
    """The lowest cosine of `way`'s vectors to fp32, measured with the index's weights where `measured` (the
    index's calibration) has it, else on the shipped table's real weights; None where not known, and where the
    nearest neighbours measured did not hold."""
    if way.exact or way == GPU:
        return 1.0
    found = (measured or {}).get(way) or offered(family).get(way)
    if found is None or (found.holds is False):
        return None
    return found.min_cosine


def accepts(family: str, built: Inference, given: Inference,
            measured: dict[Inference, Measured] | None = None) -> bool:
    """Whether an index built one way accepts vectors made another way (a query, or an update).

    The rule: the same way always; otherwise both ways must hold measured parity with fp32 (lowest per-item
    cosine >= PARITY_COSINE, and the neighbours where measured on the index's own weights). fp32 on any runtime
    is fp32; an unmeasured precision is accepted only beside itself.
    """
    if built == given:
        return True
    ours, theirs = parity(family, built, measured), parity(family, given, measured)
    return ours is not None and theirs is not None and min(ours, theirs) >= PARITY_COSINE


def check_parity(built, given, measured: dict[Inference, Measured] | None = None) -> None:
    """Refuse vectors made `given`'s way (a ModelIdentity) for an index built `built`'s way, outside parity."""
    if accepts(built.family, built.inference, given.inference, measured):
        return
    own = "" if built.inference.split else f"use {option('runtime', built.runtime)} " \
                                            f"{option('precision', built.precision)}, or "
    raise ModelMismatchError(
        f"this index holds {built.inference.describe()} vectors; {given.inference.describe()} ones are outside "
        f"the parity measured for {built.spec} (the lowest cosine to fp32 must be >= {PARITY_COSINE}); {own}"
        f"leave {option('runtime')} and {option('precision')} out")


def accepted_ways(family: str, built: Inference, measured: dict[Inference, Measured] | None = None
                  ) -> list[Inference]:
    """The ways whose vectors an index built `built`'s way takes (queries and updates), fastest first: of an
    index with measurements, the ways measured (and fp32 on any runtime)."""
    ways = {**offered(family), **(measured or {})}
    if measured:
        ways = {w: m for w, m in ways.items() if w in measured or w.precision == "fp32"}
    return sorted((w for w in ways if accepts(family, built, w, measured)),
                  key=lambda w: (w not in (measured or {}), -ways[w].speedup))
