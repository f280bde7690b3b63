"""Choose an offline model's settings by measurement: top-K classes mixed, and the class prompt.

    python bench/export_fashion_mnist.py bench/out/fmnist
    python bench/tune_offline.py bench/out/fmnist [--limit 2000] [--model offline-multilingual]
    python bench/tune_offline.py bench/out/fmnist --limit 3000 --held-out bench/out/fmnist-heldout --link-only
    xmodal eval bench/out/fmnist-heldout --model offline-multilingual   # the images no setting was chosen on

Class probabilities are computed once; each (prompt, K) pair is then scored on
the labelled folder (zero-shot top-1, precision@10, mAP, as `xmodal eval`
computes them) and on the scikit-image sample photos (right photo first).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from xmodal.indexer.build.decode import DecodedImage, iter_decoded  # noqa: E402
from xmodal.indexer.models.offline import VARIANTS, conse_mix, load_offline, _class_names  # noqa: E402
from xmodal.search import metrics  # noqa: E402
from xmodal.search.evaluation import _labelled_folder  # noqa: E402

PROMPTS = ["a photo of a {}.", "a photo of a {}", "{}", "a picture of a {}, a type of object"]
KS = [1, 3, 5, 10, 20, 50]


def probabilities(encoder, paths, workers=1, batch_size=64):
    pixels = [item.pixels for item in iter_decoded(paths, encoder.preprocess_image, workers)
              if isinstance(item, DecodedImage)]
    return np.concatenate([encoder.class_probabilities(pixels[i:i + batch_size])
                           for i in range(0, len(pixels), batch_size)])


def link_held_out(paths: list[str], folder: Path) -> None:
    import os

    for path in map(Path, paths):
        target = folder / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(path, target)
    print(f"{len(paths)} held-out images linked into {folder}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--model", choices=sorted(VARIANTS), default="offline")
    parser.add_argument("--held-out", type=Path, help="hard-link the images outside the --limit sample here, one "
                                                      "subfolder per class, for xmodal eval")
    parser.add_argument("--link-only", action="store_true", help="with --held-out: link, and tune nothing")
    args = parser.parse_args()
    from photos import SAMPLE_PHOTOS, sample_photo_paths

    paths, labels, classes = _labelled_folder(args.folder)
    if args.limit:
        sample = list(np.random.default_rng(0).permutation(paths)[: args.limit])
        if args.held_out:
            link_held_out(sorted(set(paths) - set(sample)), args.held_out)
        paths = sample
    if args.link_only:
        return
    encoder = load_offline(None, "cpu", spec=args.model)
    print(f"model: {encoder.identity.describe()}")
    start = time.perf_counter()
    probs = probabilities(encoder, paths)
    print(f"{len(paths)} images classified in {time.perf_counter() - start:.1f} s")
    truth = np.array([labels[p] for p in paths])
    queries = encoder.encode_texts([f"a photo of a {c.replace('_', ' ')}" for c in classes])
    relevant = truth[None, :] == np.arange(len(classes))[:, None]
    photo_paths = sample_photo_paths()
    photo_probs = probabilities(encoder, photo_paths, workers=0)
    photo_queries = encoder.encode_texts([q for q, _ in SAMPLE_PHOTOS])
    print(f"{'prompt':<40} {'K':>3} {'top1':>6} {'P@10':>6} {'mAP':>6} {'photos@1':>8}")
    for prompt in PROMPTS:
        class_emb = encoder.encode_texts([prompt.format(c) for c in _class_names()])
        for k in KS:
            vectors = conse_mix(probs, class_emb, k)
            ranked = metrics.rank_relevance(queries @ vectors.T, relevant)
            top1 = metrics.hit_at_k(metrics.rank_relevance(vectors @ queries.T, relevant.T), 1).mean()
            photo_vectors = conse_mix(photo_probs, class_emb, k)
            photos = np.mean(np.argmax(photo_queries @ photo_vectors.T, axis=1) == np.arange(len(photo_paths)))
            print(f"{prompt!r:<40} {k:>3} {top1:6.3f} {metrics.precision_at_k(ranked, 10).mean():6.3f} "
                  f"{np.nanmean(metrics.average_precision(ranked)):6.3f} {photos:8.2f}")


if __name__ == "__main__":
    main()
