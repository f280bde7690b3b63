"""The word index's analyser (issue 29, item 2): what a shopper types finds the row whose words say it, because a
listing's text and a query go through one analysis (indexer/words.py).

"finds" below means every term of the query is among the listing's terms (a lexical match on all the words);
"ranks" compares how many of a query's terms two rows hold, the part of any word score the analysis decides.
"""
from __future__ import annotations

import csv
import functools
import random
import subprocess
import sys

import pytest

from conftest import REPO, env_with_tests_path
from xmodal.indexer import words
from xmodal.indexer.words import analyse, query_terms, stem

jieba = pytest.importorskip("jieba", reason="xmodal[zh] is part of .[dev]")


@pytest.fixture(scope="module", autouse=True)
def segmenter():
    """jieba's dictionary loads once for the module (about a second), not in the first test that needs it."""
    return words._segmenter()


def finds(query: str, listing: str) -> bool:
    return set(query_terms(query)) <= set(analyse(listing))


def held(query: str, listing: str) -> int:
    return len(set(query_terms(query)) & set(analyse(listing)))


@pytest.mark.parametrize("query, listing", [
    ("kids", "Kid's bike with stabilisers"),  # the example, and a possessive
    ("kid", "Bikes for kids"),
    ("shoe", "Trail running shoes"),
    ("shoes", "A shoe for the trail"),
    ("running", "Shoes to run in"),
    ("run", "Running shoes"),
    ("dress", "Summer dresses"),
    ("dresses", "A linen dress"),
    ("hike", "Hiking boots"),
    ("charging cable", "Charge cable, 2 m"),
    ("boxes", "A lunch box"),
    ("watch", "Men's watches"),
    ("hoodie", "Hoodies in grey"),
    ("berries", "A berry tart"),
    ("t-shirt", "T-Shirts, pack of three"),
    ("tshirt", "Plain T-Shirt"),
    ("T shirt", "T-Shirt"),
    ("scarf", "Wool scarves"),
    ("computer mouse", "Computer mice"),
    ("women", "Women's coats"),
    ("RED", "red apples"),  # case folding
    ("strasse", "Straße"),  # Unicode case folding, not lower()
    ("cafe", "Café au lait mug"),
    ("O'Neill", "oneill jacket"),
    ("a red running shoe", "Red shoe for running"),  # English function words are no terms
])
def test_english_words_find_their_listing(query, listing):
    assert finds(query, listing), (query_terms(query), analyse(listing))


@pytest.mark.parametrize("query, listing", [
    ("leggings", "leg warmers"), ("organic", "organ pipes"), ("kite", "a first aid kit"),
    ("earring", "ear muffs"), ("designer", "design"), ("electronics", "electron microscope"),
    ("evening", "an even finish"), ("red", "a reed diffuser"), ("dress", "dres"),
])
def test_light_stemming_keeps_apart_what_a_shopper_does(query, listing):
    assert not set(query_terms(query)) & set(analyse(listing)), (query_terms(query), analyse(listing))


@pytest.mark.parametrize("word, expected", [
    ("kids", "kid"), ("shoes", "shoe"), ("running", "run"), ("dress", "dress"), ("dresses", "dress"),
    ("glasses", "glass"), ("hiking", "hike"), ("hike", "hike"), ("boxes", "box"), ("watches", "watch"),
    ("toys", "toy"), ("berries", "berri"), ("ties", "tie"), ("added", "add"), ("printed", "print"),
    ("faded", "fade"), ("red", "red"), ("bed", "bed"), ("ring", "ring"), ("string", "string"),
    ("bus", "bus"), ("gas", "gas"), ("news", "news"), ("earring", "earring"), ("evening", "evening"),
    ("leggings", "legging"), ("dying", "die"), ("organic", "organic"), ("electronics", "electronic"),
    ("men", "man"), ("mens", "man"), ("42", "42"), ("汽车", "汽车"), ("ab", "ab"),
])
def test_the_stemmer_is_light(word, expected):
    assert stem(word) == expected


@pytest.mark.parametrize("text, expected", [
    ("SHO-004", ["sho-004", "sho004", "sho", "004"]),  # whole, glued, parts
    ("sho004", ["sho004", "sho", "004"]),
    ("SHO 004", ["sho", "004"]),
    ("ＳＨＯ－００４", ["sho-004", "sho004", "sho", "004"]),  # full width, as an IME types it
    ("XR-220", ["xr-220", "xr220", "xr", "220"]),
    ("RTX4090", ["rtx4090", "rtx", "4090"]),
    ("iPhone15", ["iphone15", "iphon", "15"]),
    ("4k", ["4k", "4", "k"]),
    ("Sho_004", ["sho-004", "sho004", "sho", "004"]),  # one joiner in the whole
    ("1/2", ["1-2", "1", "2"]),  # digits meeting digits are not glued: 1/2 is not 12
    ("2024-01-15", ["2024-01-15", "2024", "01", "15"]),
    ("v1.5.2", ["v1-5-2", "v", "1", "5", "2"]),
    ("T-Shirts", ["t-shirt", "tshirt", "t", "shirt"]),  # a compound of words is stemmed throughout
])
def test_codes_are_kept_whole_and_in_parts(text, expected):
    assert analyse(text) == expected


