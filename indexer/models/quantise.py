"""Static int8 quantisation of an exported ONNX graph, in the form OpenVINO runs on its int8 kernels.

Each chosen operator's weight (an initialiser) becomes int8 per output channel, dequantised in the graph; each
of its inputs computed at run time is quantised to uint8 and dequantised again (a QDQ pair), its range the
extremes seen on a calibration batch. ONNX Runtime's quantiser writes the same form, but walks the weights one
output channel at a time in Python and the graph a node at a time: ViT-B-32's two towers took it 17.5 s of a
first run's 42 s on two cores; this takes numpy's vectorised passes (bench/bench_quantise.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

# the input of each operator that holds its weight, and the weight's output-channel axis
WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Conv": 1, "Gather": 0}
FLOAT = 1  # onnx.TensorProto.FLOAT
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB ceiling, with room: larger graphs keep weights beside


@dataclass(frozen=True)
class Ranges:
    """An activation's observed extremes, widened to hold 0 (so zero padding stays exact)."""

    low: float
    high: float

    def scale_and_zero(self) -> tuple[np.float32, np.uint8]:
        low, high = min(self.low, 0.0), max(self.high, 0.0)
        scale = (high - low) / 255.0 if high > low else 1.0
        return np.float32(scale), np.uint8(np.clip(round(-low / scale), 0, 255))


def quantise_static(plain: Path, target: Path, feeds: dict[str, np.ndarray], operators: Sequence[str]) -> None:
    """Write `plain`'s graph to `target` with `operators` quantised, activation ranges measured by running
    `feeds` through it (ONNX Runtime; a graph too large to hand it in memory goes through a file beside
    `target`, removed after)."""
    import onnx

    large = sum(f.stat().st_size for f in plain.parent.iterdir() if f.is_file()) > EXTERNAL_DATA_BYTES
    model = onnx.load(str(plain))
    probe = _range_probe(model, _activations(model.graph, operators), target.parent if large else None)
    # read again after the probe is built: the graph's first copy is not held while ONNX Runtime makes its own
    # (ViT-B-32's image tower peaked at 1.7 GB with it held, 1.3 GB without; ONNX Runtime's quantiser 2.1 GB)
    del model
    ranges = _measured_ranges(probe, feeds)
    model = onnx.load(str(plain))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    chosen = [node for node in graph.node if node.op_type in operators]
    quantised_weights = {node.input[WEIGHT_INPUT[node.op_type]]: _channel_axis(node, weights)
                         for node in chosen if _has_float_weight(node, weights)}
    _rewrite(graph, chosen, weights, quantised_weights, ranges)
    _save(model, target, large)


def _activations(graph, operators: Sequence[str]) -> list[str]:
    """The float inputs of `operators` computed at run time (a Gather's are its indices: left as they are)."""
    weights = {init.name for init in graph.initializer}
    types = _tensor_types(graph)
    return sorted({name for node in graph.node if node.op_type in operators and node.op_type != "Gather"
                   for name in node.input[:2] if name and name not in weights and types.get(name, FLOAT) == FLOAT})


def _has_float_weight(node, weights) -> bool:
    from onnx import TensorProto

    name = node.input[WEIGHT_INPUT[node.op_type]] if len(node.input) > WEIGHT_INPUT[node.op_type] else ""
    found = weights.get(name)
    return found is not None and found.data_type == TensorProto.FLOAT and len(found.dims) >= 2


def _channel_axis(node, weights) -> int:
    """A weight's output channels: MatMul's B is [in, out]; Gemm's B is [out, in] when transposed; Conv's
    [out, in, h, w]; a Gather's table [rows, width] is quantised per row, each token's own scale."""
    if node.op_type == "MatMul":
        return len(weights[node.input[1]].dims) - 1
    if node.op_type == "Gemm":
        transposed = next((a.i for a in node.attribute if a.name == "transB"), 0)
        return 0 if transposed else 1
    return 0


@dataclass
class _RangeProbe:
    """The graph with each measured tensor's minimum and maximum as extra outputs, serialised (or written to a
    file, for a graph over protobuf's limit), and the tensors' names in output order."""

    graph: bytes | Path
    names: list[str]


