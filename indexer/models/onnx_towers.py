"""One model tower as an ONNX file: exported from torch (once, into the export cache) and run by ONNX Runtime
or OpenVINO, neither of which needs torch: a query process that finds its tower exported never imports it."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .export_cache import UNUSED_SECONDS, remove_abandoned, remove_unused_files

MODEL_FILE = "model.onnx"
OPSET = 17


RUNTIME_PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino"}


def runtime_version(runtime: str = "onnx") -> str:
    from importlib.metadata import version

    return version(RUNTIME_PACKAGES[runtime])  # read without importing it


def runtime_key(runtime: str, precision: str) -> dict[str, str | int]:
    """What an exported tower's cache key holds of how it runs: a new runtime version or opset re-exports. The
    fp32 graph ONNX Runtime runs is the one every other way derives from: no runtime's version changes it."""
    exported = export_precision(runtime, precision)
    if (runtime, exported) == ("onnx", "fp32"):
        return {"runtime": "onnx", "precision": "fp32", "opset": OPSET}
    bits = weight_bits(exported)
    return {"runtime": runtime, "runtime_version": runtime_version(runtime), "precision": exported, "opset": OPSET,
            **({"weight_bits": bits} if bits != 8 else {}),  # 8 bits: keys from before 7 existed still match
            # ONNX Runtime's int8 from xmodal's own quantiser, not ONNX Runtime's (whose graphs ran slower)
            **({"quantiser": "xmodal"} if exported == "int8" else {})}


def weight_bits(exported: str) -> int:
    """The bits of an export's int8 weights on this CPU (inference.int8_weight_bits); 8 for other exports."""
    from .inference import int8_weight_bits

    return int8_weight_bits() if exported in ("int8", STATIC_INT8) else 8


def load_tower(runtime: str, precision: str, folder: Path, input_names: Sequence[str]):
    """The exported tower in `folder`, run by `runtime` ("onnx" or "openvino")."""
    if runtime == "openvino":
        return OpenVinoTower(folder / MODEL_FILE, input_names, precision)
    return OnnxTower(folder / MODEL_FILE, input_names)


STATIC_INT8 = "int8-static"


def export_precision(runtime: str, precision: str) -> str:
    """What the exported file holds: int8 weights for ONNX Runtime's int8 (activations quantised per batch as
    it runs); for OpenVINO's int8, int8 weights and activation ranges fixed at export (OpenVINO's int8 kernels
    take only a graph quantised beforehand); otherwise the fp32 graph, which OpenVINO runs at bf16 itself."""
    if runtime == "onnx":
        return precision
    return STATIC_INT8 if precision == "int8" else "fp32"


@dataclass(frozen=True)
class StaticQuantisation:
    """What a static int8 export measures its activation ranges on (a batch of the tower's one input), and
    the operators it quantises: the matrix products, where the time goes, and a text tower's token table.
    Quantising every operator's inputs (layer norms, softmax, GELU) took ViT-B-32's lowest cosine to fp32 from
    0.9997 to 0.989 (random weights, 80 photos) and ran no faster on OpenVINO."""

    inputs: np.ndarray
    operators: tuple[str, ...] = ("MatMul", "Gemm", "Conv")


def export(module, example: tuple, folder: Path, input_names: Sequence[str], precision: str = "fp32",
           static: StaticQuantisation | None = None) -> Path:
    """Write `module` (a torch module taking `example`'s tensors, batch first) to folder/model.onnx in
    `precision` (see `derive`), its int8 weights as this CPU wants them (`weight_bits`)."""
    if precision == "fp32":
        return export_graph(module, example, folder / MODEL_FILE, input_names)
    plain = export_graph(module, example, folder / "fp32.onnx", input_names)
    try:
        return derive(plain, folder, precision, input_names, static, weight_bits(precision))
    finally:
        plain.unlink()


