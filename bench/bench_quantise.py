"""What a static int8 export costs, and what it gives: ONNX Runtime's quantiser against xmodal's own
(indexer/models/quantise.py), on ViT-B-32's two towers (seeded random weights).

    python bench/bench_quantise.py [--repeats 2]

For each tower, from the same fp32 ONNX export and the same calibration inputs (the 16 pictures and 32
captions shipped for measuring ways): seconds to quantise (best of --repeats), then each result converted to
OpenVINO and run on its int8 kernels: photos or texts per second model-only (batch 16), and the lowest cosine
to fp32 over the repository's photos (data/photos, data/catalog/images) and the demo catalog's texts.
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def real_inputs(recipe, context: int) -> dict[str, np.ndarray]:
    import open_clip
    from PIL import Image

    photos = sorted([*(REPO / "data" / "photos").glob("*.jpg"), *(REPO / "data" / "catalog" / "images").iterdir()])
    pixels = np.stack([np.asarray(recipe(Image.open(p).convert("RGB")), np.float32) for p in photos])
    with open(REPO / "data" / "catalog" / "listings.csv", newline="") as handle:
        texts = [" ".join(v for v in row.values() if v) for row in csv.DictReader(handle)]
    texts += ["I want to buy a red car", "a pair of running shoes", "a coffee mug", "a black handbag"]
    return {"image": pixels, "text": open_clip.tokenize(texts, context).numpy()}


def onnxruntime_quantise(plain: Path, target: Path, name: str, inputs: np.ndarray, operators) -> None:
    """ONNX Runtime's static quantiser as xmodal called it before its own (same settings, same QDQ form)."""
    import logging

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    logging.getLogger("root").setLevel(logging.ERROR)

    class OneBatch(CalibrationDataReader):
        def __init__(self):
            self._left = [{name: inputs}]

        def get_next(self):
            return self._left.pop() if self._left else None

    quantize_static(str(plain), str(target), OneBatch(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=list(operators))


def ov_run(path: Path, inputs: np.ndarray, name: str) -> tuple[np.ndarray, float]:
    import openvino

    compiled = openvino.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    run = lambda batch: np.asarray(compiled({name: batch})[compiled.output(0)])  # noqa: E731
    vectors = np.concatenate([run(inputs[i:i + 16]) for i in range(0, len(inputs), 16)])
    return vectors, best_rate(run, np.resize(inputs, (16, *inputs.shape[1:])), 16, 3)


def best_rate(run, batch, size: int, repeats: int) -> float:
    """Items per second of `run(batch)` (`size` items), the best of `repeats` timings after a warm-up."""
    run(batch)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        run(batch)
        best = max(best, size / (time.perf_counter() - start))
    return best


def lowest_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import open_clip
    import torch

    from xmodal.indexer.models import onnx_towers, quantise
    from xmodal.indexer.models.calibrate import SHIPPED_TEXTS, shipped_images
    from xmodal.indexer.models.openclip_onnx import export_tower
    from xmodal.indexer.models.recipe import ImageRecipe

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32").eval()
    recipe = ImageRecipe.from_config({"size": 224})
    real = real_inputs(recipe, model.context_length)
    calibration = {"image": np.stack([np.asarray(recipe(p), np.float32) for p in shipped_images()]),
                   "text": open_clip.tokenize(list(SHIPPED_TEXTS), model.context_length).numpy()}
    operators = {"image": ("MatMul", "Gemm", "Conv"), "text": ("MatMul", "Gemm", "Gather")}
    names = {"image": "pixels", "text": "tokens"}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        for tower in ("image", "text"):
            folder = work / tower
            folder.mkdir()
            export_tower(model, tower, folder)
            plain = folder / onnx_towers.MODEL_FILE
            reference, fp32_rate = ov_run(plain, real[tower], names[tower])
            print(f"{tower}: fp32 on openvino {fp32_rate:.1f} items/s model-only", flush=True)
            for quantiser in ("onnxruntime", "xmodal"):
                seconds, target = [], folder / f"{quantiser}.onnx"
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    if quantiser == "onnxruntime":
                        onnxruntime_quantise(plain, target, names[tower], calibration[tower], operators[tower])
                    else:
                        quantise.quantise_static(plain, target, {names[tower]: calibration[tower]}, operators[tower])
                    seconds.append(time.perf_counter() - started)
                vectors, rate = ov_run(target, real[tower], names[tower])
                print(f"  {quantiser:11s} quantised in {min(seconds):5.2f} s; int8 on openvino {rate:6.1f} items/s, "
                      f"lowest cosine to fp32 {lowest_cosine(reference, vectors):.4f} over {len(vectors)} "
                      f"{'photos' if tower == 'image' else 'texts'}", flush=True)


if __name__ == "__main__":
    main()