def _range_probe(model, names: list[str], scratch: Path | None) -> _RangeProbe:
    """Reduced in the graph: a large model's activations would not fit in memory whole."""
    from onnx import TensorProto, helper

    graph, nodes, outputs = model.graph, len(model.graph.node), len(model.graph.output)
    for number, name in enumerate(names):
        graph.node.extend([
            helper.make_node("Cast", [name], [f"range{number}_float"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMin", [f"range{number}_float"], [f"range{number}_low"], keepdims=0),
            helper.make_node("ReduceMax", [f"range{number}_float"], [f"range{number}_high"], keepdims=0)])
        graph.output.extend(helper.make_tensor_value_info(f"range{number}_{end}", TensorProto.FLOAT, [])
                            for end in ("low", "high"))
    try:
        if scratch is None:
            return _RangeProbe(model.SerializeToString(), names)
        _save(model, scratch / "ranges.onnx", large=True)
        return _RangeProbe(scratch / "ranges.onnx", names)
    finally:  # the graph is left as it came
        del graph.node[nodes:]
        del graph.output[outputs:]


def _measured_ranges(probe: _RangeProbe, feeds: dict[str, np.ndarray]) -> dict[str, Ranges]:
    """Each probed tensor's extremes over `feeds`; a probe's file is removed after."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    graph = str(probe.graph) if isinstance(probe.graph, Path) else probe.graph
    try:
        session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        wanted = [f"range{number}_{end}" for number in range(len(probe.names)) for end in ("low", "high")]
        found = session.run(wanted, feeds)
    finally:
        if isinstance(probe.graph, Path):
            for written in probe.graph.parent.glob(f"{probe.graph.name}*"):
                written.unlink()
    return {name: Ranges(float(found[2 * number]), float(found[2 * number + 1]))
            for number, name in enumerate(probe.names)}


def _tensor_types(graph) -> dict[str, int]:
    """Each tensor's element type as the exporter recorded it; one it left out feeds a matrix product of a
    float model, which is float."""
    return {info.name: info.type.tensor_type.elem_type for info in (*graph.value_info, *graph.input, *graph.output)
            if info.type.tensor_type.elem_type}


def _rewrite(graph, chosen, weights, quantised_weights: dict[str, int], ranges: dict[str, Ranges]) -> None:
    """Swap each quantised weight for int8 values and a DequantizeLinear, and route each measured activation
    through a QuantizeLinear/DequantizeLinear pair into the chosen operators (its other readers keep the
    float tensor)."""
    from onnx import helper, numpy_helper

    added, kept = [], []
    for init in graph.initializer:
        if init.name in quantised_weights:
            values, scale = _int8_per_channel(numpy_helper.to_array(init), quantised_weights[init.name])
            kept += [numpy_helper.from_array(values, f"{init.name}_int8"),
                     numpy_helper.from_array(scale, f"{init.name}_scale"),
                     numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{init.name}_zero")]
            added.append(helper.make_node("DequantizeLinear", [f"{init.name}_int8", f"{init.name}_scale",
                                                               f"{init.name}_zero"], [f"{init.name}_dq"],
                                          axis=quantised_weights[init.name], name=f"{init.name}_DequantizeLinear"))
        else:
            kept.append(init)
    for name, found in ranges.items():
        scale, zero = found.scale_and_zero()
        kept += [numpy_helper.from_array(np.array(scale), f"{name}_scale"),
                 numpy_helper.from_array(np.array(zero), f"{name}_zero")]
        added += [helper.make_node("QuantizeLinear", [name, f"{name}_scale", f"{name}_zero"], [f"{name}_q"],
                                   name=f"{name}_QuantizeLinear"),
                  helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zero"],
                                   [f"{name}_dq"], name=f"{name}_DequantizeLinear")]
    rerouted = set(quantised_weights) | set(ranges)
    for node in chosen:
        for position, name in enumerate(node.input):
            if name in rerouted and (node.op_type != "Gather" or position == 0):
                node.input[position] = f"{name}_dq"
    del graph.initializer[:]
    graph.initializer.extend(kept)
    _insert_before_readers(graph, added)


def _int8_per_channel(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per slice along `axis`: the largest magnitude maps to 127."""
    others = tuple(i for i in range(weight.ndim) if i != axis)
    peak = np.max(np.abs(weight), axis=others, keepdims=True).astype(np.float32)
    scale = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    values = np.clip(np.rint(weight / scale), -127, 127).astype(np.int8)
    return values, scale.reshape(-1)


def _insert_before_readers(graph, added) -> None:
    """The new nodes at the front (they read only initialisers and graph inputs) or just after the node that
    writes what they read, keeping the graph in the topological order ONNX requires."""
    writer = {output: index for index, node in enumerate(graph.node) for output in node.output}
    after: dict[int, list] = {}
    for node in added:
        produced_at = max((writer.get(name, -1) for name in node.input), default=-1)
        if node.op_type == "DequantizeLinear" and node.input[0].endswith("_q"):
            produced_at = writer.get(node.input[0][:-2], -1)  # right behind its QuantizeLinear
        after.setdefault(produced_at, []).append(node)
    ordered = list(after.get(-1, []))
    for index, node in enumerate(graph.node):
        ordered.append(node)
        ordered += after.get(index, [])
    del graph.node[:]
    graph.node.extend(ordered)


def _save(model, path: Path, large: bool) -> None:
    import onnx

    onnx.save_model(model, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=f"{path.name}.data")
