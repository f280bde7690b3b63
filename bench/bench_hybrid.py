"""Words and vectors (issue 29): which fusion, and what weight on the words per kind of query? Measured, not guessed.

    apt-get install dataset-fashion-mnist
    python bench/bench_hybrid.py                # writes bench/results/hybrid.txt; on 2 cores about 3 minutes to
                                                # index, 10 to search (595 queries x 21 ways)
    python bench/bench_hybrid.py --work DIR     # keeps the catalogue and its index in DIR: a rerun reuses them
    python bench/bench_hybrid.py --products 300 --per-kind 30 --out -   # a smoke run, printed only (3 minutes)

The catalogue is bench_fusion's (Fashion-MNIST test photos, half the listings naming what the item is) with what a
shop export adds and no model can know: a made-up brand (BRANDS, in half the descriptions too), a model number
(XR-220, unique), a SKU (FSH-01234, the id column), a size (its own column, EU 42 for shoes, 42 for clothes, N/A
for bags and a few others; the listing says the same size), and some N/A cells. It is indexed by the Python API
(`xmodal.build_index`, all text columns as words) with --model offline and searched through `SearchIndex.search`
with target product, k 10 (MRR@10: a relevant product past the tenth counts 0), as a user would: vector,
lexical, and hybrid with each fusion at word weights 0.1 to 0.9.

Query kinds (relevant products in brackets): identifier (the SKU as listed, lower-case, without its hyphen, with a
space) [that product]; model number (the same variants, and after its brand) [that product]; brand (alone, and
"anything from BRAND") [the brand's]; attribute ("size 42", "EU 42", "sneakers size 42") [that size, of that
class]; descriptive (bench_fusion's three phrasings and seven longer ones per class) [the class's]; misspelled
brand (one letter changed: words cannot match it, by design) [the brand's]; Chinese (class names and phrasings
in Chinese, searched through search/translate.py's dictionary) [the class's].

Each query also has the kind search.hybrid.query_kind gives it (code, words, sentence), which picks the default
word weight. Per query_kind, the fusion and weight chosen maximise the mean of the bench kinds' MRRs among its
queries, on condition that its descriptive queries stay within 0.01 MRR of vectors alone (issue 29's target).
One fusion is chosen for all (search/hybrid.py's DEFAULT_FUSION): the one whose chosen weights score best.
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_fusion import COLOURS, INFORMATIVE, NAMES, QUERIES, UNINFORMATIVE, fashion_sample, photo  # noqa: E402
from bench.bench_languages import Report, progress  # noqa: E402
from bench.bench_voice import busy_others, cpu_name, load_line  # noqa: E402
from bench.export_fashion_mnist import CLASSES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "hybrid.txt"
BRANDS = ["Vantrel", "Quorrix", "Zelmora", "Brivante", "Kastelo", "Oruvia", "Tessaro", "Nimbrel", "Falcora", "Drovik",
          "Lumeno", "Saverin", "Yostra", "Merrowin", "Calvexa", "Trundell", "Pexora", "Olvani", "Rastelle", "Vorenza",
          "Hallix", "Strovin", "Belmaro", "Ixtana", "Corvello", "Fennick", "Dalvoro", "Myrtlen", "Gavrosa", "Tollwick",
          "Quenta", "Savoldi", "Brannix", "Elvetta", "Norvane", "Pirello", "Zandor", "Kivessa", "Lorvex", "Umbrio"]
MODEL_PREFIXES = ["XR", "TK", "ZL", "QM", "VB", "HX", "PN", "RW", "KD", "GT", "MZ", "SV", "JC", "FL", "WY"]
SHOES = {"sandal", "sneaker", "ankle_boot"}
SHOE_SIZES = list(range(36, 47))
CLOTHES_SIZES = list(range(34, 49, 2))
LONGER = ["{colour} {name}", "a {colour} {name} in good condition", "I am looking for warm {name} for the winter",
          "comfortable {name} for everyday wear", "cheap second hand {name} in my size",
          "a nice {name} as a gift for my sister", "{name} that look good with jeans"]
CHINESE = {"t-shirt": ["T恤"], "trouser": ["裤子", "长裤"], "pullover": ["毛衣", "套头衫"], "dress": ["连衣裙"],
           "coat": ["外套", "大衣"], "sandal": ["凉鞋"], "shirt": ["衬衫"], "sneaker": ["运动鞋"], "bag": ["手提包", "包"],
           "ankle_boot": ["短靴", "踝靴"]}
CHINESE_PHRASINGS = ["{name}", "我想买{name}", "黑色的{name}", "便宜的{name}", "一件白色{name}"]
KINDS = ["identifier", "model number", "brand", "attribute", "descriptive", "misspelled brand", "Chinese"]
WEIGHTS = [round(0.1 * i, 1) for i in range(1, 10)]
FUSIONS = ("relative", "rrf")
K = 10  # what a search shows by default; its candidates (search.hybrid.DEPTH) are then as a user's are
MIN_GROUP = 5  # a bench kind with fewer queries of a query_kind would swing its mean by one query
PLATEAU = 0.002  # weights within this of the best MRR are equally good (_middle_of_best picks one)
TOLERANCE = 0.01  # issue 29: descriptive queries no worse than vectors alone, MRR within 0.01


@dataclass(frozen=True)
class Product:
    sku: str
    label: int
    brand: str | None
    model: str | None
    size: int | None  # None: one size (bags)
    description: str
    brand_cell: str  # as the export has it: the brand, or N/A / empty
    model_cell: str
    size_cell: str


@dataclass(frozen=True)
class Asked:
    kind: str  # one of KINDS
    text: str
    relevant: frozenset[str]  # SKUs


def catalogue(count: int, seed: int) -> tuple[list[Product], np.ndarray]:
    images, labels = fashion_sample(count, seed)
    rng = np.random.default_rng(seed + 7)
    numbers = rng.permutation(100_000)[:count]
    models = [f"{MODEL_PREFIXES[n % len(MODEL_PREFIXES)]}-{100 + n // len(MODEL_PREFIXES)}"
              for n in rng.permutation(len(MODEL_PREFIXES) * 900)[:count]]
    products = []
    for i, label in enumerate(labels):
        name = CLASSES[label]
        brand = BRANDS[rng.integers(len(BRANDS))]
        size = None if name == "bag" else int(rng.choice(SHOE_SIZES if name in SHOES else CLOTHES_SIZES))
        text = _listing(NAMES[name], size, rng)
        if rng.random() < 0.5:
            text = f"{brand}. {text}"
        brand_cell, model_cell = brand, models[i]
        if rng.random() < 0.03:  # a shop export's missing cells: the brand and model then are unknown to words
            brand_cell, brand = ("N/A", None) if rng.random() < 0.5 else ("", None)
        if rng.random() < 0.04:
            model_cell = "N/A"
        size_cell = "N/A" if size is None or rng.random() < 0.03 else (f"EU {size}" if name in SHOES else str(size))
        products.append(Product(f"FSH-{numbers[i]:05d}", int(label), brand, None if model_cell == "N/A" else models[i],
                                size, text, brand_cell, model_cell, size_cell))
    return products, images


def _listing(name: str, size: int | None, rng: np.random.Generator) -> str:
    """bench_fusion's listing, half naming the item, with the product's size (a bag's is "one size")."""
    pool = INFORMATIVE if rng.random() < 0.5 else UNINFORMATIVE
    text = pool[rng.integers(len(pool))].format(name=name, colour=COLOURS[rng.integers(len(COLOURS))],
                                                size="one size" if size is None else size)
    return text.replace("size one size", "one size")


def write_table(folder: Path, products: list[Product], images: np.ndarray) -> Path:
    """products.csv and images/ as a shop would export them; files already as they should be are left alone
    (a rerun with --work then reuses the index at the cost of a check)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = [["sku", "brand", "model", "size", "price", "description", "image"]]
    rng = np.random.default_rng(3)
    for product, image in zip(products, images):
        path = folder / "images" / f"{product.sku.lower()}.png"
        if not path.exists():
            photo(image).save(path)
        rows.append([product.sku, product.brand_cell, product.model_cell, product.size_cell,
                     f"{rng.integers(5, 200)}.{rng.integers(0, 100):02d}", product.description,
                     f"images/{path.name}"])
    table = folder / "products.csv"
    with open(folder / "products.new", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    if table.exists() and table.read_bytes() == (folder / "products.new").read_bytes():
        (folder / "products.new").unlink()
    else:
        os.replace(folder / "products.new", table)
    return table


def queries(products: list[Product], per_kind: int, seed: int) -> list[Asked]:
    rng = np.random.default_rng(seed + 11)
    asked: list[Asked] = []
    picked = [products[i] for i in rng.permutation(len(products))[:per_kind]]
    for n, p in enumerate(picked):
        letters, digits = p.sku.split("-")
        variant = [p.sku, p.sku.lower(), letters + digits, (letters + digits).lower(), f"{letters} {digits}"][n % 5]
        asked.append(Asked("identifier", variant, frozenset([p.sku])))
    modelled = [p for p in products if p.model]
    for n, p in enumerate(modelled[i] for i in rng.permutation(len(modelled))[:per_kind]):
        letters, digits = p.model.split("-")
        brand = p.brand or p.brand_cell or "the"
        variant = [p.model, p.model.lower(), letters + digits, f"{letters} {digits}", f"{brand} {p.model}"][n % 5]
        asked.append(Asked("model number", variant, frozenset([p.sku])))
    by_brand = {b: frozenset(p.sku for p in products if p.brand == b) for b in BRANDS}
    for brand in BRANDS:
        if by_brand[brand]:
            asked += [Asked("brand", brand, by_brand[brand]), Asked("brand", f"anything from {brand}", by_brand[brand])]
    asked += attribute_queries(products, per_kind, rng)
    for label, name in enumerate(CLASSES):
        relevant = frozenset(p.sku for p in products if p.label == label)
        for n, template in enumerate(QUERIES + LONGER):
            asked.append(Asked("descriptive", template.format(name=NAMES[name], colour=COLOURS[(label + n) % 8]),
                               relevant))
    for brand in BRANDS:
        if by_brand[brand]:
            asked.append(Asked("misspelled brand", misspelled(brand, rng), by_brand[brand]))
    for label, name in enumerate(CLASSES):
        relevant = frozenset(p.sku for p in products if p.label == label)
        for word in CHINESE[name]:
            asked += [Asked("Chinese", t.format(name=word), relevant) for t in CHINESE_PHRASINGS]
    return asked


def attribute_queries(products: list[Product], per_kind: int, rng: np.random.Generator) -> list[Asked]:
    """Every size alone in two phrasings, then sizes of a class ("sneakers size 42") up to per_kind queries."""
    sizes = sorted({p.size for p in products if p.size is not None})
    asked = []
    for size in sizes:
        relevant = frozenset(p.sku for p in products if p.size == size)
        asked += [Asked("attribute", f"size {size}", relevant), Asked("attribute", f"EU {size}", relevant)]
    pairs = sorted({(p.label, p.size) for p in products if p.size is not None})
    for at in rng.permutation(len(pairs))[:max(0, per_kind - len(asked))]:
        label, size = pairs[at]
        relevant = frozenset(p.sku for p in products if p.size == size and p.label == label)
        asked.append(Asked("attribute", f"{NAMES[CLASSES[label]]} size {size}", relevant))
    return asked


def misspelled(brand: str, rng: np.random.Generator) -> str:
    """`brand` with one letter (not its first) changed, into a name that is no brand."""
    lowered = {b.lower() for b in BRANDS}
    while True:
        at = int(rng.integers(1, len(brand)))
        letter = "abcdefghijklmnopqrstuvwxyz"[rng.integers(26)]
        wrong = brand[:at] + letter + brand[at + 1:]
        if wrong.lower() != brand.lower() and wrong.lower() not in lowered:
            return wrong


def query_kind_of(text: str) -> str:
    """The kind search.hybrid gives the query as the engine asks it: by the terms of the text as typed (a Chinese
    query of this English catalogue is not `unread`: the model reads what the catalogue is written in)."""
    from xmodal.indexer import words
    from xmodal.search.hybrid import query_kind

    return query_kind(text, len(words.query_terms(text)))


def memoised(encoder) -> None:
    """Each query's text is encoded once for all its searches (a bench shortcut: the same vector every time)."""
    encode, seen = encoder.encode_texts, {}

    def encode_texts(texts):
        key = tuple(texts)
        if key not in seen:
            seen[key] = encode(texts)
        return seen[key]

    encoder.encode_texts = encode_texts


def configurations() -> list[tuple[str, dict]]:
    out = [("vector", {"mode": "vector"}), ("lexical", {"mode": "lexical"})]
    out += [(f"{fusion} {w:.1f}", {"mode": "hybrid", "word_fusion": fusion, "word_weight": w})
            for fusion in FUSIONS for w in WEIGHTS]
    return out + [("defaults", {"mode": "hybrid"})]


def reciprocal(keys: list[str], relevant: frozenset[str]) -> float:
    return next((1.0 / (at + 1) for at, key in enumerate(keys) if key in relevant), 0.0)


def measure(index, asked: list[Asked]) -> dict[str, np.ndarray]:
    """Per configuration, each query's reciprocal rank (0: no relevant product in the first K)."""
    out = {}
    for name, fields in configurations():
        progress(f"searching: {name} ...")
        out[name] = np.array([reciprocal([h.key for h in index.search(q.text, target="product", k=K, **fields)],
                                         q.relevant) for q in asked])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", type=int, default=2000)
    parser.add_argument("--per-kind", type=int, default=100, help="queries per kind where the catalogue allows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="offline")
    parser.add_argument("--work", type=Path, help="where the catalogue and its index are kept and reused (default: "
                                                  "a temporary folder, removed at exit)")
    parser.add_argument("--out", default=str(RESULTS), help=f"results file (default {RESULTS.relative_to(ROOT)}; "
                                                              "- for none)")
    parser.add_argument("--depth", type=int, nargs="+", help="only the defaults' MRR per kind, with each of these "
                                                              "numbers of candidates per ranking (search.hybrid.DEPTH)")
    args = parser.parse_args()
    report, started = Report(), time.perf_counter()
    others = busy_others()
    report(f"command: python bench/bench_hybrid.py {' '.join(sys.argv[1:])}".rstrip(),
           f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
           f"machine: {cpu_name()} (lscpu: {lscpu_model()}); Python {sys.version.split()[0]}",
           f"at start: {load_line()}; " + ("other busy processes: " + "; ".join(others) if others else
                                           "no other busy process"))
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-hybrid-"))
    try:
        run(args, work, report)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    report("", f"total {time.perf_counter() - started:.0f} s (a quality bench: no timings are reported)")
    if args.out != "-":
        Path(args.out).write_text("\n".join(report.lines) + "\n", encoding="utf-8")
        progress(f"wrote {args.out}")


def lscpu_model() -> str:
    import subprocess

    try:
        shown = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in shown.splitlines() if line.startswith("Model name")),
                "unknown")


