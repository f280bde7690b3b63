"""A table exported again: re-ordered, 1% of its rows replaced. What does the re-run write, and how long does
it take, against the full build? With and without --id-column (issue 20: 100% rewritten before).

    python bench/bench_reorder.py --rows 200000 [--rows 1000000] [--model tiny]

A shop's export without ORDER BY comes back in any order; a row's line is no part of its identity, so
only the replaced rows are written: new rows for the new ones, deletion records for the gone ones.
The model is loaded once and handed to every run (the figures compare indexing work alone).
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from bench_index import bench_encoder  # noqa: E402

WORDS = ("red blue green black white yellow car shoe shirt mug bicycle apple lamp chair table desk phone "
         "watch bag coat dress boots sofa rug kettle").split()


def write_table(path: Path, rows: list[tuple[str, str, int]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "text", "price"])
        writer.writerows(rows)


def listings(count: int, start: int, rng: np.random.Generator) -> list[tuple[str, str, int]]:
    words = rng.integers(len(WORDS), size=(count, 6))
    return [(f"SKU-{start + i:08d}", f"listing {start + i}: " + " ".join(WORDS[w] for w in row), int(p))
            for i, (row, p) in enumerate(zip(words, rng.integers(1, 5000, count)))]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure(rows: int, encoder, keyed: bool, tmp: Path) -> dict:
    from xmodal.indexer import IndexConfig, build_index

    rng = np.random.default_rng(0)
    table, out = tmp / f"listings-{rows}-{keyed}.csv", tmp / f"index-{rows}-{keyed}"
    original = listings(rows, 0, rng)
    write_table(table, original)
    config = IndexConfig(texts=[table], id_column="sku" if keyed else None, batch_size=256)
    started = time.perf_counter()
    build_index(out, config, encoder=encoder)
    full_seconds, full_bytes = time.perf_counter() - started, folder_bytes(out)
    changed = rows // 100
    replaced = rng.choice(rows, changed, replace=False)
    exported = list(original)
    for position, row in zip(replaced, listings(changed, rows, rng)):
        exported[position] = row
    exported = [exported[i] for i in rng.permutation(rows)]  # no ORDER BY
    write_table(table, exported)
    started = time.perf_counter()
    report = build_index(out, IndexConfig(texts=[table], batch_size=256), encoder=encoder)
    seconds = time.perf_counter() - started
    stats = report.stats
    return {"rows": rows, "keyed": keyed, "full_s": full_seconds, "full_bytes": full_bytes, "rerun_s": seconds,
            "written": stats.bytes_written, "encoded": stats.encoded, "removed": stats.removed,
            "stages": {k: round(v, 2) for k, v in report.stage_seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000])
    parser.add_argument("--model", default="tiny")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        encoder = bench_encoder(args.model, None, "cpu", tmp)
        print(f"model {encoder.identity.describe()}, cpu, {os.cpu_count()} cores; a CSV re-exported in another "
              "order with 1% of its rows replaced")
        print(f"{'rows':>9} {'id column':>10} {'full build':>11} {'re-run':>8} {'of full':>8} "
              f"{'index':>9} {'written':>9} {'of index':>9}  encoded/removed")
        for rows in args.rows:
            for keyed in (False, True):
                r = measure(rows, encoder, keyed, tmp)
                print(f"{rows:>9} {'sku' if keyed else 'none':>10} {r['full_s']:>9.1f} s {r['rerun_s']:>6.1f} s "
                      f"{r['rerun_s'] / r['full_s']:>8.1%} {r['full_bytes'] / 1e6:>7.1f} MB {r['written'] / 1e6:>7.2f} MB "
                      f"{r['written'] / r['full_bytes']:>9.1%}  {r['encoded']}/{r['removed']}  {r['stages']}", flush=True)


if __name__ == "__main__":
    main()
