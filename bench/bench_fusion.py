"""Which fusion of a product's photo and description scores ranks products best? Measured, not guessed.

    apt-get install dataset-fashion-mnist
    python bench/bench_fusion.py --products 2000                 # offline model
    python bench/bench_fusion.py --products 2000 --model tiny    # a random-weight tiny CLIP (no signal)

A product catalogue is made from Fashion-MNIST test images (the photos) and listing
texts: a share of the listings name what the item is ("Warm wool pullover in grey,
size M"), the rest do not ("Barely worn, from a smoke-free home, size M"), as on a
real marketplace. Class queries ask for each class in three phrasings (text queries)
or show photos of it from outside the catalogue (photo queries); a product is relevant
when its photo is of that class. With --missing, that share of products has no photo
and as many have no description, as real catalogues do.

Each method ranks all products from the two per-part cosines, as the engine does
(search/fusion.py: population statistics, the spread floor, identical matches first).
Printed per condition and query kind: mAP and P@10 of "before" (every query fused
0.5/0.5, no spread floor: the defaults until issue 20) and of today's defaults by query
kind, then the share of products that their own photo, or their own description, as
the query ranks first (among products whose photo, or description, differs from it).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.export_fashion_mnist import CLASSES, SOURCE, read_idx  # noqa: E402
from xmodal.search import metrics  # noqa: E402
from xmodal.search.fusion import FUSIONS, default_weights, fuse, identical_to_query  # noqa: E402

NAMES = {"t-shirt": "t-shirt", "trouser": "trousers", "pullover": "pullover", "dress": "dress", "coat": "coat",
         "sandal": "sandals", "shirt": "shirt", "sneaker": "sneakers", "bag": "handbag", "ankle_boot": "ankle boots"}
COLOURS = ["black", "grey", "navy", "red", "beige", "white", "green", "brown"]
INFORMATIVE = ["{colour} {name}, size {size}, hardly worn.", "Warm {name} in {colour}, size {size}.",
               "Selling my {colour} {name}; fits {size}.", "{name} ({colour}), good condition, size {size}."]
UNINFORMATIVE = ["Barely worn, from a smoke-free home, size {size}.", "Great condition, {colour}, size {size}.",
                 "Moving out sale, collect today. Size {size}.", "Nice gift, {colour}, never used, size {size}."]
QUERIES = ["a {name}", "I want to buy {name}", "{name} for sale"]
PHOTO_SIDE = 112  # catalogue photos: Fashion-MNIST's 28x28, dark on light, enlarged
BEFORE = {"image": 0.5, "text": 0.5}  # every query's weights until issue 20


def fashion_sample(count: int, seed: int = 0, source: Path = SOURCE) -> tuple[np.ndarray, np.ndarray]:
    """`count` Fashion-MNIST test images (28x28, white on black) and their labels, in a seeded order."""
    images = read_idx(source / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(source / "t10k-labels-idx1-ubyte.gz")
    picked = np.random.default_rng(seed).permutation(len(images))[:count]
    return images[picked], labels[picked]


def listings(labels: np.ndarray, informative_share: float, seed: int = 0) -> list[str]:
    """A listing text per product: a share name the item's class, the rest do not."""
    rng = np.random.default_rng(seed)
    texts = []
    for label in labels:
        name = NAMES[CLASSES[label]]
        pool = INFORMATIVE if rng.random() < informative_share else UNINFORMATIVE
        template = pool[rng.integers(len(pool))]
        texts.append(template.format(name=name, colour=COLOURS[rng.integers(len(COLOURS))],
                                     size=["S", "M", "L", "XL"][rng.integers(4)]))
    return texts


def photo(image: np.ndarray):
    """A catalogue photo from a Fashion-MNIST image: dark garment on a light background."""
    from PIL import Image

    return Image.fromarray(255 - image).convert("RGB").resize((PHOTO_SIDE, PHOTO_SIDE))


