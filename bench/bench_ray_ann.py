"""Filling a segment's IVF index here against on Ray (quantisers trained once here, a shard per Ray task).

    python bench/bench_ray_ann.py --vectors 1000000
    python bench/bench_ray_ann.py --vectors 1000000 --budget 256M    # PQ codes, as --memory-budget chooses

Vectors are the synthetic CLIP-like collection of bench/synthetic.py (512-d). Ray is started once here with
this machine's cores (its start-up printed apart). Prints the training time, the time to add the vectors
here and on Ray (shards, then the merge here), vectors/s, and whether the two indexes are equal byte for byte.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.synthetic import item_vectors  # noqa: E402


def timed(step):
    started = time.perf_counter()
    result = step()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vectors", type=int, default=1_000_000)
    parser.add_argument("--budget", default=None, help="a memory budget for the whole index, as --memory-budget")
    args = parser.parse_args()

    import faiss
    import ray

    from xmodal.indexer.build import ray_engine
    from xmodal.indexer.store import ann

    vectors = item_vectors(np.arange(args.vectors)).astype(np.float32)
    row_ids = np.arange(args.vectors, dtype=np.int64)
    budget = ann.parse_memory(args.budget) if args.budget else None
    spec = ann.choose_ann(len(vectors), "ivf", vectors.shape[1], budget)
    print(f"{os.cpu_count()} cores; {len(vectors):,} x {vectors.shape[1]} vectors; IVF {spec.params}")
    trained, seconds = timed(lambda: _trained(ann, spec, vectors))
    print(f"  train once, here:        {seconds:7.1f} s")
    blank = faiss.serialize_index(trained)
    here, seconds = timed(lambda: ann.add_here(faiss.deserialize_index(blank), vectors, row_ids))
    print(f"  add here ({faiss.omp_get_max_threads()} threads):     {seconds:7.1f} s  {len(vectors) / seconds:10,.0f} vectors/s")
    _, seconds = timed(lambda: ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                                        logging_level="ERROR"))
    print(f"  ray.init (once):         {seconds:7.1f} s")
    merges = []
    merge = ray_engine._merge
    ray_engine._merge = lambda index, shard: merges.append(timed(lambda: merge(index, shard))[1])
    on_ray, seconds = timed(lambda: ray_engine.add_in_shards(faiss.deserialize_index(blank), vectors, row_ids))
    print(f"  add on Ray ({len(merges)} shards):   {seconds:7.1f} s  {len(vectors) / seconds:10,.0f} vectors/s "
          f"(of which merging here {sum(merges):.1f} s)")
    same = np.array_equal(faiss.serialize_index(here), faiss.serialize_index(on_ray))
    print(f"  the same index, byte for byte: {same}")
    ray.shutdown()


def _trained(ann, spec, vectors):
    index = ann._ivf(vectors.shape[1], spec)
    index.train(vectors)
    return index


if __name__ == "__main__":
    main()
