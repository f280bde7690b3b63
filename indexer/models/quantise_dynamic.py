"""Dynamic int8 quantisation of an exported ONNX graph, in the form ONNX Runtime runs on its integer kernels.

Each matrix product with a constant weight (MatMul, Gemm) gets that weight in int8 (one scale for the tensor,
symmetric) and its input quantised to uint8 as it runs (DynamicQuantizeLinear): MatMulInteger, a Cast and a
Mul by the product of both scales, the pattern ONNX Runtime fuses into one integer product with a float
output. ONNX Runtime's own quantize_dynamic writes the same graph but runs onnx's shape inference over the
whole model twice per tower: 4.5 s of a first ViT-B-32 run's 21.7 s of measuring on two cores, against a
numpy pass here (bench/bench_int8_bits.py compares both).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .quantise import FLOAT, save, too_large_for_one_file


@dataclass(frozen=True)
class _Product:
    """A matrix product to quantise: its activation input, its weight, whether the weight is read transposed
    (Gemm's transB), and the bias added after (Gemm's C), if any."""

    activation: str
    weight: str
    transposed: bool
    bias: str | None


def quantise_dynamic(plain: Path, target: Path, bits: int = 8) -> int:
    """Write `plain`'s graph to `target` with its matrix products quantised; weights take `bits` (8, or 7 for
    a CPU without int8 dot products: inference.int8_weight_bits). Returns how many products were quantised."""
    import onnx

    large = too_large_for_one_file(plain)
    model = onnx.load(str(plain))
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    rewritten = _Rewriter(weights, bits)
    nodes = []
    for node in graph.node:
        product = _product(node, weights)
        nodes += rewritten.product(node, product) if product else [node]
    still_read = {name for node in nodes for name in node.input}
    kept = [init for init in graph.initializer if init.name in still_read]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + rewritten.initialisers)
    save(model, target, large)
    return rewritten.count


def _product(node, weights) -> _Product | None:
    def constant_matrix(name: str) -> bool:
        found = weights.get(name)
        return found is not None and found.data_type == FLOAT and len(found.dims) == 2

    if node.op_type == "MatMul" and constant_matrix(node.input[1]):
        return _Product(node.input[0], node.input[1], False, None)
    if node.op_type == "Gemm" and constant_matrix(node.input[1]):
        attributes = {a.name: a for a in node.attribute}
        plain = all(attributes[name].f == 1.0 for name in ("alpha", "beta") if name in attributes) \
            and ("transA" not in attributes or attributes["transA"].i == 0)
        if plain:
            transposed = "transB" in attributes and attributes["transB"].i == 1
            return _Product(node.input[0], node.input[1], transposed, node.input[2] if len(node.input) > 2 else None)
    return None


class _Rewriter:
    """The replacement nodes of each product, a weight quantised once however many products read it, and an
    activation quantised once however many products read it."""

    def __init__(self, weights, bits: int):
        self._weights = weights
        self._top = 2 ** (bits - 1) - 1
        self._quantised_weights: dict[tuple[str, bool], tuple[str, str, str]] = {}
        self._quantised_inputs: dict[str, tuple[str, str, str]] = {}
        self.initialisers: list = []
        self.count = 0

    def product(self, node, product: _Product) -> list:
        from onnx import TensorProto, helper

        added = []
        if product.activation not in self._quantised_inputs:
            names = tuple(f"{product.activation}_dq{suffix}" for suffix in ("", "_scale", "_zero"))
            added.append(helper.make_node("DynamicQuantizeLinear", [product.activation], list(names)))
            self._quantised_inputs[product.activation] = names
        values, scale, zero = self._weight(product.weight, product.transposed)
        quantised, input_scale, input_zero = self._quantised_inputs[product.activation]
        base = node.name or node.output[0]
        result = node.output[0] if product.bias is None else f"{base}_unbiased"
        added += [
            helper.make_node("Mul", [input_scale, scale], [f"{base}_scales"]),
            helper.make_node("MatMulInteger", [quantised, values, input_zero, zero], [f"{base}_int32"]),
            helper.make_node("Cast", [f"{base}_int32"], [f"{base}_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{base}_float", f"{base}_scales"], [result]),
        ]
        if product.bias is not None:
            added.append(helper.make_node("Add", [result, product.bias], [node.output[0]]))
        self.count += 1
        return added

    def _weight(self, name: str, transposed: bool) -> tuple[str, str, str]:
        from onnx import numpy_helper

        key = (name, transposed)
        if key not in self._quantised_weights:
            weight = numpy_helper.to_array(self._weights[name])
            weight = weight.T if transposed else weight
            peak = float(np.max(np.abs(weight))) if weight.size else 0.0
            scale = np.float32(peak / self._top if peak > 0 else 1.0)
            values = np.clip(np.rint(weight / scale), -self._top, self._top).astype(np.int8)
            stem = f"{name}{'_t' if transposed else ''}"
            names = (f"{stem}_int8", f"{stem}_scale", f"{stem}_zero")
            self.initialisers += [numpy_helper.from_array(np.ascontiguousarray(values), names[0]),
                                  numpy_helper.from_array(np.array(scale, np.float32), names[1]),
                                  numpy_helper.from_array(np.array(0, np.int8), names[2])]
            self._quantised_weights[key] = names
        return self._quantised_weights[key]
