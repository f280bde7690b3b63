"""The GPU figures issue 11 asks for, in one run on a machine with a CUDA GPU (runs on a CPU too, smaller).

    python bench/bench_gpu.py --images 4000 --vectors 1000000,10000000        # on a GPU machine
    python bench/bench_gpu.py --device cpu --images 200 --vectors 100000      # checks the script here

Prints, each as items/s or ms:
- the model alone in fp16 (ViT-B-32, random weights), and `build_index` end to end on photo-like JPEGs
  (1024x768) with the model already loaded: JPEGs decoded on the GPU, and by CPU workers;
- JPEG decoding alone: GPU batches (torchvision nvJPEG) against the CPU workers (reduced decode);
- exact search over N x 512 vectors scanned on the device (search/scan.py, fp16), 1 query and batches of
  1000: p50/p95 latency, queries/s, and the memory-bandwidth bound (one pass over N x 512 fp16 at the
  device's bandwidth, given with --bandwidth GB/s).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_index import photo_folder  # noqa: E402


def timed(function, repeat: int = 1) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - started) / repeat


def model_rate(encoder, batch: int = 256) -> float:
    import torch

    pixels = [np.zeros((3, 224, 224), np.float32)] * batch
    encoder.encode_preprocessed(pixels)
    if encoder.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = timed(lambda: encoder.encode_preprocessed(pixels), repeat=5)
    return batch / seconds


def decode_rates(encoder, paths: list[str], device: str) -> dict[str, float]:
    from xmodal.indexer.build.decode import default_workers, iter_decoded
    from xmodal.indexer.build.gpu_decode import DeviceJpegDecoder

    rates = {}
    workers = default_workers()
    seconds = timed(lambda: list(iter_decoded(paths, encoder.preprocess_image, workers, min_side=224)))
    rates[f"CPU workers ({workers}), reduced decode + preprocess"] = len(paths) / seconds
    decoder = DeviceJpegDecoder(encoder.recipe, device)
    list(decoder.decode(paths[:64]))  # warm-up: nvJPEG handles, kernels
    rates[f"{device} batches (nvJPEG), decode + preprocess"] = len(paths) / timed(lambda: list(decoder.decode(paths)))
    return rates


def end_to_end(encoder, folder: Path, workdir: Path, on_device: bool) -> float:
    import xmodal.indexer.build.encode_files as encode
    from xmodal.indexer import IndexConfig, build_index

    out = workdir / ("gpu-decode" if on_device else "cpu-decode")
    chosen = encode.gpu_decoding_available
    if not on_device:
        encode.gpu_decoding_available = lambda device: False  # as on a machine without nvJPEG: CPU workers
    try:
        return build_index(out, IndexConfig(images=[folder]), encoder=encoder).items_per_second
    finally:
        encode.gpu_decoding_available = chosen


def search_figures(rows: int, device: str, bandwidth: float) -> str:
    from xmodal.search.scan import TorchScan
    from xmodal.search.vectors import StoredVectors, VectorPart

    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((rows, 512), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    part = VectorPart(np.arange(rows, dtype=np.int64), matrix)
    part.scan = TorchScan(matrix, None, device)
    stored = StoredVectors([part])
    queries = matrix[rng.integers(0, rows, 1000)] + 0.1 * rng.standard_normal((1000, 512), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    stored.search(queries[:8], 10)  # warm-up
    single = [timed(lambda q=q: stored.search(q[None], 10)) * 1000 for q in queries[:200]]
    batch = timed(lambda: stored.search(queries, 10))
    bound_ms = rows * 512 * (2 if device != "cpu" else 4) / (bandwidth * 1e9) * 1000
    return (f"  {rows:>11,} x 512: 1 query p50 {np.percentile(single, 50):.2f} ms, p95 {np.percentile(single, 95):.2f} ms; "
            f"1000 queries in {batch * 1000:.1f} ms = {1000 / batch:,.0f} queries/s; one pass at "
            f"{bandwidth:g} GB/s: {bound_ms:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--vectors", default="1000000,10000000", help="comma-separated collection sizes")
    parser.add_argument("--bandwidth", type=float, default=3350.0, help="device memory GB/s (H100 SXM: 3350)")
    args = parser.parse_args()

    import torch

    from xmodal.indexer.models import load_encoder

    print(f"torch {torch.__version__}; device {args.device}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    encoder = load_encoder("ViT-B-32", "none", args.device)
    print(f"model only ({encoder.identity.describe()}, {'fp16' if args.device != 'cpu' else 'fp32'}): "
          f"{model_rate(encoder):,.0f} images/s")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder, paths = photo_folder(tmp, args.images)
        for name, rate in decode_rates(encoder, paths, args.device).items():
            print(f"decoding only, {name}: {rate:,.0f} images/s")
        for on_device in (True, False):
            rate = end_to_end(encoder, folder, tmp, on_device)
            print(f"build_index end to end, model loaded, JPEGs decoded {'on the device' if on_device else 'by CPU workers'}:"
                  f" {rate:,.0f} images/s")
    print("exact search scanned on the device (fp16 shortlist, float32 re-score):")
    for rows in (int(r) for r in args.vectors.split(",")):
        print(search_figures(rows, args.device, args.bandwidth))


if __name__ == "__main__":
    main()
