"""Filtered search latency (p50/p95) against unfiltered, at 100k items, for several selectivities.

    python bench/bench_filtered.py --size 100000 --index-types flat hnsw ivf

Each item carries a metadata column `bucket` (0..999): `bucket < 500` admits 50%,
`bucket < 50` 5%, `bucket < 1` 0.1%; and a `title` that `contains` filters select
at the same rates ("Car" or "Mug" by the bucket's parity, "sale" in the lowest 50
buckets, "rare" in the lowest), matched ignoring case. Queries go one at a time
through the public API (`search_vector(..., where=...)`: filter parsing and
evaluation on Arrow, then the search), and recall@10 is measured against brute
force over the filtered set; the set a `contains` filter admits is checked against
Python's own `in` first. An open index remembers the rows its last 64 filters
admitted, so the same filter again costs only the search ("cached"); "evaluated"
times the same queries with the filter evaluated for each one, as a new filter is.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_search import SeededTextEncoder, percentile_ms  # noqa: E402
from xmodal.indexer import IndexConfig, build_index  # noqa: E402
from xmodal.search import open_index  # noqa: E402
from xmodal.search.filters import parse_filter  # noqa: E402

FILTERS = {"unfiltered": None, "50%": "bucket < 500", "5%": "bucket < 50", "0.1%": "bucket < 1",
           "contains 50%": "title contains 'CAR'", "contains 5%": "title contains 'sale'",
           "contains 0.1%": "title contains 'rare'", "not contains 50%": "title not contains 'car'"}
CONTAINS = {"title contains 'CAR'": lambda t: "car" in t.lower(), "title contains 'sale'": lambda t: "sale" in t,
            "title contains 'rare'": lambda t: "rare" in t, "title not contains 'car'": lambda t: "car" not in t.lower()}


def title(i: int, bucket: int) -> str:
    return f"{'Car' if bucket % 2 else 'Mug'} {'sale ' if bucket < 50 else ''}{'rare ' if bucket < 1 else ''}#{i}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--index-types", nargs="+", default=["flat", "hnsw", "ivf"])
    args = parser.parse_args()
    encoder = SeededTextEncoder()
    rng = np.random.default_rng(0)
    print(f"machine: {platform.machine()}, python {platform.python_version()}; {args.size:,} items, "
          f"{encoder.identity.dim}-d, k=10, one query at a time")
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "items.jsonl"
        corpus.write_text("\n".join(json.dumps({"text": f"item {i}", "bucket": int(b), "title": title(i, int(b))})
                                    for i, b in enumerate(rng.integers(0, 1000, args.size))) + "\n")
        queries = encoder.encode_texts([f"query {i}" for i in range(args.queries)])
        for kind in args.index_types:
            out = Path(tmp) / kind
            build_index(out, IndexConfig(texts=[corpus], batch_size=4096, index_type=kind), encoder=encoder)
            index = open_index(out, encoder=encoder)
            row_ids, vectors = index.embeddings("text")
            table = index._filter_table("text")
            for label, where in FILTERS.items():
                mask = np.ones(len(table), bool) if where is None else parse_filter(where).mask(table)
                if where in CONTAINS:
                    assert mask.tolist() == [CONTAINS[where](t) for t in table.column("title").to_pylist()], where
                allowed = np.isin(row_ids, table.column("row_id").to_numpy()[mask])
                index.search_vector(queries[0], target="text", k=10, where=where)  # warm
                samples, evaluated, recalls = [], [], []
                for query in queries:
                    index._admitted_cache.clear()
                    start = time.perf_counter()
                    index.search_vector(query, target="text", k=10, where=where)
                    evaluated.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    hits = index.search_vector(query, target="text", k=10, where=where)
                    samples.append(time.perf_counter() - start)
                    scores = np.where(allowed, vectors @ query, -np.inf)
                    exact = row_ids[np.lexsort((row_ids, -scores))[:min(10, int(allowed.sum()))]]
                    recalls.append(len({h.row_id for h in hits} & set(exact.tolist())) / max(1, len(exact)))
                print(f"{kind:<5} {label:>16}: cached p50 {percentile_ms(samples, 50):6.2f} ms, "
                      f"p95 {percentile_ms(samples, 95):6.2f} ms; evaluated p50 {percentile_ms(evaluated, 50):6.2f} ms, "
                      f"p95 {percentile_ms(evaluated, 95):6.2f} ms; recall@10 {np.mean(recalls):.3f}, "
                      f"admitted {int(mask.sum()):,}")


if __name__ == "__main__":
    main()
