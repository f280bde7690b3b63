"""Near-duplicate thresholds, measured: precision and recall of grouping made copies of real photos.

    apt-get install dataset-fashion-mnist       # distinct photos of the same kind of thing
    python bench/bench_duplicates.py             # offline model and the tiny open_clip model

Originals: the real photos that ship in scikit-image and scikit-learn (a cat, coffee,
a rocket, two photos of one motorcycle taken side by side, textures of brick, grass
and gravel, ...), 40 Fashion-MNIST items of two classes, enlarged: many different
photos of the same kind of thing, and one drawn t-shirt in three colourways (black,
grey 225 and near-white 248 on white): one shape, three products. Each original gets 6 copies: resized to 50% and
75%, re-compressed as JPEG at quality 60 and 90, and cropped to 90% (centre and
corner). Texts: listings, each copied verbatim, upper-cased, re-punctuated,
re-spaced and with one typo, beside listings that differ in one attribute. Rules: an embedding cosine threshold alone; aligned thumbnail correlation
(search/pixels.py) alone, and with the same tones (channel means and spreads, as xmodal groups); both. Items are grouped by connected components over the
pairs a rule accepts; precision and recall are counted over pairs (same original =
a true pair).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from xmodal.search.pixels import compare, signature  # noqa: E402

REAL = ["astronaut.png", "brick.png", "camera.png", "chelsea.png", "clock_motion.png", "coffee.png", "coins.png",
        "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
        "motorcycle_right.png", "retina.jpg", "rocket.jpg"]


def originals(fashion_per_class: int) -> list[Image.Image]:
    from photos import COLOURWAYS, skimage_data_dir, tshirt

    photos = [Image.open(skimage_data_dir() / name).convert("RGB") for name in REAL]
    import sklearn.datasets

    folder = Path(os.path.dirname(sklearn.datasets.__file__)) / "images"
    photos += [Image.open(folder / name).convert("RGB") for name in ("china.jpg", "flower.jpg")]
    if fashion_per_class:
        from bench.export_fashion_mnist import SOURCE, read_idx

        images = read_idx(SOURCE / "t10k-images-idx3-ubyte.gz")
        labels = read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz")
        for label in (7, 8):  # sneakers, bags
            for image in images[labels == label][:fashion_per_class]:
                photos.append(Image.fromarray(255 - image).convert("RGB").resize((224, 224), Image.BICUBIC))
    return photos + [tshirt(fill) for fill in COLOURWAYS.values()]


def copies(photo: Image.Image) -> list[Image.Image]:
    w, h = photo.size
    made = [photo.resize((w // 2, h // 2), Image.BICUBIC), photo.resize((w * 3 // 4, h * 3 // 4), Image.BICUBIC)]
    for quality in (60, 90):
        buffer = io.BytesIO()
        photo.save(buffer, "JPEG", quality=quality)
        made.append(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    dw, dh = w // 20, h // 20
    made.append(photo.crop((dw, dh, w - dw, h - dh)))
    made.append(photo.crop((0, 0, w - 2 * dw, h - 2 * dh)))
    return made


def components(n: int, pairs) -> np.ndarray:
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[find(i)] = find(j)
    return np.array([find(i) for i in range(n)])


def score(groups: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    same_group = groups[:, None] == groups[None, :]
    same_truth = truth[:, None] == truth[None, :]
    upper = np.triu(np.ones_like(same_group), 1).astype(bool)
    tp = np.sum(same_group & same_truth & upper)
    predicted, actual = np.sum(same_group & upper), np.sum(same_truth & upper)
    return (tp / predicted if predicted else 1.0), tp / actual


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion-per-class", type=int, default=20)
    parser.add_argument("--models", nargs="+", default=["offline", "tiny"])
    args = parser.parse_args()
    measure_texts()
    items, truth = [], []
    for number, photo in enumerate(originals(args.fashion_per_class)):
        for picture in [photo] + copies(photo):
            items.append(picture)
            truth.append(number)
    truth = np.array(truth)
    n = len(items)
    print(f"{n} images: {len(set(truth))} originals x 7 (original + 6 copies)")
    signatures = [signature(p) for p in items]
    matches = [[compare(a, b) for b in signatures] for a in signatures]
    pixels = np.array([[m.correlation for m in row] for row in matches])
    tones = np.array([[m.same_photo(-1.0) for m in row] for row in matches])  # the tone check alone
    true_pairs = truth[:, None] == truth[None, :]
    off = ~np.eye(n, dtype=bool)
    print(f"aligned pixel correlation: copies min {pixels[true_pairs & off].min():.3f}, different photos max "
          f"{pixels[~true_pairs].max():.3f}, 99th percentile {np.percentile(pixels[~true_pairs], 99):.3f}")
    passing = [m for row, same in zip(matches, true_pairs & off) for m, s in zip(row, same)
               if s and m.correlation >= 0.98]
    print(f"copies at pixels >= 0.98: channel means differ by at most "
          f"{max(m.colour_shift for m in passing):.2f} levels, spreads by {max(m.contrast for m in passing):.3f}x")
    print(f"{'rule':<56}precision  recall")
    for bar in (0.95, 0.96, 0.97, 0.98):
        report(f"pixels >= {bar}", n, truth, pixels >= bar)
        report(f"pixels >= {bar} and same tones", n, truth, (pixels >= bar) & tones)
    for name in args.models:
        vectors = embed(name, items)
        cosine = vectors @ vectors.T
        print(f"{name}: cosine of copies median {np.median(cosine[true_pairs & off]):.4f}, min "
              f"{cosine[true_pairs & off].min():.4f}; of different photos max {cosine[~true_pairs].max():.4f}, "
              f"99th percentile {np.percentile(cosine[~true_pairs], 99):.4f}")
        for threshold in (0.5, 0.85, 0.94, 0.97, 0.99):
            report(f"{name} cosine >= {threshold}", n, truth, cosine >= threshold)
            for bar in (0.97, 0.98):
                report(f"{name} cosine >= {threshold} and pixels >= {bar}, same tones", n, truth,
                       (cosine >= threshold) & (pixels >= bar) & tones)
    print()


TEXT_BASES = [f"{adjective} {item} in {colour}, size {size}."
              for adjective, item in (("Warm wool", "pullover"), ("Light summer", "dress"), ("Classic leather", "boots"))
              for colour in ("grey", "navy") for size in ("M", "L")]


def text_copies(text: str) -> list[str]:
    """The same text again: verbatim, upper-cased, re-punctuated and re-spaced, with one typo."""
    words = text.split()
    typo = " ".join(words[:1] + [words[1][:-1]] + words[2:])
    return [text, text.upper(), text.replace(",", " -").replace(".", "!"), "  " + text.replace(" ", "  "), typo]


def measure_texts() -> None:
    from xmodal.indexer.models import load_encoder

    from conftest import CATALOG

    import csv

    with open(CATALOG / "listings.csv", newline="") as handle:
        listings = [row["description"] for row in csv.DictReader(handle)]
    texts, truth = [], []
    for number, base in enumerate(TEXT_BASES + listings):
        for copy in text_copies(base):
            texts.append(copy)
            truth.append(number)
    truth = np.array(truth)
    vectors = load_encoder("offline", device="cpu").encode_texts(texts)
    cosine = vectors @ vectors.T
    same, off = truth[:, None] == truth[None, :], ~np.eye(len(texts), dtype=bool)
    print(f"texts, offline model: {len(set(truth))} texts x 5 copies (verbatim, upper case, punctuation, spacing, "
          f"a typo); texts differing in one attribute (colour or size) are different texts")
    print(f"cosine of copies median {np.median(cosine[same & off]):.4f}, min {cosine[same & off].min():.4f}; "
          f"of different texts max {cosine[~same].max():.4f}")
    from xmodal.search.duplicates import normalised_text

    same_text = np.array([[normalised_text(a) == normalised_text(b) for b in texts] for a in texts])
    report("same text once normalised", len(texts), truth, same_text)
    for threshold in (0.9, 0.95, 0.97, 0.98, 0.99):
        report(f"offline cosine >= {threshold}", len(texts), truth, cosine >= threshold)
        report(f"offline cosine >= {threshold} and same normalised text", len(texts), truth,
               (cosine >= threshold) & same_text)


def report(rule: str, n: int, truth: np.ndarray, accepted: np.ndarray) -> None:
    pairs = [(i, j) for i, j in combinations(range(n), 2) if accepted[i, j]]
    p, r = score(components(n, pairs), truth)
    print(f"{rule:<56}{p:9.3f}  {r:6.3f}")


def embed(name: str, pictures: list[Image.Image]) -> np.ndarray:
    from xmodal.indexer.models import encode_images, load_encoder

    if name == "tiny":
        import tempfile

        from conftest import write_tiny_open_clip

        folder = write_tiny_open_clip(Path(tempfile.mkdtemp()) / "tiny")
        encoder = load_encoder(f"local-dir:{folder}", device="cpu")
    else:
        encoder = load_encoder(name, device="cpu")
    return np.concatenate([encode_images(encoder, pictures[i:i + 32]) for i in range(0, len(pictures), 32)])


if __name__ == "__main__":
    main()
