"""What translating a Chinese query costs a one-shot `xmodal search` (issue 28: no more than 0.2 s): whole processes.

    python bench/bench_translate_oneshot.py --runs 15

The demo shop is indexed with the offline model (reads English alone). Then, in fresh processes, round-robin so
that load on a shared machine falls on each alike: the seed's sentence searched as today (translated: CC-CEDICT and
jieba load in the process), the same sentence with --translate off (what a Chinese query cost before translation:
no dictionary), and its English twin. Printed: p50/p95 of each, and of the paired differences per round.
The first run of the session fills the translation cache (~/.cache/xmodal/translate) and is not counted.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_voice import busy_others, cpu_name, load_line  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SHOP = REPO / "data" / "shop" / "products.csv"
XMODAL = [sys.executable, "-c", "from xmodal import cli; cli.run()"]
SEED = "我想要买一辆红色汽车"
KINDS = {"zh, translated": [SEED], "zh, --translate off": [SEED, "--translate", "off"],
         "en twin": ["I want to buy a red car"]}


def seconds(index: Path, query: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([*XMODAL, "search", str(index), *query, "-k", "5"], check=True, capture_output=True)
    return time.perf_counter() - started


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):+.3f} s, p95 {p95:+.3f} s".replace("+", "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    print(f"command: python bench/bench_translate_oneshot.py --runs {args.runs}")
    print(f"machine: {cpu_name()}; at start: {load_line()}; other busy processes: "
          f"{'; '.join(busy_others()) or 'none'}")
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "shop.idx"
        subprocess.run([*XMODAL, "index", "--texts", str(SHOP), "--text-column", "description", "--image-column",
                        "image", "--id-column", "sku", "--model", "offline", "--out", str(index)],
                       check=True, capture_output=True)
        for query in KINDS.values():
            seconds(index, query)  # fills the page cache, the export cache and the translation cache
        times = {kind: [] for kind in KINDS}
        for _ in range(args.runs):
            for kind, query in KINDS.items():
                times[kind].append(seconds(index, query))
    for kind, values in times.items():
        print(f"{kind:<22} {percentiles(values)}")
    for kind in ("zh, --translate off", "en twin"):
        added = [a - b for a, b in zip(times["zh, translated"], times[kind])]
        print(f"translated - {kind:<19} per round: {percentiles(added)}")
    print(f"at end: {load_line()}")


if __name__ == "__main__":
    main()