def photo_vectors(encoder, images: np.ndarray) -> np.ndarray:
    from xmodal.indexer.models import encode_images

    pictures = [photo(image) for image in images]
    return np.concatenate([encode_images(encoder, pictures[i:i + 64]) for i in range(0, len(pictures), 64)])


def ranked_scores(image_scores: np.ndarray, text_scores: np.ndarray, weights: dict[str, float], method: str,
                  floor: float | None, identity: bool) -> np.ndarray:
    """Per query, a score per product whose order is the engine's order (identical matches lifted first)."""
    out = np.empty(image_scores.shape)
    for q, (i, t) in enumerate(zip(image_scores, text_scores)):
        parts = {"image": i, "text": t}
        population = {p: (float(np.nanmean(v)), float(np.nanstd(v))) for p, v in parts.items()}
        extra = {} if floor is None else {"spread_floor": floor}
        out[q] = fuse(parts, weights, method, population, **extra)
        if identity:
            out[q] += 1e6 * identical_to_query(parts, weights)
    return out


def evaluate(scores: np.ndarray, labels: np.ndarray, query_classes: np.ndarray) -> tuple[float, float]:
    relevant = query_classes[:, None] == labels[None, :]
    ranked = metrics.rank_relevance(scores, relevant)
    return float(np.mean(metrics.average_precision(ranked))), float(np.mean(metrics.precision_at_k(ranked, 10)))


def own_first(scores: np.ndarray, rivals: np.ndarray) -> float:
    """Share of queries q whose product q ranks first among its rivals (ties go to the lower row id)."""
    n = scores.shape[1]
    mine = scores[np.arange(len(scores)), np.arange(len(scores))][:, None]
    better = (scores > mine) | ((scores == mine) & (np.arange(n)[None, :] < np.arange(len(scores))[:, None]))
    return float(np.mean(~(better & rivals).any(axis=1)))


