"""Indexing throughput against the model's own batch-encode speed, measured in one run.

    python bench/bench_index.py --model tiny --images 2000
    python bench/bench_index.py --model ViT-B-32 --pretrained none --images 200

Prints items/s for: the model alone on preprocessed batches, and a whole
`build_index` (decode in workers + preprocess + encode + write).
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def make_photos(folder: Path, count: int, size=(640, 480)) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    for i in range(count):
        # Smooth, photo-like content (upscaled noise), so JPEG decoding costs what a photo costs.
        tile = np.roll(base, i, axis=(0, 1))
        Image.fromarray(tile).resize(size, Image.BILINEAR).save(folder / f"p{i:06d}.jpg", quality=90)


def photo_folder(root: Path, count: int, size=(1024, 768)) -> tuple[Path, list[str]]:
    """root/photos holding `count` photo-like JPEGs, and their paths in order."""
    folder = root / "photos"
    folder.mkdir()
    make_photos(folder, count, size)
    return folder, sorted(str(p) for p in folder.iterdir())


def bench_encoder(spec: str, pretrained: str | None, device: str, workdir: Path):
    """'tiny' is the test suite's random-weight open_clip config; anything else is a model spec."""
    from xmodal.indexer.models import load_encoder

    if spec == "tiny":
        from conftest import write_tiny_open_clip
        spec = f"local-dir:{write_tiny_open_clip(workdir / 'tiny')}"
    return load_encoder(spec, pretrained, device)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny", help="'tiny' (random-weight test config) or an open_clip spec")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import torch

    from xmodal.indexer import IndexConfig, build_index

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = tmp / "photos"
        photos.mkdir()
        make_photos(photos, args.images)
        encoder = bench_encoder(args.model, args.pretrained, args.device, tmp)

        sample = Image.open(next(photos.iterdir())).convert("RGB")
        batch = [encoder.preprocess_image(sample)] * args.batch_size
        encoder.encode_preprocessed(batch)  # warm-up
        rounds = max(2, min(20, args.images // args.batch_size))
        start = time.perf_counter()
        for _ in range(rounds):
            encoder.encode_preprocessed(batch)
        model_rate = rounds * args.batch_size / (time.perf_counter() - start)

        report = build_index(tmp / "index", IndexConfig(images=[photos], batch_size=args.batch_size,
                                                        workers=args.workers), encoder=encoder)
        print(f"machine: {platform.node()} {platform.machine()}, {torch.get_num_threads()} torch threads, "
              f"device {encoder.device}")
        print(f"model: {encoder.identity.describe()}, batch {args.batch_size}, {args.images} JPEGs 640x480")
        print(f"model only (preprocessed batches): {model_rate:,.1f} images/s")
        print(f"build_index end to end:            {report.items_per_second:,.1f} images/s "
              f"({report.seconds:.1f} s)")
        stages = ", ".join(f"{k} {v:.2f}s" for k, v in report.stage_seconds.items())
        print(f"stages: {stages}")


if __name__ == "__main__":
    main()