def run(args, work: Path, report: Report) -> None:
    import xmodal

    products, images = catalogue(args.products, args.seed)
    work.mkdir(parents=True, exist_ok=True)
    table = write_table(work / f"catalogue-{args.products}-{args.seed}", products, images)
    out = work / f"hybrid-{args.products}-{args.seed}-{args.model.replace('/', '_')}.idx"
    progress(f"indexing {table} into {out} ...")
    xmodal.build_index(out, xmodal.IndexConfig(texts=[table], text_column="description", image_column="image",
                                               id_column="sku", model=args.model, workers=0))
    index = xmodal.open_index(out)
    memoised(index.encoder)
    asked = queries(products, args.per_kind, args.seed)
    kinds = [query_kind_of(q.text) for q in asked]
    report(f"catalogue: {len(products)} products (bench_fusion's photos and listings, seed {args.seed}) with "
           f"{len(BRANDS)} made-up brands, unique model numbers and SKUs, sizes; "
           f"{sum(p.brand_cell in ('', 'N/A') for p in products)} brand, "
           f"{sum(p.model_cell == 'N/A' for p in products)} "
           f"model and {sum(p.size_cell == 'N/A' for p in products)} size cells N/A or empty; model {args.model}; "
           f"all text columns as words; target product, k {K}",
           "examples: " + "; ".join(f"{p.sku} | {p.brand_cell} | {p.model_cell} | {p.size_cell} | {p.description}"
                                    for p in products[:3]))
    if args.depth:
        return by_depth(index, asked, args.depth, report)
    scores = measure(index, asked)
    table_by_kind(asked, kinds, scores, report)
    choose(asked, kinds, scores, report)
    misspelled_note(index, asked, report)