def export_graph(module, example: tuple, target: Path, input_names: Sequence[str]) -> Path:
    """`module`'s fp32 graph, written to `target`: what every other precision and runtime is derived from."""
    import torch

    names = list(input_names)
    # with autograd on, attention traces its exportable path, not the fused kernel inference uses
    with torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on traced shapes are for its developers
        torch.onnx.export(module.eval(), example, str(target), input_names=names, output_names=["vectors"],
                          dynamic_axes={n: {0: "batch"} for n in [*names, "vectors"]}, opset_version=OPSET,
                          dynamo=False)
    return target


def derive(plain: Path, folder: Path, precision: str, input_names: Sequence[str],
           static: StaticQuantisation | None = None, bits: int = 8) -> Path:
    """folder/model.onnx from the fp32 graph at `plain`, without torch: fp32 is the graph itself (linked where
    the file system allows: one copy of the weights on disk); int8 is ONNX Runtime's dynamic quantisation of it
    (weights int8, activations quantised per batch: models/quantise_dynamic.py); int8-static quantises it as
    `static` says (models/quantise.py). Int8 weights take `bits` (7: within 16-bit pair sums, for a CPU
    without int8 dot products)."""
    target = folder / MODEL_FILE
    if precision == "fp32":
        _link(plain, target)
    elif precision == "int8":
        from .quantise_dynamic import quantise_dynamic

        quantise_dynamic(plain, target, bits)
    elif precision == STATIC_INT8:
        quantize_static(plain, target, input_names[0], static, bits)
    else:
        raise ValueError(f"no export precision {precision!r}")
    return target


def _link(source: Path, target: Path) -> None:
    """`source` at `target`, and the weight files an ONNX graph over 2 GB keeps beside it (the source's folder
    holds one graph: every other file there but the cache's own is one of them)."""
    from .export_cache import META

    for found in source.parent.iterdir():
        if found.is_file() and found.name != META and not found.name.startswith("openvino-") and \
                found.suffix != ".json":
            linked = target if found == source else target.parent / found.name
            try:
                os.link(found, linked)
            except OSError:  # another file system, or one without links
                shutil.copyfile(found, linked)


# What a static int8 export must keep of fp32's vectors of the shipped pictures and captions it is calibrated on:
# calibration's 0.995 on the user's own inputs (models/inference.py), with a margin, since those differ
HOLDS = 0.997
QUANTISED_FILE = "quantised.json"  # beside a static int8 export: the operators it left in fp32, and its cosine


def quantize_static(plain: Path, target: Path, input_name: str, static: StaticQuantisation | None,
                    bits: int = 8) -> None:
    """Int8 weights per output channel and uint8 activations, their ranges the extremes seen on `static`'s
    inputs, written as quantise/dequantise pairs (QDQ) around its operators: the form OpenVINO runs on its int8
    kernels (models/quantise.py). Where that loses fp32's vectors (HOLDS), the operators whose inputs int8
    serves worst stay fp32. Any scratch file stays inside the export's own folder, which the export cache
    removes whole, so a run killed midway leaves nothing elsewhere."""
    if static is None or not len(static.inputs):
        raise ValueError("a static int8 export needs inputs to measure its activation ranges on")
    from .quantise import quantise_static

    record_quantised(target.parent, quantise_static(plain, target, {input_name: np.ascontiguousarray(static.inputs)},
                                                    static.operators, holds=HOLDS, bits=bits))


def record_quantised(folder: Path, found) -> None:
    """What a static export (a quantise.Quantised) left in fp32, beside it: how OpenVINO runs it depends on it."""
    (folder / QUANTISED_FILE).write_text(json.dumps({"left_out": list(found.left_out),
                                                     "lowest_cosine": found.lowest_cosine}))