def load_model(name: str):
    from xmodal.indexer.models import load_encoder

    if name != "tiny":
        return load_encoder(name, device="cpu")
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from conftest import write_tiny_open_clip

    folder = write_tiny_open_clip(Path(tempfile.mkdtemp()) / "tiny")
    return load_encoder(f"local-dir:{folder}", device="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.2, 0.5, 0.8])
    parser.add_argument("--model", default="offline", help="a model spec, or 'tiny' for a random-weight tiny CLIP")
    parser.add_argument("--missing", type=float, nargs="+", default=[0.0, 0.15],
                        help="share of products without a photo, and as many without a description")
    parser.add_argument("--own", type=int, default=400, help="products whose own photo and description are queried")
    parser.add_argument("--write-sample", type=Path, help="only write the catalogue's images and labels (.npz)")
    args = parser.parse_args()
    images, labels = fashion_sample(args.products)
    if args.write_sample:
        np.savez_compressed(args.write_sample, images=images, labels=labels)
        return
    encoder = load_model(args.model)
    started = time.perf_counter()
    photos = photo_vectors(encoder, images)
    text_classes = np.repeat(np.arange(len(CLASSES)), len(QUERIES))
    text_queries = encoder.encode_texts([q.format(name=NAMES[c]) for c in CLASSES for q in QUERIES])
    photo_queries, photo_classes = example_photos(encoder, args.products)
    own = np.linspace(0, args.products - 1, min(args.own, args.products)).astype(int)
    print(f"model {args.model}; {args.products} products from Fashion-MNIST test images; {len(text_queries)} text "
          f"queries, {len(photo_queries)} photo queries, {len(own)} products queried by their own photo and "
          f"description; photos encoded in {time.perf_counter() - started:.0f} s")
    lacking = np.random.default_rng(1).permutation(args.products)
    for missing, share in [(m, s) for m in args.missing for s in args.shares]:
        texts = listings(labels, share)
        descriptions = encoder.encode_texts(texts)
        cut = int(missing * args.products)
        no_photo, no_text = lacking[:cut], lacking[cut:2 * cut]
        print(f"\ninformative listings {share:.0%}, {missing:.0%} without a photo, {missing:.0%} without a description")
        for kind, queries, classes in (("text", text_queries, text_classes), ("image", photo_queries, photo_classes)):
            image_scores, text_scores = queries @ photos.T, queries @ descriptions.T
            image_scores[:, no_photo], text_scores[:, no_text] = np.nan, np.nan
            print(f"  {'photo' if kind == 'image' else 'text'} queries: cosine to photos median "
                  f"{np.nanmedian(image_scores):.3f} sd {np.nanstd(image_scores):.3f}, to descriptions median "
                  f"{np.nanmedian(text_scores):.3f} sd {np.nanstd(text_scores):.3f}; defaults {default_weights(kind)}")
            print(f"  {'method':<18}{'mAP before':>11}{'P@10':>7}{'mAP now':>10}{'P@10':>7}")
            for name, before, now in methods(image_scores, text_scores, kind):
                (ap0, p0), (ap1, p1) = evaluate(before, labels, classes), evaluate(now, labels, classes)
                print(f"  {name:<18}{ap0:>11.3f}{p0:>7.3f}{ap1:>10.3f}{p1:>7.3f}")
        own_queries(photos, descriptions, texts, own, no_photo, no_text)


def methods(image_scores: np.ndarray, text_scores: np.ndarray, kind: str):
    photo_only, text_only = np.nan_to_num(image_scores, nan=-2.0), np.nan_to_num(text_scores, nan=-2.0)
    yield "photo only", photo_only, photo_only  # a product without the part ranks last
    yield "description only", text_only, text_only
    for name in FUSIONS:
        yield (name, ranked_scores(image_scores, text_scores, BEFORE, name, 0.0, False),
               ranked_scores(image_scores, text_scores, default_weights(kind), name, None, True))


def own_queries(photos: np.ndarray, descriptions: np.ndarray, texts: list[str], own: np.ndarray,
                no_photo: np.ndarray, no_text: np.ndarray) -> None:
    """Each of the `own` products queried by its own photo and its own description: is it first?"""
    has_photo = np.setdiff1d(own, no_photo)
    has_text = np.setdiff1d(own, no_text)
    line = []
    for kind, chosen, vectors in (("image", has_photo, photos), ("text", has_text, descriptions)):
        queries = vectors[chosen]
        image_scores, text_scores = queries @ photos.T, queries @ descriptions.T
        image_scores[:, no_photo], text_scores[:, no_text] = np.nan, np.nan
        order = np.r_[chosen, np.setdiff1d(np.arange(len(photos)), chosen)]  # query q's product at column q
        image_scores, text_scores = image_scores[:, order], text_scores[:, order]
        # Rivals: products whose photo (its vector, byte for byte) or description differs from the query's.
        keys = [v.tobytes() for v in vectors] if kind == "image" else list(texts)
        codes = np.unique(np.array(keys, dtype=object)[order].astype(str) if kind == "text" else
                          np.array([hash(k) for k in keys])[order], return_inverse=True)[1]
        rivals = codes[None, :] != codes[:len(chosen), None]
        for name in FUSIONS:
            before = ranked_scores(image_scores, text_scores, BEFORE, name, 0.0, False)
            now = ranked_scores(image_scores, text_scores, default_weights(kind), name, None, True)
            line.append(f"{'photo' if kind == 'image' else 'description'} {name} {own_first(before, rivals):.3f}"
                        f"->{own_first(now, rivals):.3f}")
    print("  own product first (before->now): " + ", ".join(line))


def example_photos(encoder, catalogue_size: int, per_class: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Photos of each class that are not in the catalogue (fashion_sample takes a prefix of one permutation)."""
    images, labels = fashion_sample(10_000)
    outside, outside_labels = images[catalogue_size:], labels[catalogue_size:]
    chosen = np.concatenate([np.flatnonzero(outside_labels == c)[:per_class] for c in range(len(CLASSES))])
    return photo_vectors(encoder, outside[chosen]), outside_labels[chosen]


if __name__ == "__main__":
    main()