def by_depth(index, asked: list[Asked], depths: list[int], report: Report) -> None:
    """The defaults' MRR per bench kind with each number of candidates taken from each ranking."""
    from xmodal.search import engine

    shipped = engine.DEPTH
    report("", f"== the defaults' MRR@{K} per kind by candidates per ranking (shipped: {shipped}) ==")
    for depth in depths:
        engine.DEPTH = depth
        ranks = [reciprocal([h.key for h in index.search(q.text, target="product", k=K)], q.relevant) for q in asked]
        report(f"depth {depth:>3}: " + "  ".join(f"{kind} {np.mean([r for r, q in zip(ranks, asked) if q.kind == kind]):.3f}"
                                                 for kind in KINDS if any(q.kind == kind for q in asked)))
    engine.DEPTH = shipped


def table_by_kind(asked: list[Asked], kinds: list[str], scores: dict[str, np.ndarray], report: Report) -> None:
    report("", f"== MRR@{K} per query kind (first: share of queries whose product is first; query_kind: how many "
               "of them search.hybrid.query_kind calls code / words / sentence) ==")
    names = [name for name, _ in configurations()]
    header = f"{'kind':<17}{'n':>4}  {'kinds c/w/s':<12}" + "".join(f"{n.replace('relative', 'rel'):>9}" for n in names)
    report(header)
    for kind in KINDS:
        at = [i for i, q in enumerate(asked) if q.kind == kind]
        if not at:
            continue
        split = "/".join(str(sum(kinds[i] == k for i in at)) for k in ("code", "words", "sentence"))
        report(f"{kind:<17}{len(at):>4}  {split:<12}" + "".join(f"{scores[n][at].mean():>9.3f}" for n in names))
        if kind in ("identifier", "model number"):
            report(f"{'  first':<17}{'':>4}  {'':<12}" +
                   "".join(f"{(scores[n][at] == 1.0).mean():>9.1%}" for n in names))


