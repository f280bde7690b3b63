"""Chinese shop queries on the two offline models (issue 28, item 3): `offline` searches a Chinese query as the
English the dictionary gives (search/translate.py); `offline-multilingual` reads it as typed. Quality only.

    python bench/bench_multilingual_offline.py            # about 2 minutes on 2 cores; bench/results/multilingual_offline.txt
    python bench/bench_multilingual_offline.py --out -    # printed only

The demo shop (data/shop/products.csv, 12 products) is indexed with each model as docs/shop.md shows. The queries
are bench/bench_languages.py's 66 (simplified; traditional from opencc s2t) with their English twins and
hand-labelled SKUs. For each model and script: MRR and top-1 against the labelled SKU, and how often the first
product is the English twin's on the same index. `offline-multilingual` is also searched with the dictionary's
English, to see whether translating would help it. Last, one rough wall time of a one-shot `xmodal search`.

The English figures on Fashion-MNIST come from `xmodal eval` (docs/models.md, "A multilingual offline model").
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_languages import QUERIES, SHOP, Report, reciprocal_rank  # noqa: E402
from bench.bench_voice import cpu_name, load_line  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "multilingual_offline.txt"
SEED = "我想要买一辆红色汽车"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(RESULTS), help="results file ('-' for none)")
    args = parser.parse_args()
    report = Report()
    report(f"command: python bench/bench_multilingual_offline.py {' '.join(sys.argv[1:])}".rstrip(),
           f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}", f"machine: {cpu_name()}; at start: {load_line()}")
    work = Path(tempfile.mkdtemp(prefix="bench-mling-"))
    try:
        run(work, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.out != "-":
        Path(args.out).write_text("\n".join(report.lines) + "\n", encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)


def run(work: Path, report: Report) -> None:
    import opencc

    import xmodal
    from xmodal.search.translate import translate

    to_traditional = opencc.OpenCC("s2t").convert
    labelled = [row for row in QUERIES if row[2] is not None]
    report(f"{len(QUERIES)} queries, {len(labelled)} with a labelled SKU; demo shop, 12 products")
    indexes = {}
    for model in ("offline", "offline-multilingual"):
        out = work / f"{model}.idx"
        xmodal.build_index(out, xmodal.IndexConfig(texts=[SHOP], text_column="description", image_column="image",
                                                   id_column="sku", model=model, workers=0))
        indexes[model] = xmodal.open_index(out)
    ways = {  # name: (index, how a query's text is searched)
        "offline, Chinese translated": ("offline", lambda text: text),
        "offline-multilingual, as typed": ("offline-multilingual", lambda text: text),
        "offline-multilingual, translated": ("offline-multilingual",
                                             lambda text: (translate(text, "zh") or _Same(text)).text),
    }
    report("", f"{'way':34s} {'script':8s} {'MRR':>6s} {'top-1':>7s} {'= twin':>7s}")
    for name, (model, searched) in ways.items():
        index = indexes[model]
        english = {en: [h.key for h in index.search(en, k=12)] for _, en, _ in QUERIES}
        for script, convert in (("en", None), ("zh", str), ("zh-hant", to_traditional)):
            if script == "en" and name.endswith("translated") and model != "offline":
                continue  # the same English as the row above
            ranks, twins = [], 0
            for simplified, en, sku in QUERIES:
                text = en if convert is None else searched(convert(simplified))
                keys = [h.key for h in index.search(text, k=12)]
                twins += keys[0] == english[en][0]
                if sku is not None:
                    ranks.append(reciprocal_rank(keys, sku))
            top = sum(rank == 1.0 for rank in ranks)
            report(f"{name if script == 'en' or convert is str else '':34s} {script:8s} {statistics.mean(ranks):6.3f} "
                   f"{top:3d}/{len(ranks)} {twins:3d}/{len(QUERIES)}")
    misses(indexes["offline-multilingual"], to_traditional, report)
    one_shot(work / "offline-multilingual.idx", report)


class _Same:
    def __init__(self, text: str):
        self.text = text


def misses(index, to_traditional, report: Report) -> None:
    report("", "offline-multilingual, as typed: queries whose first product is not the labelled SKU:")
    for simplified, english, sku in QUERIES:
        for text in (simplified, to_traditional(simplified)):
            first = index.search(text, k=1)[0].key
            if sku is not None and first != sku:
                report(f"  {text} (twin: {english}): labelled {sku}, first {first}")


def one_shot(index: Path, report: Report) -> None:
    """A rough figure, one run on a shared machine: not a benchmark."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.run()", "search", str(index), SEED,
                           "-k", "1", "--json"], capture_output=True, text=True)
    took = time.perf_counter() - began
    first = json.loads(done.stdout)["hits"][0]["key"] if done.returncode == 0 else done.stderr.strip()
    report("", f"one-shot `xmodal search offline-multilingual.idx {SEED} -k 1`: {took:.2f} s once "
               f"({load_line()}); first hit {first}")


if __name__ == "__main__":
    main()