@pytest.mark.parametrize("query", ["SHO-004", "sho004", "SHO 004", "sho-004", "Sho_004", "sho/004"])
def test_a_sku_finds_its_row_above_its_neighbour(query):
    row, neighbour = "SHO-004 Blue running shoe", "SHO-005 Red running shoe"
    assert finds(query, row) and held(query, row) > held(query, neighbour)


@pytest.mark.parametrize("query", ["XR-220", "xr220", "XR 220", "Vantrel XR-220", "vantrel xr220"])
def test_a_model_number_finds_its_row_above_its_neighbour(query):
    row, neighbour = "Vantrel XR-220 blender, 1.5 L", "Vantrel XR-230 blender, 2 L"
    assert finds(query, row) and held(query, row) > held(query, neighbour)


@pytest.mark.parametrize("query, listing", [
    ("RTX 4090", "Graphics card RTX4090"), ("rtx4090", "RTX4090 Ti"), ("iPhone 15", "iPhone15 case"),
    ("iPhone15", "Case for iPhone15 Pro"), ("iphone", "iPhone15 case"),
])
def test_model_numbers_split_at_letters_and_digits(query, listing):
    assert finds(query, listing)


@pytest.mark.parametrize("query, listing, found", [
    ("size 42", "Trail shoe, size 42", True),
    ("42", "Trail shoe, size 42", True),
    ("EU 42", "Trail shoe, EU 42", True),
    ("42", "Trail shoe, EU 42", True),
    ("42", "Trail shoe, 42EU", True),
    ("42", "Trail shoe, size 43", False),
    ("1.5", "Water bottle 1.5 L", True),
    ("15", "Water bottle 1.5 L", False),  # a decimal is one term, not its halves
    ("1.5", "iPhone 15", False),
    ("18500", "Red sports car, 18,500 miles", True),  # thousands grouped or not
    ("004", "SHO-004", True),
    ("4", "SHO-004", False),  # numbers as written: "size 4" is not every SKU ending in 004
])
def test_numbers_and_sizes(query, listing, found):
    assert bool(set(query_terms(query)) & set(analyse(listing))) is found, (query_terms(query), analyse(listing))


def test_sizes_share_the_number_whatever_their_system():
    assert {"42"} <= set(query_terms("size 42")) & set(analyse("EU 42")) & set(analyse("42"))


@pytest.mark.parametrize("query, listing", [
    ("红色汽车", "一辆红色的家用汽车"),  # the example
    ("紅色汽車", "一辆红色的家用汽车"),  # traditional characters find the simplified listing
    ("红色汽车", "一輛紅色的家用汽車"),  # and the other way round
    ("汽车", "红色汽车"), ("红色", "红色汽车"),  # cut for search: a compound's words find it
    ("运动鞋", "儿童运动鞋"), ("运动", "儿童运动鞋"),
    ("我想要买一辆红色汽车", "红色汽车"),  # who wants it, and how many, are no terms
])
def test_chinese_words_find_their_listing(query, listing):
    assert finds(query, listing), (query_terms(query), analyse(listing))


@pytest.mark.parametrize("text, expected", [
    ("红色汽车", ["红色", "汽车"]),
    ("紅色汽車", ["红色", "汽车"]),
    ("一辆红色的家用汽车", ["红色", "家用", "汽车"]),
    ("我想要买一辆红色汽车", ["红色", "汽车"]),
    ("iPhone 15 手机壳 黑色", ["iphon", "15", "手机", "壳", "黑色"]),  # mixed text
    ("iPhone15手机壳", ["iphone15", "iphon", "15", "手机", "壳"]),  # no space between scripts
    ("42码 运动鞋", ["42", "码", "运动", "运动鞋"]),
])
def test_chinese_and_mixed_text(text, expected):
    assert analyse(text) == expected


def test_chinese_and_blue_cars_stay_apart():
    assert not finds("蓝色汽车", "一辆红色的家用汽车") and held("红色汽车", "一辆红色的家用汽车") == 2


