"""One model tower as an ONNX file: exported from torch (once, into the export cache) and run by ONNX Runtime
or OpenVINO, neither of which needs torch: a query process that finds its tower exported never imports it."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

MODEL_FILE = "model.onnx"
OPSET = 17


RUNTIME_PACKAGES = {"onnx": "onnxruntime", "openvino": "openvino"}


def runtime_version(runtime: str = "onnx") -> str:
    from importlib.metadata import version

    return version(RUNTIME_PACKAGES[runtime])  # read without importing it


def runtime_key(runtime: str, precision: str) -> dict[str, str | int]:
    """What an exported tower's cache key holds of how it runs: a new runtime version or opset re-exports."""
    return {"runtime": runtime, "runtime_version": runtime_version(runtime),
            "precision": export_precision(runtime, precision), "opset": OPSET}


def load_tower(runtime: str, precision: str, folder: Path, input_names: Sequence[str]):
    """The exported tower in `folder`, run by `runtime` ("onnx" or "openvino")."""
    if runtime == "openvino":
        return OpenVinoTower(folder / MODEL_FILE, input_names, precision)
    return OnnxTower(folder / MODEL_FILE, input_names)


def export_precision(runtime: str, precision: str) -> str:
    """What the exported file holds: int8 weights for ONNX Runtime's int8; OpenVINO takes the fp32 graph and
    runs it at `precision` itself (bf16 inference)."""
    return precision if runtime == "onnx" else "fp32"


def export(module, example: tuple, folder: Path, input_names: Sequence[str], precision: str = "fp32") -> Path:
    """Write `module` (a torch module taking `example`'s tensors, batch first) to folder/model.onnx; int8 is
    ONNX Runtime's dynamic quantisation of the fp32 graph (weights int8, activations quantised per batch)."""
    import torch

    target = folder / MODEL_FILE
    plain = folder / "fp32.onnx" if precision == "int8" else target
    names = list(input_names)
    # with autograd on, attention traces its exportable path, not the fused kernel inference uses
    with torch.inference_mode(False), torch.enable_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on traced shapes are for its developers
        torch.onnx.export(module.eval(), example, str(plain), input_names=names, output_names=["vectors"],
                          dynamic_axes={n: {0: "batch"} for n in [*names, "vectors"]}, opset_version=OPSET,
                          dynamo=False)
    if precision == "int8":
        import logging

        logging.getLogger("root").setLevel(logging.ERROR)  # its quantiser advises pre-processing on the root logger
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(plain), str(target), weight_type=QuantType.QInt8)
        plain.unlink()
    return target


_SPINNING = {"allowed": True}


def set_onnx_spinning(allowed: bool) -> None:
    """Whether ONNX Runtime's worker threads, in sessions created from now on, spin while they wait for work.
    Spinning saves a little latency between a run's operators; in a service, whose small runs come one per
    request while its request threads want the same cores, the spinning threads took a fifth of its CPU
    (tiny CLIP, 8 clients, 2 cores: 5.0-6.4 ms of CPU per request, 4.0-4.6 without)."""
    _SPINNING["allowed"] = allowed


class OnnxTower:
    """An ONNX Runtime session on the CPU, created at its first batch."""

    def __init__(self, path: Path, input_names: Sequence[str]):
        self.path = Path(path)
        self._names = list(input_names)
        self._session: Any = None

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
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
    import os

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "xmodal" / "openvino-compiled"


class OpenVinoTower:
    """An OpenVINO compiled model on the CPU, compiled at its first batch; bf16 runs on the CPU's bf16
    instructions (AVX-512 BF16, AMX) with fp32 inputs and outputs."""

    HINTS = {"fp32": "f32", "bf16": "bf16"}

    def __init__(self, path: Path, input_names: Sequence[str], precision: str):
        self.path = Path(path)
        self._names = list(input_names)
        self._precision = precision
        self._compiled: Any = None

    def __call__(self, *inputs: np.ndarray) -> np.ndarray:
        if self._compiled is None:
            import openvino

            core = openvino.Core()
            # OpenVINO keeps what it compiled, keyed by the model and the settings: a later process loads it
            # instead of compiling again (ViT-B-32's image tower in bf16: 2.6 s to 1.3 s for a whole process)
            self._compiled = core.compile_model(str(self.path), "CPU",
                                                {"INFERENCE_PRECISION_HINT": self.HINTS[self._precision],
                                                 "CACHE_DIR": str(compiled_cache())})
        result = self._compiled(dict(zip(self._names, inputs)))
        return np.asarray(result[self._compiled.output(0)], dtype=np.float32)