def choose(asked: list[Asked], kinds: list[str], scores: dict[str, np.ndarray], report: Report) -> None:
    """Per query_kind and fusion, the weight maximising the mean of its bench kinds' MRRs with its descriptive
    queries within TOLERANCE of vectors alone; then the fusion whose choices score best over all queries."""
    report("", "== the choice, per query_kind: mean over its bench kinds of their MRR (descriptive: "
               f"hybrid - vector, must be >= -{TOLERANCE}) ==")
    chosen: dict[str, dict[str, tuple[float, float]]] = {f: {} for f in FUSIONS}
    for query_kind in ("code", "words", "sentence"):
        at = [i for i, k in enumerate(kinds) if k == query_kind]
        groups = {kind: [i for i in at if asked[i].kind == kind] for kind in KINDS}
        groups = {kind: rows for kind, rows in groups.items() if len(rows) >= MIN_GROUP}
        described = groups.get("descriptive", [])
        report(f"{query_kind} ({len(at)} queries: " + ", ".join(f"{k} {len(r)}" for k, r in groups.items()) + ")")
        for fusion in FUSIONS:
            line, allowed_scores = [], {}
            for w in WEIGHTS:
                name = f"{fusion} {w:.1f}"
                macro = statistics.mean(scores[name][rows].mean() for rows in groups.values())
                gap = scores[name][described].mean() - scores["vector"][described].mean() if described else 0.0
                allowed = gap >= -TOLERANCE
                line.append(f"{w:.1f}: {macro:.3f}" + (f" ({gap:+.3f})" if described else "")
                            + ("" if allowed else "x"))
                if allowed:
                    allowed_scores[w] = (macro, gap)
            best = _middle_of_best(allowed_scores)
            chosen[fusion][query_kind] = best if best else (float("nan"), float("nan"))
            report(f"  {fusion:<9}" + "  ".join(line))
            report(f"  {'':<9}-> weight {best[0]:.1f}, {best[1]:.3f}" if best else f"  {'':<9}-> no weight allowed")
    totals = {}
    for fusion in FUSIONS:
        per_query = np.zeros(len(asked))
        for i, k in enumerate(kinds):
            per_query[i] = scores[f"{fusion} {chosen[fusion][k][0]:.1f}"][i]
        totals[fusion] = statistics.mean(per_query[[i for i, q in enumerate(asked) if q.kind == kind]].mean()
                                         for kind in KINDS if any(q.kind == kind for q in asked))
    fusion = max(FUSIONS, key=lambda f: totals[f])
    report("", "mean over the bench kinds of their MRR with each fusion's chosen weights: " +
           ", ".join(f"{f} {totals[f]:.3f}" for f in FUSIONS),
           f"chosen: DEFAULT_FUSION = {fusion!r}, WORD_WEIGHTS = " +
           "{" + ", ".join(f'"{k}": {chosen[fusion][k][0]:.1f}' for k in ("code", "words", "sentence")) + "}")


