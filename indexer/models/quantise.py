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

# which input of each operator holds its weight
WEIGHT_INPUT = {"MatMul": 1, "Gemm": 1, "Conv": 1, "Gather": 0}
FLOAT = 1  # onnx.TensorProto.FLOAT
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GB ceiling, with room: larger graphs keep weights beside


@dataclass(frozen=True)
class Ranges:
    """An activation's observed extremes, widened to hold 0 (so zero padding stays exact)."""

    low: float
    high: float

    @classmethod
    def of(cls, extremes: tuple[float, float]) -> "Ranges":
        return cls(*extremes)

    def scale_and_zero(self) -> tuple[np.float32, np.uint8]:
        low, high = min(self.low, 0.0), max(self.high, 0.0)
        scale = (high - low) / 255.0 if high > low else 1.0
        return np.float32(scale), np.uint8(np.clip(round(-low / scale), 0, 255))


@dataclass(frozen=True)
class Quantised:
    """What a static export holds: the operators left in fp32 to keep its vectors, and its lowest cosine to
    the fp32 graph's vectors over the calibration inputs (None: not checked)."""

    left_out: tuple[str, ...] = ()
    lowest_cosine: float | None = None


def quantise_static(plain: Path, target: Path, feeds: dict[str, np.ndarray], operators: Sequence[str],
                    exclude: Sequence[str] = (), holds: float | None = None, bits: int = 8) -> Quantised:
    """Write `plain`'s graph to `target` with `operators` quantised (but the nodes named in `exclude`),
    activation ranges measured by running `feeds` through it (ONNX Runtime; a graph too large to hand it in
    memory goes through a file beside `target`, removed after).

    With `holds`, the result's vectors of `feeds` must keep at least that cosine to fp32's: where they do not,
    the operators reading the activations int8 serves worst are left in fp32, a few more at a time
    (`_spared`), until they do; where no step does, everything is quantised (measuring on the user's photos
    then refuses the way). Weights take `bits` (8, or 7 for a CPU without int8 dot products: see
    inference.int8_weight_bits)."""
    large = too_large_for_one_file(plain)
    scratch = target.parent if large else None
    probed = _probed(plain, operators, exclude, scratch, feeds, _range_nodes, Ranges.of)
    ranges, reference = dict(zip(probed.names, probed.readings)), probed.vectors
    model = _quantised(plain, operators, exclude, ranges, bits)
    result = Quantised()
    if holds is not None and not large:
        result = Quantised((), _lowest_cosine(reference, _vectors(model.SerializeToString(), feeds)))
        if result.lowest_cosine < holds:
            model, result = _spared(plain, operators, exclude, ranges, feeds, reference, holds, bits) or (model, result)
    save(model, target, large)
    return result


