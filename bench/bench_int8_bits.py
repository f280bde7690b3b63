"""ONNX Runtime's int8 with 8-bit and with 7-bit weights, quantised by ONNX Runtime and by xmodal: lowest cosine
to fp32, speed and the time to quantise, on this CPU's kernels or, with --as-cpu, an older CPU's (bench/as_cpu.py).

    python bench/bench_int8_bits.py [--as-cpu avx2] [--out bench/results/int8_bits_cpu.txt]

The image tower of ViT-B-32 (a seeded random-weight checkpoint), exported by xmodal to ONNX (fp32), quantised by
ONNX Runtime's dynamic quantiser (reduce_range for 7 bits) and by xmodal's (models/quantise_dynamic.py, what
xmodal runs) with 8-bit weights and with 7-bit ones, run on the photos
shipped with xmodal (data/photos, the catalog's pictures, calibration's seeded pictures): each way's lowest
cosine to the fp32 graph's vectors, and images/s at batch 16 (best of 3). Without int8 dot products (VNNI), an
x86 CPU's int8 kernels sum pairs of uint8 x int8 products in 16 bits, which 8-bit weights overflow: the reason
xmodal gives int8 weights 7 bits there (inference.int8_weight_bits).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import as_cpu  # noqa: E402  (the repository's folder is on the path from here)
from bench.bench_quantise import best_rate, lowest_cosine  # noqa: E402


def exported_image_tower(work: Path) -> tuple[Path, list]:
    """The fp32 ONNX image tower xmodal exports, and the shipped photos preprocessed for it."""
    from PIL import Image

    from bench.bench_peers import write_checkpoint
    from xmodal.indexer.models.calibrate import shipped_images
    from xmodal.indexer.models.registry import load_encoder

    checkpoint = work / "vit-b-32.safetensors"
    write_checkpoint("ViT-B-32", checkpoint)
    encoder = load_encoder("ViT-B-32", str(checkpoint), "cpu", "onnx", "fp32")
    files = sorted((REPO / "data" / "photos").glob("*.jpg")) + sorted((REPO / "data" / "catalog" / "images").glob("*.png"))
    pictures = [Image.open(path) for path in files] + list(shipped_images())
    preprocessed = [encoder.preprocess_image(p) for p in pictures]
    encoder.encode_preprocessed(preprocessed[:1])  # exports the tower
    graph = next(meta.parent / "model.onnx" for meta in (work / "cache" / "xmodal" / "exported").glob("*/meta.json")
                 if json.loads(meta.read_text())["key"]["tower"] == "image")
    return graph, np.stack([np.asarray(p, np.float32) for p in preprocessed])


def run(path: Path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda batch: np.concatenate([session.run(None, {name: batch[i:i + 16]})[0]
                                         for i in range(0, len(batch), 16)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--as-cpu", choices=as_cpu.CHOICES,
                        help="as on an older CPU: its kernels, on this CPU's cores (bench/as_cpu.py)")
    parser.add_argument("--out", type=Path, help="also append the report to this file")
    args = parser.parse_args()
    if args.as_cpu:
        as_cpu.restart_as(args.as_cpu)
    logging.getLogger("root").setLevel(logging.ERROR)  # ONNX Runtime's quantiser advises on the root logger
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from bench.bench_peers import cpu_line
    from xmodal.indexer.models.quantise_dynamic import quantise_dynamic

    report = [f"python bench/bench_int8_bits.py{f' --as-cpu {args.as_cpu}' if args.as_cpu else ''}", cpu_line()]
    print("\n".join(report), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-int8-bits-") as tmp:
        work = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")
        fp32, pixels = exported_image_tower(work)
        reference = run(fp32)(pixels)
        report.append(f"ViT-B-32 image tower (random weights), {len(pixels)} shipped photos; fp32: "
                      f"{best_rate(run(fp32), pixels[:16], 16, 3):.1f} images/s")
        print(report[-1], flush=True)
        quantisers = {"ONNX Runtime's quantize_dynamic": lambda source, target, bits: quantize_dynamic(
                          str(source), str(target), weight_type=QuantType.QInt8, reduce_range=bits == 7),
                      "xmodal's quantise_dynamic": quantise_dynamic}
        for bits in (8, 7):
            for label, quantise in quantisers.items():
                quantised = work / f"int8-{bits}-{len(label)}.onnx"
                started = time.perf_counter()
                quantise(fp32, quantised, bits)
                seconds = time.perf_counter() - started
                encode = run(quantised)
                report.append(f"int8 on onnx, {bits}-bit weights, {label} ({seconds:.1f} s): lowest cosine "
                              f"{lowest_cosine(reference, encode(pixels)):.4f}, "
                              f"{best_rate(encode, pixels[:16], 16, 3):.1f} images/s")
                print(report[-1], flush=True)
    if args.out:
        with open(args.out, "a") as handle:
            handle.write("\n".join(report) + "\n\n")


if __name__ == "__main__":
    main()
