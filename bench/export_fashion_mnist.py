"""Export Fashion-MNIST's test split (Debian package dataset-fashion-mnist) as a labelled folder.

    apt-get install dataset-fashion-mnist
    python bench/export_fashion_mnist.py bench/out/fashion-mnist-test [--limit 1000]
    xmodal eval bench/out/fashion-mnist-test --model offline
"""
from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

SOURCE = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--limit", type=int, default=None, help="first N test images only")
    args = parser.parse_args()
    images = read_idx(args.source / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(args.source / "t10k-labels-idx1-ubyte.gz")
    count = len(images) if args.limit is None else min(args.limit, len(images))
    for name in CLASSES:
        (args.out / name).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        # Fashion-MNIST is white-on-black; photos of garments are dark-on-light.
        Image.fromarray(255 - images[i]).save(args.out / CLASSES[labels[i]] / f"{i:05d}.png")
    print(f"wrote {count} images in {len(CLASSES)} classes to {args.out}")


if __name__ == "__main__":
    main()
