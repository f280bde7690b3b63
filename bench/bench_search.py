"""Search latency (p50/p95) through the public API, for N stored 512-d vectors.

    python bench/bench_search.py --sizes 10000 100000 --queries 300

Builds a real index with `build_index` (texts embedded by a seeded random
encoder, clustered like real embeddings), opens it with `open_index`, and
times `search_vector` (ANN search + item lookup + typed hits), one query at a time.
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.models import ModelIdentity, l2_normalize
from xmodal.search import open_index

DIM = 512
CENTRES = np.random.default_rng(0).normal(size=(256, DIM)).astype(np.float32)


class SeededTextEncoder:
    """Each text -> a fixed point near one of 256 centres (clustered, like real embeddings)."""

    def __init__(self):
        self.device = "cpu"
        self.identity = ModelIdentity("bench", "bench-seeded", None, DIM, {}, {})

    def preprocess_image(self, image):
        raise NotImplementedError

    def encode_preprocessed(self, batch):
        raise NotImplementedError

    def encode_texts(self, texts):
        rows = []
        for text in texts:
            rng = np.random.default_rng(zlib.crc32(text.encode()))
            rows.append(CENTRES[rng.integers(0, len(CENTRES))] + 0.5 * rng.normal(size=DIM))
        return l2_normalize(np.array(rows))


def percentile_ms(samples, q):
    return float(np.percentile(samples, q) * 1000)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--index-type", default="auto")
    args = parser.parse_args()
    encoder = SeededTextEncoder()
    print(f"machine: {platform.node()} {platform.machine()}; {DIM}-d, k={args.k}, one query at a time")
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "texts.txt"
            corpus.write_text("\n".join(f"item {i}" for i in range(size)))
            build_index(Path(tmp) / "index", IndexConfig(texts=[corpus], batch_size=4096,
                                                         index_type=args.index_type), encoder=encoder)
            idx = open_index(Path(tmp) / "index", encoder=encoder)
            queries = encoder.encode_texts([f"query {i}" for i in range(args.queries)])
            idx.search_vector(queries[0], target="text", k=args.k)  # load the index file
            samples = []
            for query in queries:
                start = time.perf_counter()
                idx.search_vector(query, target="text", k=args.k)
                samples.append(time.perf_counter() - start)
            kind = idx.manifest.ann["text"].kind
            print(f"{size:>9,} vectors ({kind}): p50 {percentile_ms(samples, 50):.2f} ms, "
                  f"p95 {percentile_ms(samples, 95):.2f} ms, {len(samples) / sum(samples):,.0f} queries/s")


if __name__ == "__main__":
    main()
