"""Static int8 quantisation (models/quantise.py): what it quantises, and the operators it leaves in fp32 where
int8 would lose fp32's vectors."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

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


# ---- int8 on a CPU without int8 dot products ------------------------------------------------------------------

@pytest.mark.parametrize("machine, flags, bits", [
    ("x86_64", {"avx2", "fma"}, 7),                        # Zen 2/3, Haswell to Comet Lake: vpmaddubsw's pairs
    ("x86_64", {"avx2", "avx512f", "avx512_vnni"}, 8),     # Cascade Lake on, Zen 4/5
    ("x86_64", {"avx2", "avx_vnni"}, 8),                   # Alder Lake's AVX-VNNI
    ("aarch64", {"asimd", "asimddp"}, 8),                  # Arm's dot products
    ("x86_64", None, 8),                                   # the system does not say: the runtime decides
])
def test_int8_weights_take_seven_bits_only_on_an_x86_cpu_without_int8_dot_products(monkeypatch, machine, flags,
                                                                                     bits):
    from xmodal.indexer.models import device, inference

    monkeypatch.setattr(device, "cpu_features", lambda: None if flags is None else frozenset(flags))
    monkeypatch.setattr(inference.platform, "machine", lambda: machine)
    assert inference.int8_weight_bits() == bits
    # and the way measured first is the one measured fastest on such a CPU
    first = next(iter(inference.offered("open_clip")))
    assert first == inference.Inference("onnx" if bits == 7 else "openvino", "int8")


def _largest_int8_weight(path) -> int:
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights, "no int8 weights"
    return max(int(np.abs(w.astype(np.int16)).max()) for w in weights)


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_int8_exports_for_a_cpu_without_int8_dot_products_keep_weights_in_seven_bits_under_their_own_key(
        tmp_path, monkeypatch, runtime):
    """On an AVX2-only CPU both int8 ways quantise weights to 7 bits (ONNX Runtime's reduce_range; xmodal's own
    quantiser for OpenVINO), cached apart from the 8-bit exports a CPU with VNNI runs."""
    from conftest import AVX2_CPU_FLAGS, CATALOG, write_tiny_open_clip
    from PIL import Image

    from xmodal.indexer.models import device
    from xmodal.indexer.models.registry import load_encoder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = f"local-dir:{write_tiny_open_clip(tmp_path / 'model', seed=12)}"
    root = tmp_path / "cache" / "xmodal" / "exported"
    largest = {}
    for flags in (AVX2_CPU_FLAGS | {"avx512f", "avx512_vnni"}, AVX2_CPU_FLAGS):
        monkeypatch.setattr(device, "cpu_features", lambda: flags)
        encoder = load_encoder(spec, None, "cpu", runtime, "int8")
        photos = [encoder.preprocess_image(Image.open(path)) for path in sorted((CATALOG / "images").glob("*.png"))[:2]]
        assert np.isfinite(encoder.encode_preprocessed(photos)).all()
        keys = {f: json.loads((f / "meta.json").read_text())["key"] for f in root.iterdir()
                if (f / "meta.json").exists()}
        for folder, key in keys.items():
            if key["tower"] == "image" and key["precision"].startswith("int8"):
                largest.setdefault(key.get("weight_bits", 8), _largest_int8_weight(folder / "model.onnx"))
    assert sorted(largest) == [7, 8]
    assert largest[7] <= 64 < largest[8] <= 127  # 2 x 255 x 64 = 32640: a pair's sum stays within 16 bits


SATURATION_CHECK = r"""
import json, sys, numpy as np, onnx, onnxruntime
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
folder = sys.argv[1]
rng = np.random.default_rng(0)
# every activation near the top of its uint8 range, every weight near the top of int8's, one sign: each pair of
# products sums past 32767 where the kernels multiply in pairs into 16 bits
weights = rng.uniform(0.9, 1.0, (256, 16)).astype(np.float32)
graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 256])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16])],
                          [numpy_helper.from_array(weights, "w")])
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), f"{folder}/plain.onnx")
x = rng.uniform(0.9, 1.0, (4, 256)).astype(np.float32)
errors = {}
for bits in (8, 7):
    quantize_dynamic(f"{folder}/plain.onnx", f"{folder}/q{bits}.onnx", weight_type=QuantType.QInt8,
                     reduce_range=bits == 7)
    session = onnxruntime.InferenceSession(f"{folder}/q{bits}.onnx", providers=["CPUExecutionProvider"])
    errors[bits] = float(np.abs(session.run(None, {"x": x})[0] / (x @ weights) - 1).max())
