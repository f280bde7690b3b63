"""How fast are hybrid search and the word index (issue 29's speed targets)?

    python bench/bench_hybrid_speed.py latency --rows 100000 1000000   # query p50/p95 per mode and kind
    python bench/bench_hybrid_speed.py build --rows 20000               # word index share of an offline-model build
    python bench/bench_hybrid_speed.py change --rows 100000             # a 1% edit re-run against a full build
    python bench/bench_hybrid_speed.py profile --rows 1000000 --mode hybrid --kind size   # cProfile of one kind
    python bench/bench_hybrid_speed.py terms --rows 1000000             # tantivy alone: a common term's cost
    python bench/bench_hybrid_speed.py prune --rows 1000000             # a proposal: common terms left out

The table is a synthetic shop catalogue (`catalogue`): an SKU (the id column, CAT-0001234), a brand (one of
2,000 made-up names, Zipf-skewed), a title (brand, model number like XR-220, colour, garment) and a description
(the text column: colour, material, garment, 3-8 Zipf-drawn shop words, `size N` on 60% of rows). Every column
is text, so every one is searched as words. A description query is the first five words of a row's description.

- latency: the index is built through `build_index` with bench/synthetic.py's model (it hashes each text into a
  CLIP-like 512-d vector: no model encodes a million texts here), then opened once and queried warm, one query
  at a time, QUERIES per kind (an SKU, a brand, `size 42`, a five-word description), each query in each mode
  in turn (vector, hybrid, lexical: a busy moment slows all three alike), k=10. The pass runs twice; both
  passes are printed.
- build: the same table with `--model offline` (no photos), built twice from nothing; the word index's share
  is the time spent in store.words.write_words (timed in the build's own process) over the run's wall time.
- change: a full build with the synthetic model, then 1% of rows get a new description and the run repeats;
  its wall time against the full build's, and its write_words seconds. Twice, each from a fresh build.

Every timed step runs in a fresh process; timings are wall time on a shared 2-core machine (`uptime` printed).
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

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

QUERIES = 200  # per kind and mode
KINDS = ("sku", "brand", "size", "description")
MODES = ("vector", "hybrid", "lexical")
SYNTHETIC = "python:synthetic:make_encoder"

COLOURS = ["red", "blue", "green", "black", "white", "navy", "grey", "beige", "pink", "yellow", "olive", "brown",
           "burgundy", "cream", "khaki", "orange", "purple", "teal", "charcoal", "silver"]
GARMENTS = ["shirt", "t-shirt", "jeans", "dress", "skirt", "jacket", "coat", "hoodie", "sweater", "cardigan",
            "blazer", "trousers", "shorts", "sneakers", "boots", "sandals", "loafers", "running shoes", "scarf",
            "hat", "cap", "belt", "backpack", "handbag", "socks", "leggings", "parka", "vest", "polo", "blouse",
            "chinos", "overalls", "pyjamas", "swimsuit", "gloves", "beanie", "trainers", "heels", "raincoat", "tie"]
MATERIALS = ["cotton", "linen", "wool", "denim", "leather", "suede", "silk", "polyester", "cashmere", "nylon",
             "fleece", "corduroy", "canvas", "jersey", "velvet"]
WORDS = ("slim regular relaxed oversized fitted cropped long short sleeve sleeveless collar hooded zip button "
         "pocket pockets waterproof breathable lightweight warm soft stretch classic vintage modern casual formal "
         "sport running hiking outdoor summer winter autumn spring everyday office party beach travel kids men "
         "women unisex organic recycled padded quilted knitted striped checked plain printed floral logo embroidered "
         "washed ripped high waist mid rise wide leg straight tapered ankle knee midi maxi mini round neck v-neck "
         "crew turtleneck drawstring elastic lined unlined reversible durable comfortable premium limited edition "
         "new season bestseller gift machine washable easy care quick dry thermal insulated reflective anti slip "
         "cushioned arch support memory foam rubber sole lace up slip on buckle strap adjustable").split()
PREFIXES = ["SHO", "TSH", "JNS", "DRS", "JKT", "BAG", "ACC", "KNT", "SPT", "OUT"]


def _zipf(size: int) -> np.ndarray:
    weights = 1.0 / (np.arange(size) + 3.0)
    return weights / weights.sum()


def brands() -> list[str]:
    rng = np.random.default_rng(3)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"] + ["tr", "el", "on", "ix", "ar"]
    return sorted({"".join(rng.choice(syllables, rng.integers(2, 4))).capitalize() for _ in range(2400)})[:2000]


def catalogue(rows: np.ndarray, seed: int = 0) -> dict[str, list[str]]:
    """Columns of a shop table for `rows` (row numbers: brand, SKU and model follow the number, the words `seed`)."""
    rng = np.random.default_rng(seed)
    count, names = len(rows), brands()
    brand_of = np.random.default_rng(1).choice(len(names), int(rows.max()) + 1, p=_zipf(len(names)))[rows]
    colour, garment = rng.integers(len(COLOURS), size=count), rng.integers(len(GARMENTS), size=count)
    material, sized, size = rng.integers(len(MATERIALS), size=count), rng.random(count) < 0.6, rng.integers(34, 48, count)
    lengths = rng.integers(3, 9, count)
    filler = rng.choice(len(WORDS), int(lengths.sum()), p=_zipf(len(WORDS)))
    letters = np.array(list("ABCDEFGHJKLMNPRSTVWXZ"))
    out: dict[str, list[str]] = {"sku": [], "brand": [], "title": [], "description": []}
    at = 0
    for i, row in enumerate(rows.tolist()):
        brand = names[brand_of[i]]
        model = f"{letters[row % 21]}{letters[row // 21 % 21]}-{100 + row * 7 % 900}"
        words = " ".join(WORDS[j] for j in filler[at:at + lengths[i]])
        at += lengths[i]
        out["sku"].append(f"{PREFIXES[row % 10]}-{row:07d}")
        out["brand"].append(brand)
        out["title"].append(f"{brand} {model} {COLOURS[colour[i]]} {GARMENTS[garment[i]]}")
        out["description"].append(f"{COLOURS[colour[i]]} {MATERIALS[material[i]]} {GARMENTS[garment[i]]}, {words}"
                                  + (f", size {size[i]}" if sized[i] else ""))
    return out


def write_table(path: Path, rows: np.ndarray, seed: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(catalogue(rows, seed)), path, row_group_size=100_000)


def queries(rows: int, seed: int = 7) -> dict[str, list[str]]:
    rng = np.random.default_rng(seed)
    names = brands()
    picked = rng.integers(rows, size=QUERIES)
    out = {"sku": [f"{PREFIXES[r % 10]}-{r:07d}" for r in picked.tolist()],
           "brand": [names[j] for j in rng.choice(len(names), QUERIES, p=_zipf(len(names)))],
           "size": [f"size {n}" for n in rng.integers(34, 48, QUERIES)],
           "description": []}
    table = catalogue(np.arange(rows))["description"]  # five words of a product's description, as typed
    for row in rng.integers(rows, size=QUERIES).tolist():
        out["description"].append(" ".join(table[row].replace(",", "").split()[:5]))
    return out


# ---- steps, each in a fresh process -------------------------------------------------------------------------

class WordClock:
    """Seconds spent in store.words.write_words during this process (segments' words, fresh or added)."""

    def __init__(self):
        from xmodal.indexer.store import segments

        self.seconds, self.calls, original = 0.0, 0, segments.write_words

        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.calls += 1

        segments.write_words = timed


def step_index(table: str, out: str, model: str) -> dict:
    from xmodal.indexer import IndexConfig, build_index

    clock = WordClock()
    started = time.perf_counter()
    report = build_index(out, IndexConfig(texts=[Path(table)], text_column="description", id_column="sku",
                                          model=model, batch_size=1024 if model == SYNTHETIC else 64))
    return {"seconds": round(time.perf_counter() - started, 2), "words_seconds": round(clock.seconds, 2),
            "words_calls": clock.calls, "stages": {k: round(v, 2) for k, v in report.stage_seconds.items()},
            "counts": report.counts}


def step_latency(out: str, rows: str) -> dict:
    import synthetic
    from xmodal.search import open_index

    idx = open_index(out, encoder=synthetic.SyntheticEncoder())
    asked = queries(int(rows))
    for mode in MODES:  # warm: the memory maps and each segment's words touched once
        for kind in KINDS:
            for text in asked[kind][:20]:
                idx.search(text, k=10, mode=mode)
    ms: dict[str, list[float]] = {f"{mode}/{kind}": [] for mode in MODES for kind in KINDS}
    empty = dict.fromkeys(ms, 0)
    for kind in KINDS:
        for text in asked[kind]:
            for mode in MODES:  # each query in every mode in turn: the machine's load falls on all three alike
                started = time.perf_counter()
                hits = idx.search(text, k=10, mode=mode)
                ms[f"{mode}/{kind}"].append((time.perf_counter() - started) * 1000)
                empty[f"{mode}/{kind}"] += not hits
    result = {key: {"p50": round(float(np.percentile(times, 50)), 2), "p95": round(float(np.percentile(times, 95)), 2),
                    "empty": empty[key]} for key, times in ms.items()}
    return result


def step_profile(out: str, rows: str, mode: str, kind: str) -> dict:
    import cProfile
    import io
    import pstats

    import synthetic
    from xmodal.search import open_index

    idx = open_index(out, encoder=synthetic.SyntheticEncoder())
    asked = queries(int(rows))[kind]
    for text in asked[:20]:
        idx.search(text, k=10, mode=mode)
    profile = cProfile.Profile()
    profile.enable()
    for text in asked:
        idx.search(text, k=10, mode=mode)
    profile.disable()
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(25)
    return {"profile": text.getvalue()}


def step_terms(out: str) -> dict:
    """Where a word search's time goes: tantivy's top 10 for `size` (in 60% of rows) alone, `42` alone, both
    OR'ed (as hybrid asks) and AND'ed (as lexical asks), and counting `size`'s rows; median ms of 30."""
    import tantivy

    from xmodal.search import open_index

    segment = open_index(out)._words._segments[0]
    searcher, schema = segment._open(), segment._schema
    size, number = (tantivy.Query.term_query(schema, "words", t) for t in ("size", "42"))
    either = tantivy.Query.boolean_query([(tantivy.Occur.Should, size), (tantivy.Occur.Should, number)])
    both = tantivy.Query.boolean_query([(tantivy.Occur.Must, size), (tantivy.Occur.Must, number)])

    def ms(query, count=False, limit=10) -> float:
        times = []
        for _ in range(30):
            started = time.perf_counter()
            searcher.search(query, limit, count=count)
            times.append((time.perf_counter() - started) * 1000)
        return round(float(np.median(times)), 2)

    return {"size": ms(size), "size (count too)": ms(size, True), "42": ms(number), "size OR 42": ms(either),
            "size OR 42, top 100": ms(either, limit=100), "size AND 42": ms(both),
            "rows holding size": searcher.doc_freq("words", "size"), "rows": searcher.num_docs}


def step_prune(out: str, rows: str) -> dict:
    """A proposal, not xmodal's behaviour: the hybrid word leg (top 100 by BM25, terms ORed) without the query's
    terms held by more than a share of the rows, where a rarer one remains. Per kind and share: median ms of the
    word leg with and without them, how many of the top 100 stay, and whether their order is the same."""
    from xmodal.indexer import words as analyser
    from xmodal.search import open_index

    index = open_index(out)._words
    total = sum(s.count() for s in index._segments)
    result = {}
    for kind, texts in queries(int(rows)).items():
        for share in (0.5, 0.1):
            kept, same, full_ms, pruned_ms = [], 0, [], []
            for text in texts:
                terms = analyser.query_terms(text)
                held = {t: sum(s.document_frequency(t) for s in index._segments) / total for t in terms}
                rare = [t for t in terms if held[t] <= share] or terms
                started = time.perf_counter()
                full = [row for row, _ in index.search(terms, 100)]
                full_ms.append((time.perf_counter() - started) * 1000)
                started = time.perf_counter()
                pruned = [row for row, _ in index.search(rare, 100)]
                pruned_ms.append((time.perf_counter() - started) * 1000)
                kept.append(len(set(full) & set(pruned)) / max(len(full), 1))
                same += full == pruned
            result[f"{kind}, terms over {share:.0%} left out"] = {
                "ms": round(float(np.median(full_ms)), 2), "ms pruned": round(float(np.median(pruned_ms)), 2),
                "top 100 kept": round(float(np.mean(kept)), 3), "same order": f"{same}/{len(texts)}"}
    return result


STEPS = {"index": step_index, "latency": step_latency, "profile": step_profile, "terms": step_terms,
         "prune": step_prune}


def run_step(name: str, *args) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH.parent), str(BENCH)]
                                                        + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    done = subprocess.run([sys.executable, __file__, "--step", name, *map(str, args)], capture_output=True,
                          text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"step {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def say(line: str) -> None:
    print(line, flush=True)


# ---- measurements -------------------------------------------------------------------------------------------

def measure_latency(folder: Path, rows: int, keep: bool) -> None:
    table, index = folder / f"shop-{rows}.parquet", folder / f"shop-{rows}.idx"
    if not (keep and index.is_dir()):
        shutil.rmtree(index, ignore_errors=True)
        write_table(table, np.arange(rows))
        built = run_step("index", table, index, SYNTHETIC)
        say(f"{rows:,} rows built in {built['seconds']} s (write_words {built['words_seconds']} s in "
            f"{built['words_calls']} segments); stages {built['stages']}; load {load()}")
    for run in (1, 2):
        found = run_step("latency", index, rows)
        say(f"{rows:,} rows, pass {run} (load {load()}): p50/p95 ms, k=10, {QUERIES} warm queries per kind")
        for kind in KINDS:
            cells = "   ".join(f"{mode} {found[f'{mode}/{kind}']['p50']:6.2f}/{found[f'{mode}/{kind}']['p95']:6.2f}"
                               for mode in MODES)
            vector, hybrid = found[f"vector/{kind}"]["p50"], found[f"hybrid/{kind}"]["p50"]
            say(f"  {kind:12s} {cells}   hybrid/vector p50 {hybrid / vector:4.2f}x"
                f"   lexical empty {found[f'lexical/{kind}']['empty']}")


def measure_build(folder: Path, rows: int) -> None:
    table = folder / f"shop-{rows}.parquet"
    write_table(table, np.arange(rows))
    for run in (1, 2):
        index = folder / f"offline-{rows}.idx"
        shutil.rmtree(index, ignore_errors=True)
        built = run_step("index", table, index, "offline")
        say(f"offline build of {rows:,} rows, run {run} (load {load()}): {built['seconds']} s, write_words "
            f"{built['words_seconds']} s = {100 * built['words_seconds'] / built['seconds']:.1f}% of the run "
            f"({100 * built['words_seconds'] / max(built['seconds'] - built['words_seconds'], 1e-9):.1f}% of the "
            f"run without it); stages {built['stages']}")


def measure_change(folder: Path, rows: int) -> None:
    table, index = folder / f"change-{rows}.parquet", folder / f"change-{rows}.idx"
    for run in (1, 2):
        shutil.rmtree(index, ignore_errors=True)
        write_table(table, np.arange(rows))
        full = run_step("index", table, index, SYNTHETIC)
        edited = catalogue(np.arange(rows))
        picked = np.random.default_rng(run).choice(rows, rows // 100, replace=False)
        fresh = catalogue(picked, seed=100 + run)["description"]
        for at, text in zip(picked.tolist(), fresh):
            edited["description"][at] = text
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table(edited), table, row_group_size=100_000)
        delta = run_step("index", table, index, SYNTHETIC)
        say(f"{rows:,} rows, run {run} (load {load()}): full build {full['seconds']} s (write_words "
            f"{full['words_seconds']} s); {len(picked):,} rows edited, re-run {delta['seconds']} s = "
            f"{100 * delta['seconds'] / full['seconds']:.1f}% of the build, write_words {delta['words_seconds']} s "
            f"in {delta['words_calls']} segment(s) = {100 * delta['words_seconds'] / delta['seconds']:.1f}% of the "
            f"re-run; stages {delta['stages']}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", nargs="?", choices=["latency", "build", "change", "profile", "terms", "prune"])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=BENCH / "out" / "hybrid_speed")
    parser.add_argument("--keep", action="store_true", help="latency: reuse an index an earlier run built")
    parser.add_argument("--mode", default="hybrid")
    parser.add_argument("--kind", default="description")
    parser.add_argument("--step", nargs="+")
    args = parser.parse_args()
    if args.step:
        name, *rest = args.step
        print(json.dumps(STEPS[name](*rest)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    say(f"# python bench/bench_hybrid_speed.py {' '.join(sys.argv[1:])}   ({os.cpu_count()} cores, load {load()})")
    for rows in args.rows:
        if args.what == "latency":
            measure_latency(args.out, rows, args.keep)
        elif args.what == "build":
            measure_build(args.out, rows)
        elif args.what == "change":
            measure_change(args.out, rows)
        elif args.what == "prune":
            for key, found in run_step("prune", args.out / f"shop-{rows}.idx", rows).items():
                say(f"{rows:,} rows, {key}: {found}")
        elif args.what == "terms":
            say(f"{rows:,} rows, tantivy top 10, median ms: {run_step('terms', args.out / f'shop-{rows}.idx')}")
        else:
            index = args.out / f"shop-{rows}.idx"
            say(run_step("profile", index, rows, args.mode, args.kind)["profile"])


if __name__ == "__main__":
    main()
