"""A Chinese-language shop catalogue and its shoppers' queries, made from Fashion-MNIST (issue 28, "Chinese catalogs").

    python bench/chinese_catalog.py OUT [--products 240] [--seed 0] [--english]

Each product is one combination of a colour, a kind (a Fashion-MNIST class) and a material or feature, none
repeated: 红色羊毛大衣, a red wool coat. Its photo is a Fashion-MNIST test image of its kind, enlarged as
bench/bench_fusion.py does (dark garment on a light background) and tinted with its colour. Its title and
description are in simplified Chinese, a share of them in traditional characters, the descriptions in several
phrasings. Each query asks for exactly one product (我想买一件红色的羊毛大衣) and has an English twin ("I want to buy
a red wool coat"). Everything is deterministic by seed.

Written to OUT: products.csv (sku, title, description, price, colour, image), images/*.png, queries.csv (chinese,
english, sku, script) and, with --english, products-en.csv: the same catalogue as an English shop would list it.

Only words whose English search/translate.py gives sensibly are used; VOCABULARY lists them with the English
meant, and bench/bench_chinese_catalog.py prints what the translator makes of each.
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "data" / "fashion-mnist-2000.npz"  # bench_fusion.fashion_sample(2000)


@dataclass(frozen=True)
class Word:
    chinese: str
    english: str


@dataclass(frozen=True)
class Kind:
    label: int  # the Fashion-MNIST class
    word: Word
    measure: str  # the measure word a shopper says with it: 一件大衣, 一双凉鞋
    pair: bool  # English says "a pair of" (sandals, trousers)
    sizes: tuple[tuple[str, str], ...]  # (Chinese, English)
    materials: tuple[Word, ...]
    prices: tuple[int, int]  # yuan


def _w(chinese: str, english: str) -> Word:
    return Word(chinese, english)


COTTON, SILK, LINEN, WOOL = _w("纯棉", "cotton"), _w("真丝", "silk"), _w("亚麻", "linen"), _w("羊毛", "wool")
LEATHER, SUEDE, CANVAS = _w("皮革", "leather"), _w("麂皮", "suede"), _w("帆布", "canvas")
STRIPED, WATERPROOF, NYLON = _w("条纹", "striped"), _w("防水", "waterproof"), _w("尼龙", "nylon")
CLOTHES = (("S码", "size S"), ("M码", "size M"), ("L码", "size L"), ("XL码", "size XL"))
SHOES = tuple((f"{n}码", f"size {n}") for n in range(36, 45))
BAGS = (("大号", "large"), ("中号", "medium"), ("小号", "small"))
KINDS = (
    Kind(0, _w("T恤", "t-shirt"), "件", False, CLOTHES, (COTTON, SILK, LINEN, STRIPED, _w("长袖", "long-sleeve")),
         (39, 199)),
    Kind(1, _w("长裤", "trousers"), "条", True, CLOTHES, (COTTON, LINEN, _w("灯芯绒", "corduroy"), WOOL,
                                                       _w("涤纶", "polyester")), (79, 399)),
    Kind(2, _w("毛衣", "sweater"), "件", False, CLOTHES, (WOOL, COTTON, _w("针织", "knitted"), STRIPED,
                                                       _w("复古", "retro")), (99, 599)),
    Kind(3, _w("连衣裙", "dress"), "条", False, CLOTHES, (SILK, _w("蕾丝", "lace"), _w("雪纺", "chiffon"), LINEN,
                                                        STRIPED), (129, 899)),
    Kind(4, _w("大衣", "coat"), "件", False, CLOTHES, (WOOL, LEATHER, WATERPROOF, _w("灯芯绒", "corduroy"), NYLON),
         (299, 1999)),
    Kind(5, _w("凉鞋", "sandals"), "双", True, SHOES, (LEATHER, SUEDE, _w("平底", "flat"),
                                                    _w("轻便", "lightweight"), WATERPROOF), (59, 399)),
    Kind(6, _w("衬衫", "shirt"), "件", False, CLOTHES, (COTTON, SILK, LINEN, _w("法兰绒", "flannel"), STRIPED),
         (69, 459)),
    Kind(7, _w("运动鞋", "sneakers"), "双", True, SHOES, (LEATHER, CANVAS, SUEDE, _w("高帮", "high-top"),
                                                      _w("轻便", "lightweight")), (129, 899)),
    Kind(8, _w("手提包", "handbag"), "个", False, BAGS, (LEATHER, CANVAS, SUEDE, NYLON, WATERPROOF), (99, 1599)),
    Kind(9, _w("短靴", "ankle boots"), "双", True, SHOES, (LEATHER, SUEDE, WATERPROOF, _w("保暖", "warm"),
                                                      _w("复古", "retro")), (199, 1299)),
)
# (Chinese, English, RGB of the tint): 灰色 comes out of the dictionary as "gray", which reads as "grey".
COLOURS = ((_w("红色", "red"), (200, 30, 40)), (_w("黑色", "black"), (20, 20, 20)),
           (_w("白色", "white"), (215, 215, 210)), (_w("蓝色", "blue"), (30, 70, 190)),
           (_w("绿色", "green"), (40, 150, 60)), (_w("黄色", "yellow"), (235, 200, 30)),
           (_w("灰色", "grey"), (128, 128, 128)), (_w("棕色", "brown"), (120, 70, 30)),
           (_w("粉色", "pink"), (240, 140, 180)), (_w("紫色", "purple"), (120, 50, 150)))
# Listing phrasings: Chinese and its English twin. {c} colour, {m} material, {k} kind, {M} measure word, {s} size,
# {a} the English article ("a", or "a pair of"), {This} {is}: "These ... are" for pairs.
DESCRIPTIONS = (
    ("{c}{m}{k}，{s}，几乎全新。", "{C} {m} {k}, {s}, almost new."),
    ("出售一{M}{c}的{m}{k}，{s}，包邮。", "Selling {a} {c} {m} {k}, {s}, shipping included."),
    ("全新{m}{k}，颜色：{c}，{s}。", "New {m} {k}, colour: {c}, {s}."),
    ("特价{m}{k}，{c}，{s}。", "Special price: {m} {k}, {c}, {s}."),
    ("这{M}{k}是{c}的，{m}款，{s}。", "{This} {k} {is} {c}, {m}, {s}."),
    ("新款{c}{k}，{m}，{s}，包邮。", "New style {c} {k}, {m}, {s}, shipping included."),
)
QUERIES = (
    ("我想买一{M}{c}的{m}{k}", "I want to buy {a} {c} {m} {k}"),
    ("有没有{c}的{m}{k}", "do you have {a} {c} {m} {k}"),
    ("{c}{m}{k}", "{c} {m} {k}"),
    ("我要{m}的{k}，{c}的", "I need {a} {m} {k} in {c}"),
    ("给我看看{c}{m}{k}", "show me {a} {c} {m} {k}"),
    ("请问有{m}{k}吗？要{c}的", "do you have {a} {m} {k} in {c}?"),
    ("找一{M}{c}{m}{k}", "looking for {a} {c} {m} {k}"),
)
# Words the phrasings add around the product's own, with the English meant.
FILLERS = (_w("几乎全新", "almost new"), _w("出售", "selling"), _w("包邮", "shipping included"), _w("全新", "new"),
           _w("颜色", "colour"), _w("特价", "special price"), _w("新款", "new style"))
VOCABULARY: tuple[Word, ...] = tuple(dict.fromkeys(
    [colour for colour, _ in COLOURS] + [kind.word for kind in KINDS]
    + [material for kind in KINDS for material in kind.materials] + list(FILLERS)))
TRADITIONAL_SHARE = 0.2  # of listings, and of queries, written in traditional characters
PHOTO_SIDE = 112  # as bench_fusion.PHOTO_SIDE


@dataclass(frozen=True)
class Product:
    sku: str
    title: str
    description: str
    price: int
    colour: str
    image: str  # relative to the CSV
    kind: Kind
    tint: Word  # its colour
    material: Word
    description_en: str
    traditional: bool

    @property
    def title_en(self) -> str:
        return f"{self.tint.english} {self.material.english} {self.kind.word.english}"


@dataclass(frozen=True)
class ShopQuery:
    chinese: str
    english: str
    sku: str
    script: str  # "simplified" | "traditional"


def products(count: int = 240, seed: int = 0) -> list[Product]:
    """`count` products, each a combination no other has, spread evenly over the kinds."""
    combos = len(KINDS) * len(COLOURS) * len(KINDS[0].materials)
    if not 0 < count <= combos:
        raise ValueError(f"a catalogue holds 1 to {combos} products; asked for {count}")
    rng = np.random.default_rng(seed)
    per_kind = [count // len(KINDS) + (i < count % len(KINDS)) for i in range(len(KINDS))]
    chosen = []
    for kind, wanted in zip(KINDS, per_kind):
        grid = [(c, m) for c in range(len(COLOURS)) for m in range(len(kind.materials))]
        chosen += [(kind, *grid[i]) for i in rng.permutation(len(grid))[:wanted]]
    order = rng.permutation(len(chosen))  # kinds mixed, as a shop's rows are
    convert = _to_traditional()
    made = []
    for number, index in enumerate(order, start=1):
        kind, colour, material = chosen[index]
        made.append(_product(f"ZH-{number:04d}", kind, COLOURS[colour][0], kind.materials[material], rng, convert))
    return made


def _product(sku: str, kind: Kind, colour: Word, material: Word, rng: np.random.Generator, convert) -> Product:
    size = kind.sizes[rng.integers(len(kind.sizes))]
    zh, en = DESCRIPTIONS[rng.integers(len(DESCRIPTIONS))]
    fields_zh = dict(c=colour.chinese, m=material.chinese, k=kind.word.chinese, M=kind.measure, s=size[0])
    fields_en = dict(c=colour.english, C=colour.english.capitalize(), m=material.english, k=kind.word.english,
                     a=_article(kind), s=size[1], This="These" if kind.pair else "This",
                     **{"is": "are" if kind.pair else "is"})
    title, description = f"{colour.chinese}{material.chinese}{kind.word.chinese}", zh.format(**fields_zh)
    traditional = bool(rng.random() < TRADITIONAL_SHARE)
    if traditional:
        title, description = convert(title), convert(description)
    price = int(rng.integers(kind.prices[0], kind.prices[1] + 1))
    return Product(sku, title, description, price, convert(colour.chinese) if traditional else colour.chinese,
                   f"images/{sku}.png", kind, colour, material, en.format(**fields_en), traditional)


def queries(catalogue: list[Product], seed: int = 0) -> list[ShopQuery]:
    """One query per product, asking for it alone (its colour, material and kind), with its English twin."""
    rng = np.random.default_rng(seed + 1)
    convert = _to_traditional()
    asked = []
    for product in catalogue:
        kind, colour, material = product.kind, product.tint, product.material
        zh, en = QUERIES[rng.integers(len(QUERIES))]
        chinese = zh.format(c=colour.chinese, m=material.chinese, k=kind.word.chinese, M=kind.measure)
        english = en.format(c=colour.english, m=material.english, k=kind.word.english, a=_article(kind))
        traditional = bool(rng.random() < TRADITIONAL_SHARE)
        asked.append(ShopQuery(convert(chinese) if traditional else chinese, english, product.sku,
                               "traditional" if traditional else "simplified"))
    return asked


def _article(kind: Kind) -> str:
    return "a pair of" if kind.pair else "a"


def _to_traditional():
    import opencc

    return opencc.OpenCC("s2t").convert


def photo(image: np.ndarray, rgb: tuple[int, int, int]):
    """A catalogue photo: the garment (Fashion-MNIST's bright pixels) in the product's colour on white, enlarged."""
    from PIL import Image

    ink = image.astype(np.float32)[..., None] / 255.0
    pixels = 255.0 * (1 - ink) + np.asarray(rgb, dtype=np.float32) * ink
    return Image.fromarray(pixels.round().astype(np.uint8), "RGB").resize((PHOTO_SIDE, PHOTO_SIDE))


def fashion_images(seed: int = 0, sample: Path = SAMPLE) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST test images and labels: the tests' sample, else the dataset (apt-get install
    dataset-fashion-mnist)."""
    if sample.exists():
        with np.load(sample) as data:
            return data["images"], data["labels"]
    from bench.bench_fusion import fashion_sample

    return fashion_sample(10_000, seed)


def write_catalog(folder: Path, count: int = 240, seed: int = 0, english: bool = False
                  ) -> tuple[list[Product], list[ShopQuery]]:
    """products.csv, images/ and queries.csv under `folder` (and products-en.csv with `english`)."""
    catalogue = products(count, seed)
    asked = queries(catalogue, seed)
    images, labels = fashion_images(seed)
    pool = {label: list(np.random.default_rng(seed + 2).permutation(np.flatnonzero(labels == label)))
            for label in range(len(KINDS))}
    tints = {colour.chinese: rgb for colour, rgb in COLOURS}
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for product in catalogue:
        label = product.kind.label
        if not pool[label]:
            raise ValueError(f"too few Fashion-MNIST images of class {label} for {count} products")
        photo(images[pool[label].pop()], tints[product.tint.chinese]).save(folder / product.image)
    _write_csv(folder / "products.csv", ["sku", "title", "description", "price", "colour", "image"],
               [[p.sku, p.title, p.description, p.price, p.colour, p.image] for p in catalogue])
    if english:
        _write_csv(folder / "products-en.csv", ["sku", "title", "description", "price", "colour", "image"],
                   [[p.sku, p.title_en, p.description_en, p.price, p.tint.english, p.image] for p in catalogue])
    _write_csv(folder / "queries.csv", ["chinese", "english", "sku", "script"],
               [[q.chinese, q.english, q.sku, q.script] for q in asked])
    return catalogue, asked


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--products", type=int, default=240)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--english", action="store_true", help="also products-en.csv, the English twin listings")
    args = parser.parse_args()
    catalogue, asked = write_catalog(args.out, args.products, args.seed, args.english)
    print(f"wrote {len(catalogue)} products and {len(asked)} queries to {args.out}")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
