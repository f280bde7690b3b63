"""Scale: build, re-run and search a synthetic CLIP-like collection of N items through the normal indexing path.

    python bench/bench_scale.py --items 1000000 [--vectors float16] [--memory-budget 1G] [--out bench/out/scale]
    python bench/bench_scale.py --items 10000000 ... --rerun-only BUILD_SECONDS   # the re-runs of a kept build

Reports: full build time and peak RSS, disk size, a 1%-change re-run (time, bytes written), a no-change
re-run, open time and RSS when open, one-query p50/p95, QPS for batches of 100, recall@10 against
exact search on held-out queries. Each step runs in its own process, so peak RSS is that step's.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

QUERIES = 200
BATCH = 100


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def disk_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


# ---- steps (each in a fresh process) -----------------------------------------------------------------

def model_spec(kind: str, folder: Path) -> str:
    """The synthetic CLIP-like model, or the test suite's tiny open_clip config (random weights, 32-d)."""
    if kind == "synthetic":
        return "python:synthetic:make_encoder"
    sys.path.insert(0, str(BENCH.parent / "tests"))
    from conftest import write_tiny_open_clip

    tiny = folder / "tiny-model"
    return f"local-dir:{tiny if tiny.is_dir() else write_tiny_open_clip(tiny)}"


def step_index(corpus: str, out: str, vectors: str, budget: str, kind: str = "synthetic") -> dict:
    from xmodal.indexer import IndexConfig, build_index

    started = time.perf_counter()
    report = build_index(out, IndexConfig(texts=[Path(corpus)], model=model_spec(kind, Path(out).parent),
                                          vectors=vectors, batch_size=1024,
                                          memory_budget=None if budget == "none" else budget))
    return {"seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": round(peak_rss_mb()),
            "stats": report.stats.to_dict(), "stages": {k: round(v, 2) for k, v in report.stage_seconds.items()}}


def step_search(out: str, first_query: str, kind: str = "synthetic") -> dict:
    import synthetic
    from xmodal.search import open_index

    started = time.perf_counter()
    idx = open_index(out, encoder=synthetic.SyntheticEncoder() if kind == "synthetic" else None)
    opened = time.perf_counter() - started
    rss_open = rss_mb()
    held_out = np.arange(int(first_query), int(first_query) + QUERIES)
    queries = synthetic.item_vectors(held_out) if kind == "synthetic" else \
        idx.encoder.encode_texts(synthetic.texts_of(held_out, kind))
    cold, _ = one_at_a_time(idx, queries)  # first touch: the memory maps read from disk or the page cache
    t0 = time.perf_counter()
    batches = 0
    while time.perf_counter() - t0 < 10:
        for start in range(0, QUERIES, BATCH):
            idx.search_many(vectors=queries[start:start + BATCH], target="text", k=10)
            batches += 1
    qps = batches * BATCH / (time.perf_counter() - t0)
    latencies, found = one_at_a_time(idx, queries)  # warm: as a service answers once it has run a while
    rss_searched = rss_mb()
    far = far_queries(queries)
    far_found = [[h.row_id for h in hits] for hits in idx.search_many(vectors=far, target="text", k=10)]
    exact, far_exact = np.split(np.array(exact_top10(idx, np.concatenate([queries, far]))), 2)
    recall = float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)]))
    far_recall = float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(far_found, far_exact)]))
    ms, cold_ms = np.array(latencies) * 1000, np.array(cold) * 1000
    manifest = idx.manifest
    return {"open_seconds": round(opened, 2), "rss_open_mb": round(rss_open), "rss_after_mb": round(rss_searched),
            "p50_ms": round(float(np.percentile(ms, 50)), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "cold_p50_ms": round(float(np.percentile(cold_ms, 50)), 2),
            "cold_p95_ms": round(float(np.percentile(cold_ms, 95)), 2),
            "batch_qps": round(qps, 1), "recall_at_10": round(recall, 4), "far_recall_at_10": round(far_recall, 4),
            "segments": len(manifest.segments), "ann": {k: v.params | {"kind": v.kind} for k, v in manifest.ann.items()}}


def one_at_a_time(idx, queries: np.ndarray) -> tuple[list[float], list[list[int]]]:
    latencies, found = [], []
    for query in queries:
        t0 = time.perf_counter()
        hits = idx.search_vector(query, "text", 10)
        latencies.append(time.perf_counter() - t0)
        found.append([h.row_id for h in hits])
    return latencies, found


def far_queries(queries: np.ndarray) -> np.ndarray:
    """Queries away from every item, as a text query sits away from the photos it finds (cosine ~0.6 to its item)."""
    noise = np.random.default_rng(7).standard_normal(queries.shape).astype(np.float32)
    far = queries + 1.3 * noise / np.linalg.norm(noise, axis=1, keepdims=True)
    return far / np.linalg.norm(far, axis=1, keepdims=True)


def exact_top10(idx, queries: np.ndarray) -> list[list[int]]:
    """Brute force over every stored vector, in chunks (the oracle for recall)."""
    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), 0), np.int64)
    for row_ids, vectors in idx._stored("text").chunks(200_000):
        scores = queries @ vectors.T
        scores = np.concatenate([best_scores, scores], axis=1)
        ids = np.concatenate([best_ids, np.broadcast_to(row_ids, (len(queries), len(row_ids)))], axis=1)
        keep = np.argpartition(-scores, 9, axis=1)[:, :10]
        best_scores, best_ids = np.take_along_axis(scores, keep, 1), np.take_along_axis(ids, keep, 1)
    return best_ids.tolist()