print(json.dumps(errors))
"""


def test_on_avx2s_kernels_8_bit_int8_weights_saturate_and_7_bit_ones_do_not(tmp_path):
    """Why 7 bits: ONNX Runtime run with AVX2's kernels (CPUID masked, bench/as_cpu.py) multiplies uint8 by
    int8 in pairs summed into 16 bits; with 8-bit weights a matrix product of large values of one sign comes out
    far too small, with 7-bit ones it is right to int8's precision."""
    from conftest import REPO

    sys.path.insert(0, str(REPO))
    from bench import as_cpu

    problem = as_cpu.can_mask() or (None if shutil.which("cc") or shutil.which("gcc") else "no C compiler")
    if problem:
        pytest.skip(f"AVX2's kernels cannot be forced on this machine: {problem}")
    env = dict(os.environ, LD_PRELOAD=str(as_cpu.library()), **{as_cpu.KIND_ENV: "avx2"})
    found = subprocess.run([sys.executable, "-c", SATURATION_CHECK, str(tmp_path)], env=env, check=True,
                           capture_output=True, text=True, timeout=120)
    errors = {int(bits): error for bits, error in json.loads(found.stdout.strip().splitlines()[-1]).items()}
    assert errors[8] > 0.2 and errors[7] < 0.02, errors


# ---- dynamic int8 (ONNX Runtime's int8 way) ---------------------------------------------------------------------

def products_graph(path, seed: int = 5) -> None:
    """x -> MatMul(w1) -> h -> Gemm(w2 transposed, bias) -> y, and x -> MatMul(w1) again -> z: a weight two
    products read, an input two products read, and Gemm's transposed weight and bias."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(scale=0.3, size=(WIDTH, HIDDEN)).astype(np.float32)
    w2 = rng.normal(scale=0.3, size=(OUT, HIDDEN)).astype(np.float32)  # Gemm's B, read transposed
    bias = rng.normal(size=OUT).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
         helper.make_node("Gemm", ["h", "w2", "b"], ["y"], name="second", transB=1),
         helper.make_node("MatMul", ["x", "w1"], ["z"], name="again")],
        "products", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", OUT]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", HIDDEN])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(bias, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.mark.parametrize("bits", [8, 7])
def test_dynamic_int8_quantises_every_constant_product_once_and_keeps_its_outputs(tmp_path, bits):
    import onnx
    import onnxruntime

    from xmodal.indexer.models.quantise_dynamic import quantise_dynamic

    products_graph(tmp_path / "plain.onnx")
    assert quantise_dynamic(tmp_path / "plain.onnx", tmp_path / "int8.onnx", bits) == 3
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    kinds = [node.op_type for node in graph.node]
    assert kinds.count("MatMulInteger") == 3 and "MatMul" not in kinds and "Gemm" not in kinds
    assert kinds.count("DynamicQuantizeLinear") == 2  # x once for both of its readers, and h
    assert {init.name for init in graph.initializer} >= {"b"} and not {"w1", "w2"} & {i.name for i in graph.initializer}
    assert _largest_int8_weight(tmp_path / "int8.onnx") == 2 ** (bits - 1) - 1
    inputs = np.random.default_rng(1).normal(size=(16, WIDTH)).astype(np.float32)
    sessions = [onnxruntime.InferenceSession(str(tmp_path / name), providers=["CPUExecutionProvider"])
                for name in ("plain.onnx", "int8.onnx")]
    (y, z), (y8, z8) = (session.run(None, {"x": inputs}) for session in sessions)
    for exact, quantised in ((y, y8), (z, z8)):
        cosines = (exact * quantised).sum(axis=1) / np.linalg.norm(exact, axis=1) / np.linalg.norm(quantised, axis=1)
        assert cosines.min() > 0.998 and not np.array_equal(exact, quantised)  # 8 outputs: one error shows