def _spared(plain: Path, operators: Sequence[str], exclude: Sequence[str], ranges: dict[str, Ranges],
            feeds: dict[str, np.ndarray], reference: np.ndarray, holds: float, bits: int):
    """The graph with the fewest operators left in fp32 that keeps `holds`, those whose inputs int8 serves
    worst (`_error_nodes`, on `feeds`) first: a sixteenth of the inputs' readers, an eighth, a quarter, a half;
    None where even half do not hold."""
    import onnx

    plain_model = onnx.load(str(plain), load_external_data=False)
    readers = [(node.name, set(node.input)) for node in _chosen(plain_model.graph, operators, exclude)]
    opset = _opset(plain_model)
    del plain_model  # names kept, not nodes: a node holds its whole graph in memory
    errors = _probed(plain, operators, exclude, None, feeds, lambda *a: _error_nodes(*a, ranges, opset),
                     lambda pair: pair[0])
    ranked = [name for _error, name in sorted(zip(errors.readings, errors.names), reverse=True)]
    for count in sorted({max(1, -(-len(ranked) * share // 16)) for share in (1, 2, 4, 8)}):
        worst = set(ranked[:count])
        left_out = tuple(name for name, inputs in readers if worst & inputs)
        model = _quantised(plain, operators, [*exclude, *left_out], ranges, bits)
        lowest = _lowest_cosine(reference, _vectors(model.SerializeToString(), feeds))
        if lowest >= holds:
            return model, Quantised(left_out, lowest)
    return None


def _quantised(plain: Path, operators: Sequence[str], exclude: Sequence[str], ranges: dict[str, "Ranges"],
               bits: int = 8):
    import onnx

    model = onnx.load(str(plain))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    chosen = _chosen(graph, operators, exclude)
    quantised_weights = {node.input[WEIGHT_INPUT[node.op_type]]: _channel_axis(node, weights)
                         for node in chosen if _has_float_weight(node, weights)}
    read = set(_activations(chosen, graph))
    _rewrite(graph, chosen, weights, quantised_weights, {n: r for n, r in ranges.items() if n in read}, bits)
    return model


def _chosen(graph, operators: Sequence[str], exclude: Sequence[str]) -> list:
    left_out = set(exclude)
    return [node for node in graph.node if node.op_type in operators and node.name not in left_out]


def _activations(chosen: list, graph) -> list[str]:
    """The float inputs of the chosen nodes computed at run time (a Gather's are its indices: left as they
    are)."""
    weights = {init.name for init in graph.initializer}
    types = _tensor_types(graph)
    return sorted({name for node in chosen if node.op_type != "Gather"
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
class _Probed:
    names: list[str]  # the activations probed
    readings: list  # what was read of each
    vectors: np.ndarray  # the graph's own output, fp32's vectors of the inputs


def _probed(plain: Path, operators: Sequence[str], exclude: Sequence[str], scratch: Path | None,
            feeds: dict[str, np.ndarray], add_nodes, reading):
    """The chosen operators' activations, `reading` of the two statistics `add_nodes(graph, number, name)`
    computes of each in the graph, and the graph's own output (reduced there: a large model's activations would not fit in memory
    whole), run once on `feeds`. The graph's own copy is let go before ONNX Runtime makes its own: ViT-B-32's
    image tower peaked at 1.7 GB with it held, 1.3 GB without (ONNX Runtime's quantiser: 2.1 GB)."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    model = onnx.load(str(plain))
    names = _activations(_chosen(model.graph, operators, exclude), model.graph)
    for number, name in enumerate(names):
        model.graph.node.extend(add_nodes(model.graph, number, name))
        model.graph.output.extend(helper.make_tensor_value_info(f"probe{number}_{end}", TensorProto.FLOAT, [])
                                  for end in ("a", "b"))
    if scratch is None:
        probe: bytes | str = model.SerializeToString()
    else:
        save(model, scratch / "probe.onnx", large=True)
        probe = str(scratch / "probe.onnx")
    del model
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(probe, options, providers=["CPUExecutionProvider"])
        found = session.run([session.get_outputs()[0].name, *(f"probe{number}_{end}" for number in range(len(names))
                                                              for end in ("a", "b"))], feeds)
    finally:
        if scratch is not None:
            for written in scratch.glob("probe.onnx*"):
                written.unlink()
    return _Probed(names, [reading((float(found[1 + 2 * n]), float(found[2 + 2 * n]))) for n in range(len(names))],
                   np.asarray(found[0], dtype=np.float64))


def _range_nodes(_graph, number: int, name: str) -> list:
    from onnx import TensorProto, helper

    return [helper.make_node("Cast", [name], [f"probe{number}_float"], to=TensorProto.FLOAT),
            helper.make_node("ReduceMin", [f"probe{number}_float"], [f"probe{number}_a"], keepdims=0),
            helper.make_node("ReduceMax", [f"probe{number}_float"], [f"probe{number}_b"], keepdims=0)]


def _error_nodes(graph, number: int, name: str, ranges: dict[str, "Ranges"], opset: int) -> list:
    """How badly int8 serves the tensor: quantised with its measured range, each channel's (last axis) squared
    error over that channel's own energy, averaged over channels (and the worst channel's). Per channel, since
    an outlier channel hides the rest in the tensor's whole energy: a range set by one channel a thousand times
    the others rounds those others to zero, a small error against the whole tensor, the whole of theirs."""
    from onnx import helper, numpy_helper

    scale, zero = ranges[name].scale_and_zero()
    tag = f"probe{number}_"
    graph.initializer.extend([numpy_helper.from_array(np.array(scale), f"{tag}scale"),
                              numpy_helper.from_array(np.array(zero), f"{tag}zero"),
                              numpy_helper.from_array(np.array([-1], np.int64), f"{tag}last"),
                              numpy_helper.from_array(np.array([2 ** 62], np.int64), f"{tag}end"),
                              numpy_helper.from_array(np.array([0], np.int64), f"{tag}rows"),
                              numpy_helper.from_array(np.array(1e-12, np.float32), f"{tag}tiny")])
    rows = {"axes": [0]} if opset < 18 else {}  # ReduceSumSquare's axes: an attribute before opset 18, then an input
    over_rows = lambda source, out: helper.make_node(  # noqa: E731
        "ReduceSumSquare", [source] if opset < 18 else [source, f"{tag}rows"], [out], keepdims=0, **rows)
    return [helper.make_node("QuantizeLinear", [name, f"{tag}scale", f"{tag}zero"], [f"{tag}q"]),
            helper.make_node("DequantizeLinear", [f"{tag}q", f"{tag}scale", f"{tag}zero"], [f"{tag}dq"]),
            helper.make_node("Sub", [name, f"{tag}dq"], [f"{tag}diff"]),
            helper.make_node("Shape", [name], [f"{tag}shape"]),
            helper.make_node("Slice", [f"{tag}shape", f"{tag}last", f"{tag}end"], [f"{tag}width"]),
            helper.make_node("Concat", [f"{tag}last", f"{tag}width"], [f"{tag}matrix"], axis=0),
            helper.make_node("Reshape", [f"{tag}diff", f"{tag}matrix"], [f"{tag}diff2d"]),
            helper.make_node("Reshape", [name, f"{tag}matrix"], [f"{tag}x2d"]),
            over_rows(f"{tag}diff2d", f"{tag}error"),
            over_rows(f"{tag}x2d", f"{tag}energy"),
            helper.make_node("Add", [f"{tag}energy", f"{tag}tiny"], [f"{tag}energy_"]),
            helper.make_node("Div", [f"{tag}error", f"{tag}energy_"], [f"{tag}ratio"]),
            helper.make_node("ReduceMean", [f"{tag}ratio"], [f"{tag}a"], keepdims=0),
            helper.make_node("ReduceMax", [f"{tag}ratio"], [f"{tag}b"], keepdims=0)]


def _opset(model) -> int:
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 17)


def _vectors(graph: bytes | str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, feeds)[0], dtype=np.float64)


def _lowest_cosine(reference: np.ndarray, vectors: np.ndarray) -> float:
    reference = reference / np.maximum(np.linalg.norm(reference, axis=1, keepdims=True), 1e-12)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return float(np.min(np.sum(reference * vectors, axis=1)))


def _tensor_types(graph) -> dict[str, int]:
    """Each tensor's element type as the exporter recorded it; one it left out feeds a matrix product of a
    float model, which is float."""
    return {info.name: info.type.tensor_type.elem_type for info in (*graph.value_info, *graph.input, *graph.output)
            if info.type.tensor_type.elem_type}


def _rewrite(graph, chosen, weights, quantised_weights: dict[str, int], ranges: dict[str, Ranges],
             bits: int = 8) -> None:
    """Swap each quantised weight for int8 values and a DequantizeLinear, and route each measured activation
    through a QuantizeLinear/DequantizeLinear pair into the chosen operators (its other readers keep the
    float tensor)."""
    from onnx import helper, numpy_helper

    added, kept = [], []
    chosen_ids = {id(node) for node in chosen}
    # a weight some other node also reads (tied weights, an operator left out) stays there in fp32 too
    shared = {name for node in graph.node if id(node) not in chosen_ids for name in node.input}
    for init in graph.initializer:
        if init.name in shared:
            kept.append(init)
        if init.name in quantised_weights:
            values, scale = _int8_per_channel(numpy_helper.to_array(init), quantised_weights[init.name], bits)
            kept += [numpy_helper.from_array(values, f"{init.name}_int8"),
                     numpy_helper.from_array(scale, f"{init.name}_scale"),
                     numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{init.name}_zero")]
            added.append(helper.make_node("DequantizeLinear", [f"{init.name}_int8", f"{init.name}_scale",
                                                               f"{init.name}_zero"], [f"{init.name}_dq"],
                                          axis=quantised_weights[init.name], name=f"{init.name}_DequantizeLinear"))
        elif init.name not in shared:
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


def _int8_per_channel(weight: np.ndarray, axis: int, bits: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 with one scale per slice along `axis`: the largest magnitude maps to 127 (63 in 7 bits)."""
    others = tuple(i for i in range(weight.ndim) if i != axis)
    top = 2 ** (bits - 1) - 1
    peak = np.max(np.abs(weight), axis=others, keepdims=True).astype(np.float32)
    scale = np.where(peak > 0, peak / top, 1.0).astype(np.float32)
    values = np.clip(np.rint(weight / scale), -top, top).astype(np.int8)
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


def too_large_for_one_file(plain: Path) -> bool:
    """Whether the graph at `plain` (and the weight files beside it) passes what one protobuf file holds."""
    return sum(f.stat().st_size for f in plain.parent.iterdir() if f.is_file()) > EXTERNAL_DATA_BYTES


def save(model, path: Path, large: bool) -> None:
    import onnx

    onnx.save_model(model, str(path), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=f"{path.name}.data")
