"""Static int8 quantisation (models/quantise.py): what it quantises, and the operators it leaves in fp32 where
int8 would lose fp32's vectors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from xmodal.indexer.models import onnx_towers
from xmodal.indexer.models.inference import BF16_FLAGS, cpu_has
from xmodal.indexer.models.quantise import quantise_static

WIDTH, HIDDEN, OUT = 16, 32, 8


def outlier_graph(path, seed: int = 3) -> None:
    """x -> MatMul("first") -> h -> MatMul("second") -> y, where one channel of h is a thousand times the
    others (a real transformer's outlier channel): one int8 range for all of h leaves the rest at zero."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    first = rng.normal(scale=0.3, size=(WIDTH, HIDDEN)).astype(np.float32)
    first[:, 0] *= 1000.0
    second = rng.normal(scale=0.3, size=(HIDDEN, OUT)).astype(np.float32)
    second[0, :] /= 1000.0  # the outlier's share of y is like any other channel's
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
         helper.make_node("MatMul", ["h", "w2"], ["y"], name="second")],
        "outlier", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUT])],
        [numpy_helper.from_array(first, "w1"), numpy_helper.from_array(second, "w2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def run(path, inputs: np.ndarray) -> np.ndarray:
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": inputs})[0]


def lowest_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = (m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12) for m in (a, b))
    return float(np.min(np.sum(a * b, axis=1)))


def test_an_operator_int8_serves_badly_stays_fp32_and_the_rest_is_quantised(tmp_path):
    import onnx

    plain = tmp_path / "fp32.onnx"
    outlier_graph(plain)
    rng = np.random.default_rng(0)
    calibration, unseen = (rng.normal(size=(n, WIDTH)).astype(np.float32) for n in (64, 200))
    reference = run(plain, unseen)

    everything = quantise_static(plain, tmp_path / "all.onnx", {"x": calibration}, ("MatMul",))
    assert everything.left_out == () and everything.lowest_cosine is None  # not checked: nothing asked
    assert lowest_cosine(reference, run(tmp_path / "all.onnx", unseen)) < 0.95

    kept = quantise_static(plain, tmp_path / "kept.onnx", {"x": calibration}, ("MatMul",), holds=0.997)
    assert kept.left_out == ("second",) and kept.lowest_cosine >= 0.997
    assert lowest_cosine(reference, run(tmp_path / "kept.onnx", unseen)) >= 0.997  # on inputs it never saw
    nodes = {node.name: node for node in onnx.load(str(tmp_path / "kept.onnx")).graph.node}
    assert list(nodes["second"].input) == ["h", "w2"]  # fp32 activations and weights
    assert list(nodes["first"].input) == ["x_dq", "w1_dq"]  # int8 both, dequantised into it
    initialisers = {t.name: t for t in onnx.load(str(tmp_path / "kept.onnx")).graph.initializer}
    assert initialisers["w1_int8"].data_type == onnx.TensorProto.INT8 and "w1" not in initialisers


def test_a_graph_int8_serves_well_is_quantised_whole(tmp_path):
    import onnx
    from onnx import numpy_helper

    plain = tmp_path / "fp32.onnx"
    outlier_graph(plain)
    model = onnx.load(str(plain))
    for weight in model.graph.initializer:  # no outlier channel
        values = numpy_helper.to_array(weight).copy()
        values[:, 0] = values[:, 1] if weight.name == "w1" else values[:, 0]
        values[0, :] = values[1, :] if weight.name == "w2" else values[0, :]
        weight.CopyFrom(numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(plain))
    calibration = np.random.default_rng(0).normal(size=(64, WIDTH)).astype(np.float32)
    found = quantise_static(plain, tmp_path / "q.onnx", {"x": calibration}, ("MatMul",), holds=0.997)
    assert found.left_out == () and found.lowest_cosine >= 0.997


def test_openvino_runs_the_operators_an_export_spared_in_bf16_where_the_cpu_has_it(tmp_path):
    """The spared products run in bf16 on a bf16 CPU (faster than fp32 there, at the same cosine); a wholly
    quantised export keeps fp32 around its int8 products, and a CPU without bf16 runs fp32."""
    whole, spared = tmp_path / "whole", tmp_path / "spared"
    for folder, left_out in ((whole, []), (spared, ["second"])):
        folder.mkdir()
        (folder / onnx_towers.QUANTISED_FILE).write_text(json.dumps({"left_out": left_out, "lowest_cosine": 0.999}))
    tower = lambda folder: onnx_towers.OpenVinoTower(folder / onnx_towers.MODEL_FILE, ["x"], "int8")  # noqa: E731
    assert tower(whole).hint() == "f32"
    assert tower(spared).hint() == ("bf16" if cpu_has(*BF16_FLAGS) else "f32")


def test_a_cpu_without_bf16_runs_a_spared_export_in_fp32(tmp_path, avx2_cpu):
    (tmp_path / onnx_towers.QUANTISED_FILE).write_text(json.dumps({"left_out": ["second"], "lowest_cosine": 0.999}))
    assert onnx_towers.OpenVinoTower(tmp_path / onnx_towers.MODEL_FILE, ["x"], "int8").hint() == "f32"


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_a_spared_export_runs_on_either_runtime_close_to_fp32(tmp_path, runtime):
    plain = tmp_path / "fp32.onnx"
    outlier_graph(plain)
    rng = np.random.default_rng(1)
    calibration, unseen = (rng.normal(size=(n, WIDTH)).astype(np.float32) for n in (64, 50))
    folder = tmp_path / "export"
    folder.mkdir()
    onnx_towers.quantize_static(plain, folder / onnx_towers.MODEL_FILE, "x",
                                onnx_towers.StaticQuantisation(calibration, ("MatMul",)))
    assert onnx_towers.spared(folder) == 1
    tower = onnx_towers.load_tower(runtime, "int8", folder, ["x"])
    assert lowest_cosine(run(plain, unseen), tower(unseen)) >= 0.995