def _middle_of_best(scores: dict[float, tuple[float, float]]) -> tuple[float, float] | None:
    """Of the weights within PLATEAU of the best score (the measurement cannot tell them apart), the one whose
    descriptive queries lose least to vectors alone, then the middle one: a weight away from where the score
    falls off. `scores`: weight -> (score, descriptive gap)."""
    if not scores:
        return None
    top = max(score for score, _ in scores.values())
    near = sorted(w for w, (score, _) in scores.items() if score >= top - PLATEAU)
    gap = max(scores[w][1] for w in near)
    near = [w for w in near if scores[w][1] >= gap - 1e-9]
    middle = near[(len(near) - 1) // 2]
    return middle, scores[middle][0]


def misspelled_note(index, asked: list[Asked], report: Report) -> None:
    """What each mode gives a misspelled brand: lexical finds nothing (no word matches), hybrid falls back on
    the vector ranking, which may know the brand by its pieces where descriptions name it."""
    wrong = [q for q in asked if q.kind == "misspelled brand"]
    if not wrong:
        return
    empty = sum(not index.search(q.text, target="product", k=K, mode="lexical") for q in wrong)
    report("", f"misspelled brands: lexical returns nothing for {empty}/{len(wrong)} (no word matches a misspelling); "
               f"hybrid then ranks as vectors alone. Examples: " +
           ", ".join(q.text for q in wrong[:6]) + f" (for {', '.join(BRANDS[:6])})")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