def test_analyse_counts_repeats_and_query_terms_do_not():
    assert analyse("Red car, red seats, RED") == ["red", "car", "red", "seat", "red"]
    assert query_terms("Red car, red seats, RED") == ["red", "car", "seat"]
    assert query_terms("") == [] and query_terms(" -/. ,!") == [] and query_terms("the for a") == []
    assert all(type(term) is str for term in analyse("SHO-004 红色汽车 Kids 1.5"))


def test_translation_shares_the_chinese_function_words():
    from xmodal.search import translate

    assert translate.FUNCTION_WORDS is words.FUNCTION_WORDS and translate.MEASURES is words.MEASURES


def catalogue_rows() -> list[dict[str, str]]:
    rows = []
    for path in (REPO / "data" / "shop" / "products.csv", REPO / "data" / "catalog" / "listings.csv"):
        with open(path, newline="", encoding="utf-8") as handle:
            rows += list(csv.DictReader(handle))
    return rows + made_up_rows(random.Random(29), 300)


PIECES = ["SHO-004", "XR-220", "Vantrel", "RTX4090", "iPhone15", "iPhone 15", "size 42", "EU 42", "1.5 L",
          "18,500", "Kids'", "running", "shoes", "dresses", "T-Shirts", "Straße", "café", "ＳＨＯ－００４",
          "红色汽车", "紅色汽車", "一辆", "家用", "手机壳", "黑色", "运动鞋", "的", "我想要买", "4k", "1/2", "v2.1",
          "a", "the", "for", "hoodies", "O'Neill", "x_99", "B&W", "50%", "(new)", "—", "42码"]


def made_up_rows(rng: random.Random, count: int) -> list[dict[str, str]]:
    """Titles and descriptions joined from codes, words and Chinese in every order, with or without spaces."""
    def text(n: int) -> str:
        return "".join(rng.choice(PIECES) + rng.choice([" ", " ", ", ", "", "/"]) for _ in range(n))

    return [{"sku": f"MADE-{i:03d}", "title": text(rng.randint(1, 5)), "description": text(rng.randint(0, 12))}
            for i in range(count)]


def typed(title: str, how: int) -> str:
    """The title as a shopper might type it: as listed, in capitals, in small letters, at full width (an IME's
    Latin), or in traditional characters."""
    if how == 1:
        return title.upper()
    if how == 2:
        return title.lower()
    if how == 3:
        return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in title)
    if how == 4:
        return traditional()(title)
    return title


@functools.cache
def traditional():
    import opencc

    return opencc.OpenCC("s2t").convert


def test_every_title_finds_its_own_row():
    """The property a word index rests on: a row's title, searched as a query however it is typed, finds that
    row, whatever the title holds; the row's terms are its text columns' joined, as an index may store them."""
    for row in catalogue_rows():
        stored = set(analyse("\n".join(cell or "" for cell in row.values())))
        for how in range(5):
            assert set(query_terms(typed(row["title"], how))) <= stored, (how, row)


def test_identity_names_what_decides_the_terms():
    assert words.identity() == f"words {words.VERSION}; jieba {jieba.__version__}; opencc " \
                               f"{__import__('importlib.metadata').metadata.version('opencc')}"


def analyse_in_a_process(code: str, tmp_path) -> str:
    env = env_with_tests_path() | {"XDG_CACHE_HOME": str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_jieba_loads_its_dictionary_from_xmodals_cache(tmp_path):
    """jieba caches its parsed dictionary in /tmp by default; xmodal keeps it under ~/.cache/xmodal/words."""
    code = "from xmodal.indexer.words import analyse; print(analyse('紅色汽車'))"
    assert analyse_in_a_process(code, tmp_path) == "['红色', '汽车']"
    assert (tmp_path / "cache" / "xmodal" / "words" / "jieba.cache").stat().st_size > 1_000_000
    assert list((tmp_path / "tmp").iterdir()) == []
    assert analyse_in_a_process(code, tmp_path) == "['红色', '汽车']"  # and from the cache


def test_without_jieba_and_opencc_chinese_is_its_characters(tmp_path):
    code = ("import sys; sys.modules['jieba'] = sys.modules['opencc'] = None\n"
            "from xmodal.indexer.words import analyse, identity; print(analyse('紅色的汽车 SHO-004'), identity())")
    assert analyse_in_a_process(code, tmp_path) == (f"['紅', '色', '汽', '车', 'sho-004', 'sho004', 'sho', '004'] "
                                                    f"words {words.VERSION}; no jieba; no opencc")


def test_english_text_loads_neither_jieba_nor_opencc(tmp_path):
    code = ("import sys; from xmodal.indexer.words import analyse, identity; analyse('Kids SHO-004, size 42'); "
            "identity(); print(sorted(m for m in ('jieba', 'opencc') if m in sys.modules))")
    assert analyse_in_a_process(code, tmp_path) == "[]"