def spared(folder: Path) -> int:
    """How many operators a static int8 export in `folder` left in fp32 (0 where it records none)."""
    try:
        return len(json.loads((folder / QUANTISED_FILE).read_text())["left_out"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


_SPINNING = {"allowed": True}


def set_onnx_spinning(allowed: bool) -> None:
    """Whether ONNX Runtime's worker threads, in sessions created from now on, spin while they wait for work.
    Spinning saves a little latency between a run's operators; in a service, whose small runs come one per
    request while its request threads want the same cores, the spinning threads took a fifth of its CPU
    (tiny CLIP, 8 clients, 2 cores: 5.0-6.4 ms of CPU per request, 4.0-4.6 without)."""
    _SPINNING["allowed"] = allowed


class OnnxTower:
    """An ONNX Runtime session on the CPU, created at its first batch, run CHUNK items at a time.

    ONNX Runtime's CPU kernels run small batches faster per item: ViT-B-32-256 on 2 cores of a Zen 5, model
    only, photos per second at batch 8 / 16 / 64: int8 78 / 70 / 62, fp32 34 / 32 / 31; texts, int8
    159 / 151 / 130, fp32 64 / 64 / 53. A run's batch (64 by default: decoding hands photos over in batches) is
    split into chunks of 8, which also keeps the activations' memory small.
    """

    CHUNK = 8

    def __init__(self, path: Path, input_names: Sequence[str]):
        self.path = Path(path)
        self._names = list(input_names)
        self._session: Any = None

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        count = len(inputs[0])
        if count <= self.CHUNK:
            return self._run(*inputs)
        return np.concatenate([self._run(*(part[start:start + self.CHUNK] for part in inputs))
                               for start in range(0, count, self.CHUNK)])

    def _run(self, *inputs: np.ndarray) -> np.ndarray:
        if self._session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3  # ONNX Runtime's warnings about unused initialisers are not the user's
            if not _SPINNING["allowed"]:
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self._session = onnxruntime.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        feeds = dict(zip(self._names, inputs))
        return np.asarray(self._session.run(None, feeds)[0], dtype=np.float32)


def compiled_cache() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "xmodal" / "openvino-compiled"


class OpenVinoTower:
    """An OpenVINO compiled model on the CPU, compiled at its first batch; bf16 runs on the CPU's bf16
    instructions (AVX-512 BF16, AMX) with fp32 inputs and outputs.

    It runs the tower from OpenVINO's own format (IR), converted once from the exported ONNX file and kept
    beside it: OpenVINO maps an IR's weights from the file instead of parsing a copy of them onto the heap,
    and for bf16 the IR holds fp16 weights, which its bf16 kernels take as they are. ViT-B-32's image tower
    in bf16 peaked at 935 MB from the ONNX file and 616 MB from the IR (batch 64); its text tower, as a
    one-shot query loads it, 532 MB and 341 MB; same speed. fp32 keeps fp32 weights: its vectors stay fp32's.
    """

    # int8 runs OpenVINO's int8 kernels on the quantised matrix products and fp32 around them: with bf16 around
    # them instead (its default on a bf16 CPU) ViT-B-32 ran slower, 75 against 94 photos/s at batch 8 (Zen 5).
    # An export that left products in fp32 to keep fp32's vectors runs those in bf16 where the CPU has it:
    # MiniLM (real weights, 16 of its products spared) 1,165 texts/s against 757 with fp32 around, and bf16
    # alone 1,092, at a lowest cosine of 0.9985 either way (bench/bench_int8_real_weights.py)
    HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}

    # A batch this large is an index run's (64 by default; measuring times 16 photos and 32 texts, a service
    # batches fewer): it runs as several requests at once on a model compiled for throughput (OpenVINO's
    # streams, each on its share of the cores), PART items each. ViT-B-32's image tower in int8 on 2 cores of a
    # Zen 5, batches of 64, model only: 153 photos/s as one request, 160 as four of 16 one after another, 168
    # as parts of 8 on two streams. A query's batch of one keeps every core on it.
    BULK = 48
    PART = 8

    def __init__(self, path: Path, input_names: Sequence[str], precision: str):
        self.path = Path(path)
        self._names = list(input_names)
        self._precision = precision
        self._compiled: Any = None
        self._queue: Any = None  # the throughput model's requests, made at the first bulk batch
        self._bulk_lock = threading.Lock()  # one bulk batch at a time shares the requests (a service's threads)

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        # once batches run on the throughput model, an index run's last, shorter batch does too: compiling the
        # latency model for it alone raised the peak from 614 MB to 950 (ViT-B-32-256 int8 as on a Skylake-SP,
        # 300 photos: 4 batches of 64 and one of 44)
        if len(inputs[0]) >= self.BULK or (self._queue is not None and len(inputs[0]) >= self.PART):
            return self._in_parts(inputs)
        if self._compiled is None:
            self._compiled = self._compile()
        result = self._compiled(dict(zip(self._names, inputs)))
        return np.asarray(result[self._compiled.output(0)], dtype=np.float32)

    def _in_parts(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """The batch as PART-item requests run on the throughput model's streams, vectors in input order."""
        with self._bulk_lock:
            return self._run_parts(inputs)

    def _run_parts(self, inputs: Sequence[np.ndarray]) -> np.ndarray:
        if self._queue is None:
            import openvino

            compiled = self._compile(throughput=True)
            self._queue = openvino.AsyncInferQueue(compiled, compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        starts = range(0, len(inputs[0]), self.PART)
        found: dict[int, np.ndarray] = {}
        self._queue.set_callback(lambda request, start: found.__setitem__(
            start, np.array(request.get_output_tensor(0).data, dtype=np.float32)))
        for start in starts:
            self._queue.start_async(dict(zip(self._names, (part[start:start + self.PART] for part in inputs))),
                                    start)
        self._queue.wait_all()
        return np.concatenate([found[start] for start in starts])

    def _compile(self, throughput: bool = False):
        import openvino

        core = openvino.Core()
        # OpenVINO keeps what it compiled, keyed by the model and the settings: a later process loads it
        # instead of compiling again (ViT-B-32's image tower in bf16: 2.6 s to 1.3 s for a whole process)
        settings = {"INFERENCE_PRECISION_HINT": self.hint(), "CACHE_DIR": str(compiled_cache()),
                    "PERFORMANCE_HINT": "THROUGHPUT" if throughput else "LATENCY"}
        converted = self.ir_path()
        for _attempt in range(2):
            if not converted.exists() and not convert_to_ir(self.path, converted, compress=self._precision == "bf16"):
                break  # a cache folder this user cannot write: the ONNX file runs as it is
            try:
                return core.compile_model(str(converted), "CPU", settings)
            except RuntimeError:  # damaged on disk (truncated, overwritten): converted again from the ONNX file
                converted.unlink(missing_ok=True)
        return core.compile_model(str(self.path), "CPU", settings)

    def hint(self) -> str:
        from .inference import BF16_FLAGS, cpu_has

        if self._precision == "int8" and spared(self.path.parent) and cpu_has(*BF16_FLAGS):
            return "bf16"
        return self.HINTS[self._precision]

    def ir_path(self) -> Path:
        return self.path.with_name(f"openvino-{self._precision}.xml")


SCRATCH_PREFIX = ".openvino-"
ABANDONED_SECONDS = 600  # a conversion takes seconds; a scratch folder this old was left by a killed process


def convert_to_ir(onnx_file: Path, target: Path, compress: bool) -> bool:
    """Write `onnx_file` as an OpenVINO IR at `target` (.xml, and its .bin beside it), weights in fp16 where
    `compress`; False where the folder cannot be written (the ONNX file is then run as it is). Written in a
    scratch folder and moved into place .bin first, so a reader that finds the .xml finds its weights whole."""
    import openvino

    remove_abandoned(target.parent, (SCRATCH_PREFIX,), ABANDONED_SECONDS)
    # with a new tower come new compiled blobs: those written long ago go (OpenVINO never touches a blob it
    # reads, so one still wanted is compiled again, in a second or two), here rather than at every compile
    remove_unused_files(compiled_cache(), UNUSED_SECONDS)
    try:
        scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=target.parent))
    except OSError:
        return False
    try:
        written = scratch / target.name
        openvino.save_model(openvino.Core().read_model(str(onnx_file)), str(written), compress_to_fp16=compress)
        os.replace(written.with_suffix(".bin"), target.with_suffix(".bin"))
        os.replace(written, target)
        return True
    except OSError:
        return False
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