STEPS = {"index": step_index, "search": step_search}


def run_step(name: str, *args) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH.parent), str(BENCH)])}
    done = subprocess.run([sys.executable, __file__, "--step", name, *map(str, args)], capture_output=True, text=True,
                          env=env)
    if done.returncode != 0:
        raise SystemExit(f"step {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--vectors", default="float32")
    parser.add_argument("--memory-budget", default="none")
    parser.add_argument("--model", default="synthetic", choices=["synthetic", "tiny"],
                        help="synthetic: CLIP-like 512-d vectors; tiny: the real vectors of the test suite's "
                             "random-weight open_clip config (32-d, about 1,800 texts/s here)")
    parser.add_argument("--out", type=Path, default=BENCH / "out" / "scale")
    parser.add_argument("--step", nargs="+")
    parser.add_argument("--rerun-only", type=float, metavar="BUILD_SECONDS",
                        help="keep the index an earlier run built (in --out) and measure only the re-runs; "
                             "percentages are of BUILD_SECONDS")
    args = parser.parse_args()
    if args.step:
        name, *rest = args.step
        print(json.dumps(STEPS[name](*rest)))
        return
    import synthetic

    folder = args.out / f"{args.items}-{args.vectors}-{args.memory_budget}" \
        f"{'' if args.model == 'synthetic' else '-' + args.model}"
    corpus, index = folder / "corpus.parquet", folder / "index"
    print(f"items {args.items:,}, model {args.model}, vectors {args.vectors}, memory budget {args.memory_budget}, "
          f"{os.cpu_count()} cores", flush=True)
    if args.rerun_only:
        numbers = np.array([int(t.split()[-1]) for t in pq.read_table(corpus).column("text").to_pylist()])
        built = {"seconds": args.rerun_only, "stats": {"bytes_written": disk_mb(index) * 1e6}}  # as a build writes it
        reruns(args, corpus, index, numbers, built, seed=int(time.time()))
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    numbers = np.arange(args.items)
    synthetic.write_corpus(corpus, numbers, args.model)

    build = run_step("index", corpus, index, args.vectors, args.memory_budget, args.model)
    size = disk_mb(index)
    print(f"full build:       {build['seconds']} s ({args.items / build['seconds']:,.0f} items/s), peak RSS "
          f"{build['peak_rss_mb']:,} MB, {build['stats']['bytes_written'] / 1e6:,.0f} MB written, index {size:,.0f} MB "
          f"on disk; stages {build['stages']}", flush=True)
    searched = run_step("search", index, 10 * args.items, args.model)
    print(f"search:           open {searched['open_seconds']} s, RSS open {searched['rss_open_mb']:,} MB, "
          f"after searching {searched['rss_after_mb']:,} MB; one query p50 {searched['p50_ms']} ms, "
          f"p95 {searched['p95_ms']} ms (first touch: p50 {searched['cold_p50_ms']} ms, p95 {searched['cold_p95_ms']} ms); "
          f"batches of {BATCH}: {searched['batch_qps']:,} queries/s; "
          f"recall@10 {searched['recall_at_10']} (far queries {searched['far_recall_at_10']}); ann {searched['ann']}",
          flush=True)

    reruns(args, corpus, index, numbers, build, seed=1)


def reruns(args, corpus: Path, index: Path, numbers: np.ndarray, build: dict, seed: int) -> None:
    import synthetic

    same = run_step("index", corpus, index, args.vectors, args.memory_budget, args.model)
    print(f"no-change re-run: {same['seconds']} s, peak RSS {same['peak_rss_mb']:,} MB, "
          f"{same['stats']['bytes_written']:,} bytes written; stages {same['stages']}", flush=True)

    changed = numbers.copy()
    picked = np.random.default_rng(seed).choice(len(numbers), len(numbers) // 100, replace=False)
    changed[picked] += (5 + seed % 1000) * args.items  # new content in 1% of the rows: one deletion and one new item
    synthetic.write_corpus(corpus, changed, args.model)
    delta = run_step("index", corpus, index, args.vectors, args.memory_budget, args.model)
    print(f"1% change re-run: {delta['seconds']} s ({100 * delta['seconds'] / build['seconds']:.1f}% of the build), "
          f"{delta['stats']['bytes_written'] / 1e6:,.1f} MB written "
          f"({100 * delta['stats']['bytes_written'] / build['stats']['bytes_written']:.1f}% of the build's), "
          f"peak RSS {delta['peak_rss_mb']:,} MB; stages {delta['stages']}", flush=True)
    again = run_step("search", index, 10 * args.items, args.model)
    print(f"after the change: {again['segments']} segments; one query p50 {again['p50_ms']} ms, p95 {again['p95_ms']} ms; "
          f"batches: {again['batch_qps']:,} queries/s; recall@10 {again['recall_at_10']} "
          f"(far queries {again['far_recall_at_10']})", flush=True)


if __name__ == "__main__":
    main()
