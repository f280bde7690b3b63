"""Which fusion of a product's photo and description scores ranks products best? Measured, not guessed.

    apt-get install dataset-fashion-mnist
    python bench/bench_fusion.py --products 2000              # offline model; prints mAP / P@10 per method

A product catalogue is made from Fashion-MNIST test images (the photos) and listing
texts: a share of the listings name what the item is ("Warm wool pullover in grey,
size M"), the rest do not ("Barely worn, from a smoke-free home, size M"), as on a
real marketplace. Queries ask for each class in three phrasings; a product is
relevant when its photo is of that class. With --missing, that share of products
has no photo and as many have no description (a missing or unreadable file, an
empty cell), as real catalogues do: the part is then absent from the fusion. Each fusion method ranks all products
from the two per-part cosine similarities; mAP and precision@10 are averaged over
queries, for several shares of informative listings.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.export_fashion_mnist import CLASSES, SOURCE, read_idx  # noqa: E402
from search import metrics  # noqa: E402
from search.fusion import FUSIONS, fuse  # noqa: E402

NAMES = {"t-shirt": "t-shirt", "trouser": "trousers", "pullover": "pullover", "dress": "dress", "coat": "coat",
         "sandal": "sandals", "shirt": "shirt", "sneaker": "sneakers", "bag": "handbag", "ankle_boot": "ankle boots"}
COLOURS = ["black", "grey", "navy", "red", "beige", "white", "green", "brown"]
INFORMATIVE = ["{colour} {name}, size {size}, hardly worn.", "Warm {name} in {colour}, size {size}.",
               "Selling my {colour} {name}; fits {size}.", "{name} ({colour}), good condition, size {size}."]
UNINFORMATIVE = ["Barely worn, from a smoke-free home, size {size}.", "Great condition, {colour}, size {size}.",
                 "Moving out sale, collect today. Size {size}.", "Nice gift, {colour}, never used, size {size}."]
QUERIES = ["a {name}", "I want to buy {name}", "{name} for sale"]


def catalogue(count: int, informative_share: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = read_idx(SOURCE / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz")
    picked = rng.permutation(len(images))[:count]
    texts = []
    for i in picked:
        name = NAMES[CLASSES[labels[i]]]
        pool = INFORMATIVE if rng.random() < informative_share else UNINFORMATIVE
        template = pool[rng.integers(len(pool))]
        texts.append(template.format(name=name, colour=COLOURS[rng.integers(len(COLOURS))],
                                     size=["S", "M", "L", "XL"][rng.integers(4)]))
    return images[picked], labels[picked], texts


def photo_vectors(encoder, images: np.ndarray) -> np.ndarray:
    from PIL import Image

    from indexer.models import encode_images

    pictures = [Image.fromarray(255 - image).convert("RGB").resize((112, 112)) for image in images]
    return np.concatenate([encode_images(encoder, pictures[i:i + 64]) for i in range(0, len(pictures), 64)])


def evaluate(scores: np.ndarray, labels: np.ndarray, query_classes: np.ndarray) -> tuple[float, float]:
    relevant = query_classes[:, None] == labels[None, :]
    ranked = metrics.rank_relevance(scores, relevant)
    return float(np.mean(metrics.average_precision(ranked))), float(np.mean(metrics.precision_at_k(ranked, 10)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.2, 0.5, 0.8])
    parser.add_argument("--model", default="offline")
    parser.add_argument("--missing", type=float, nargs="+", default=[0.0, 0.15],
                        help="share of products without a photo, and as many without a description")
    args = parser.parse_args()
    from indexer.models import load_encoder

    encoder = load_encoder(args.model, device="cpu")
    started = time.perf_counter()
    images, labels, _ = catalogue(args.products, 0.0)
    photos = photo_vectors(encoder, images)
    text_classes = np.repeat(np.arange(len(CLASSES)), len(QUERIES))
    text_queries = encoder.encode_texts([q.format(name=NAMES[c]) for c in CLASSES for q in QUERIES])
    photo_queries, photo_classes = example_photos(encoder, args.products)
    print(f"model {args.model}; {args.products} products from Fashion-MNIST test images; {len(text_queries)} text "
          f"queries, {len(photo_queries)} photo queries; photos encoded in {time.perf_counter() - started:.0f} s")
    rng = np.random.default_rng(1)
    lacking = rng.permutation(args.products)
    for missing, share in [(m, s) for m in args.missing for s in args.shares]:
        _, _, texts = catalogue(args.products, share)
        descriptions = encoder.encode_texts(texts)
        cut = int(missing * args.products)
        no_photo, no_text = lacking[:cut], lacking[cut:2 * cut]
        print(f"\ninformative listings {share:.0%}, {missing:.0%} without a photo, {missing:.0%} without a description")
        for kind, queries, classes in (("text", text_queries, text_classes), ("photo", photo_queries, photo_classes)):
            image_scores, text_scores = queries @ photos.T, queries @ descriptions.T
            image_scores[:, no_photo], text_scores[:, no_text] = np.nan, np.nan
            print(f"  {kind} queries: cosine to photos median {np.nanmedian(image_scores):.3f} sd "
                  f"{np.nanstd(image_scores):.3f}, to descriptions median {np.nanmedian(text_scores):.3f} sd "
                  f"{np.nanstd(text_scores):.3f}")
            print(f"  {'method':<20}{'mAP':>8}{'P@10':>8}")
            for name, fused in methods(image_scores, text_scores):
                ap, p10 = evaluate(fused, labels, classes)
                print(f"  {name:<20}{ap:>8.3f}{p10:>8.3f}")


def methods(image_scores: np.ndarray, text_scores: np.ndarray):
    yield "photo only", np.nan_to_num(image_scores, nan=-2.0)  # a product without the part ranks last
    yield "description only", np.nan_to_num(text_scores, nan=-2.0)
    for name in FUSIONS:
        yield name, np.stack([fuse({"image": i, "text": t}, {"image": 0.5, "text": 0.5}, name)
                              for i, t in zip(image_scores, text_scores)])


def example_photos(encoder, catalogue_size: int, per_class: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Photos of each class that are not in the catalogue (catalogue() takes a prefix of one permutation)."""
    rng = np.random.default_rng(0)
    images = read_idx(SOURCE / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz")
    outside = rng.permutation(len(images))[catalogue_size:]
    chosen = np.concatenate([outside[labels[outside] == c][:per_class] for c in range(len(CLASSES))])
    return photo_vectors(encoder, images[chosen]), labels[chosen]


if __name__ == "__main__":
    main()
