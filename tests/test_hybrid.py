"""Hybrid search (issue 29, items 3 and 4): a query's words found in the word index beside the vectors, fused with
its vector ranking, or alone (--mode lexical); a key typed as the query comes first; every hit explains its parts."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.words import analyse, query_terms
from xmodal.search import open_index
from xmodal.search.hybrid import fuse_words
from xmodal.search.voice import SpeechRecognizer, Transcript

ROOT = Path(__file__).resolve().parents[1]
SHOP = ROOT / "data" / "shop" / "products.csv"

PRODUCTS = [
    {"sku": "SHO-004", "title": "Vantrel XR-220 trail runner", "colour": "red", "description": "A red shoe for running"},
    {"sku": "SHO-005", "title": "Canvas sneaker", "colour": "blue", "description": "A blue shoe for every day"},
    {"sku": "MUG-010", "title": "Stoneware mug", "colour": "white", "description": "A white mug that holds coffee"},
    {"sku": "CAR-001", "title": "Toy hatchback", "colour": "green", "description": "A small green car"},
    {"sku": "CAR-002", "title": "Red racer", "colour": "red", "description": "A fast red car"},
    {"sku": "SHO-006", "title": "Quorrix boot", "colour": "N/A", "description": "A black boot for hiking"},
] + [{"sku": f"BOX-{n:03d}", "title": f"Storage box {n}", "colour": "grey", "description": "A plain box"}
     for n in range(100, 106)]


def write_table(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def build(folder: Path, rows: list[dict], name: str = "products.csv", **extra) -> Path:
    config = IndexConfig(texts=[write_table(folder / name, rows)], text_column="description", id_column="sku",
                         workers=0, **extra)
    build_index(folder / "shop.idx", config, encoder=FakeEncoder())
    return folder / "shop.idx"


@pytest.fixture()
def shop(tmp_path):
    return open_index(build(tmp_path, PRODUCTS), encoder=FakeEncoder())


def keys(hits) -> list[str]:
    return [h.key for h in hits]


# ---- a key, a code, a brand --------------------------------------------------------------------------------

@pytest.mark.parametrize("typed, key", [("SHO-004", "SHO-004"), ("sho004", "SHO-004"), ("ＳＨＯ－００４", "SHO-004"),
                                        ("SHO-005 red", "SHO-005"), ("box-103", "BOX-103")])
def test_a_query_that_names_a_key_puts_that_item_first(shop, typed, key):
    hits = shop.search(typed, k=3)
    assert hits.mode == "hybrid" and hits[0].key == key
    assert shop.search(typed, k=3, mode="vector")[0].key != key  # the vectors alone cannot tell SKUs apart


def test_a_model_number_and_a_brand_no_model_knows_are_found_by_their_words(shop):
    assert shop.search("XR-220", k=1)[0].key == "SHO-004"
    assert shop.search("xr220", k=1)[0].key == "SHO-004"
    assert shop.search("quorrix", k=1)[0].key == "SHO-006"


# ---- lexical -----------------------------------------------------------------------------------------------

def test_lexical_returns_exactly_the_items_holding_every_word(shop):
    def holding(*words):
        return {p["sku"] for p in PRODUCTS
                if all(w in analyse(" ".join([p["title"], p["colour"], p["description"], p["sku"]])) for w in words)}

    red = shop.search("red", k=50, mode="lexical")
    assert set(keys(red)) == holding("red") == {"SHO-004", "CAR-002"}
    assert set(keys(shop.search("red car", k=50, mode="lexical"))) == holding("red", "car") == {"CAR-002"}
    assert all(set(h.scores) == {"words"} and h.scores["words"] > 0 for h in red)
    assert shop.search("purple", k=5, mode="lexical") == []
    # a word no row holds is not asked for: "I want to buy" are not a listing's words
    assert keys(shop.search("I want to buy a fast red car", k=5, mode="lexical")) == ["CAR-002"]


def test_lexical_needs_no_model_and_refuses_what_it_cannot_use(tmp_path):
    index = open_index(build(tmp_path, PRODUCTS), encoder=None)
    assert keys(index.search("hiking", mode="lexical")) == ["SHO-006"]
    assert index.loaded_encoder is None
    from xmodal.indexer.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="lexical.*cannot use like"):
        index.search("red", mode="lexical", like=[0])
    with pytest.raises(InvalidInputError, match="unknown mode 'words'"):
        index.search("red", mode="words")


# ---- scores: BM25 across segments, and the fusion ------------------------------------------------------------

def bm25(terms: list[str], documents: dict[int, list[str]], segments: list[set[int]]) -> dict[int, float]:
    """BM25 (k1 1.2, b 0.75, tantivy's idf) with document frequencies over every segment and lengths averaged
    within each row's segment."""
    total = len(documents)
    scores: dict[int, float] = {}
    for segment in segments:
        average = sum(len(documents[r]) for r in segment) / len(segment)
        for row in segment:
            counts = Counter(documents[row])
            score = 0.0
            for term in terms:
                holding = sum(term in d for d in documents.values())
                if counts[term] and holding:
                    idf = math.log(1 + (total - holding + 0.5) / (holding + 0.5))
                    length = len(documents[row])
                    score += idf * counts[term] * 2.2 / (counts[term] + 1.2 * (0.25 + 0.75 * length / average))
            if score:
                scores[row] = score
    return scores


def test_word_scores_are_bm25_over_the_whole_index_not_each_segment(tmp_path):
    """Two tables, two segments: "red" is rare in one and common in the other; its weight is the index's."""
    first = [{"sku": f"A-{n}", "description": "red shoe" if n < 6 else f"plain item {n}"} for n in range(8)]
    second = [{"sku": f"B-{n}", "description": "red car fast" if n == 0 else f"other thing {n}"} for n in range(8)]
    write_table(tmp_path / "first.csv", first)
    write_table(tmp_path / "second.csv", second)
    out = tmp_path / "two.idx"
    for table in ("first.csv", "second.csv"):
        build_index(out, IndexConfig(texts=[tmp_path / table], text_column="description", id_column="sku",
                                     workers=0), encoder=FakeEncoder())
    index = open_index(out, encoder=FakeEncoder())
    assert len(index.manifest.segments) == 2
    rows = {}
    segments = []
    for ref in index.manifest.segments:
        from xmodal.indexer.store import SegmentReader

        items = SegmentReader(out, ref).items(["row_id", "text", "key"])
        ids = items.column("row_id").to_pylist()
        for row, text, key in zip(ids, items.column("text").to_pylist(), items.column("key").to_pylist()):
            rows[row] = analyse(text) + analyse(key) + ["key:" + key.lower().replace("-", "")]
        segments.append(set(ids))
    expected = bm25(query_terms("red car"), rows, segments)
    found = index.search("red car", k=20, mode="lexical", target="text")
    assert keys(found) == ["B-0"]
    hybrid = index.search("red car", k=20, target="text", word_weight=1.0)
    words = {h.row_id: h.scores["words"] for h in hybrid if h.scores["words"] > 0}
    assert words.keys() == expected.keys()
    for row, score in expected.items():
        assert words[row] == pytest.approx(score, rel=1e-4)


def test_hybrid_scores_are_the_fusion_of_cosines_and_word_scores(shop):
    row_ids, vectors = shop.embeddings("text")
    query = "red car"
    cosines = dict(zip(row_ids.tolist(), (vectors @ FakeEncoder().encode_texts([query])[0]).tolist()))
    words = {h.row_id: h.scores["words"] for h in shop.search(query, k=50, target="text", word_weight=1.0)}
    ids = sorted(cosines)  # a dozen rows: every one is a candidate of the vector ranking
    for fusion in ("relative", "rrf"):
        fused = fuse_words(np.array([cosines[i] for i in ids]), np.array([words.get(i, 0.0) for i in ids]), 0.4, fusion)
        order = np.lexsort((ids, -fused))[:5]
        hits = shop.search(query, k=5, target="text", word_weight=0.4, word_fusion=fusion)
        assert [h.row_id for h in hits] == [ids[i] for i in order], fusion
        np.testing.assert_allclose([h.score for h in hits], fused[order], rtol=1e-6)
        assert all(h.scores["vector"] == pytest.approx(cosines[h.row_id], abs=1e-6) for h in hits)


def test_a_query_no_row_has_a_word_of_keeps_its_cosine_ranking(shop):
    hybrid, vector = shop.search("yellow", k=5), shop.search("yellow", k=5, mode="vector")
    assert [(h.row_id, h.score) for h in hybrid] == [(h.row_id, h.score) for h in vector]


# ---- everything composes ---------------------------------------------------------------------------------------

def test_filters_likes_dedup_and_batches_compose_with_words(shop):
    assert keys(shop.search("red", k=5, mode="lexical", where="title == 'Red racer'")) == ["CAR-002"]
    assert "SHO-004" not in keys(shop.search("red", k=5, where="colour != 'red'"))
    liked = shop.search("CAR-002", k=1)[0]
    again = shop.search("red", k=5, like=[liked.row_id])
    assert liked.row_id not in [h.row_id for h in again] and again.mode == "hybrid"
    added = shop.search("red", k=2, add=["car"], target="text")  # the algebra shapes the vector part
    assert added.mode == "hybrid" and added[0].key == "CAR-002" and added[0].scores["words"] > 0
    boxes = shop.search("storage box", k=3, dedup=True)
    assert len({h.text for h in boxes}) == len(boxes)  # six identical descriptions collapse into one hit
    one_by_one = [[(h.row_id, h.score) for h in shop.search(q, k=3, target="text")] for q in ("SHO-004", "red car")]
    batched = shop.search_many(["SHO-004", "red car"], target="text", k=3)
    assert [[(h.row_id, h.score) for h in hits] for hits in batched] == one_by_one
    assert [keys(h) for h in shop.search_many(["red"], target="text", k=9, mode="lexical")] == \
        [keys(shop.search("red", k=9, mode="lexical"))]


class HeardAs(SpeechRecognizer):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def transcribe(self, audio, language=None, translate=False, max_seconds=30.0, name=None) -> Transcript:
        return Transcript(self.text, "en", 0.99, duration=1.0, seconds=0.1)


def test_a_spoken_query_searches_its_words_too(tmp_path):
    index = open_index(build(tmp_path, PRODUCTS), encoder=FakeEncoder(), asr_model=HeardAs("Quorrix"))
    hits = index.search(audio=np.zeros(16_000, np.float32), k=1)
    assert hits.transcript.text == "Quorrix" and hits[0].key == "SHO-006" and hits[0].scores["words"] > 0


def test_an_index_without_words_searches_vectors_and_says_how_to_get_words(tmp_path):
    from test_word_store import _forget_words
    from xmodal.indexer.errors import InvalidInputError

    out = build(tmp_path, PRODUCTS)
    _forget_words(out)
    index = open_index(out, encoder=FakeEncoder())
    assert not index.has_words and index.search("red", k=3).mode == "vector"
    with pytest.raises(InvalidInputError, match=r"has no word index over all its rows \(1 of its 1 segments.*build_index\(\) on it again"):
        index.search("red", mode="hybrid")


# ---- the demo shop, through the CLI ------------------------------------------------------------------------------

def xmodal(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.run()", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def demo_shop(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "shop.idx"
    built = xmodal("index", "--texts", str(SHOP), "--text-column", "description", "--image-column", "image",
                   "--id-column", "sku", "--model", "offline", "--out", str(out))
    assert built.returncode == 0, built.stderr
    return out


def test_the_demo_shop_finds_sho_004_first_and_explains_each_hit(demo_shop):
    found = xmodal("search", str(demo_shop), "SHO-004", "-k", "3", "--json")
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result["query"]["mode"] == "hybrid" and result["hits"][0]["key"] == "SHO-004"
    assert set(result["hits"][0]["scores"]) == {"image", "text", "vector", "words"}
    table = xmodal("search", str(demo_shop), "SHO-004", "-k", "1")
    assert "SHO-004" in table.stdout and "words 8." in table.stdout.split("[")[1]


def test_the_demo_shop_red_in_lexical_mode_is_exactly_the_products_whose_words_say_red(demo_shop):
    with open(SHOP, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    text_columns = [c for c in rows[0] if c not in ("price", "image")]
    red = {r["sku"] for r in rows if "red" in analyse(" ".join(r[c] or "" for c in text_columns))}
    found = xmodal("search", str(demo_shop), "red", "--mode", "lexical", "-k", "50", "--json")
    assert found.returncode == 0, found.stderr
    assert {h["key"] for h in json.loads(found.stdout)["hits"]} == red and len(red) >= 3
    refused = xmodal("search", str(demo_shop), "red", "--mode", "lexical", "--like", "1")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("error: --mode lexical ranks by words alone and cannot use --like")


def test_lexical_finds_every_word_as_typed_or_every_word_of_its_translation(tmp_path):
    rows = [{"sku": "ZH-1", "description": "红色杯子"}, {"sku": "ZH-2", "description": "蓝色杯子"},
            {"sku": "EN-1", "description": "a red mug"}, {"sku": "EN-2", "description": "a blue mug"}]
    index = open_index(build(tmp_path, rows), encoder=FakeEncoder())
    found = index.search("红色", k=10, mode="lexical")
    assert found.translation is not None and found.translation.text == "red"
    assert set(keys(found)) == {"ZH-1", "EN-1"}


def test_a_word_most_rows_hold_is_left_out_of_the_ranking_but_not_out_of_lexical(tmp_path):
    rows = [{"sku": f"S-{n}", "description": "shoe" if n else "red shoe"} for n in range(8)] + \
        [{"sku": "M-1", "description": "red mug"}, {"sku": "M-2", "description": "blue mug"}]
    index = open_index(build(tmp_path, rows), encoder=FakeEncoder())
    words = lambda query: {h.key: h.scores["words"] for h in index.search(query, k=10, target="text", word_weight=1.0)}
    assert words("red shoe") == words("red")  # shoe, in 8 of 10 rows, does not rank
    assert words("shoe")["S-3"] > 0  # alone, it is what there is
    assert keys(index.search("red shoe", k=10, mode="lexical")) == ["S-0"]


def test_a_chinese_query_of_a_chinese_catalogue_leans_on_its_words_and_of_an_english_one_ranks_as_english(tmp_path):
    """The model reads English alone: the vectors of Chinese listings say little, the words as typed say what the
    shop wrote (search.hybrid.WORD_WEIGHTS["unread"]); an English catalogue ranks the translation by its own kind."""
    from xmodal.search.hybrid import WORD_WEIGHTS

    def ranked(index, query, **options):
        return [(h.key, round(h.score, 9)) for h in index.search(query, k=4, **options)]

    chinese = [{"sku": f"ZH-{n}", "description": text} for n, text in
               enumerate(["红色杯子", "蓝色杯子", "红色汽车", "绿色汽车", "黄色自行车"])]
    (tmp_path / "zh").mkdir()
    index = open_index(build(tmp_path / "zh", chinese), encoder=FakeEncoder())
    for typed in ("红色杯子", "紅色杯子"):
        assert ranked(index, typed) == ranked(index, typed, word_weight=WORD_WEIGHTS["unread"])
        assert ranked(index, typed, translate="off") == ranked(index, typed, word_weight=WORD_WEIGHTS["unread"],
                                                               translate="off")
    english = [{"sku": f"EN-{n}", "description": text} for n, text in
               enumerate(["a red mug", "a blue mug", "a red car", "a green car", "a yellow bicycle"])]
    (tmp_path / "en").mkdir()
    index = open_index(build(tmp_path / "en", english), encoder=FakeEncoder())
    assert ranked(index, "红色杯子") == ranked(index, "红色杯子", word_weight=WORD_WEIGHTS["words"])
    assert ranked(index, "红色杯子") != ranked(index, "红色杯子", word_weight=WORD_WEIGHTS["unread"])


# ---- the measured defaults (bench/bench_hybrid.py; docs/search.md, "Words and vectors") -----------------------

from xmodal.search.hybrid import DEFAULT_FUSION, WORD_WEIGHTS, query_kind  # noqa: E402
from xmodal.search.words import _idf  # noqa: E402


def test_a_model_number_typed_with_a_space_finds_the_product_holding_both_its_words_first():
    # "XR 220" has no letters and digits together: query_kind calls it words, not code. On bench_hybrid's
    # 2,000 products "xr" is in 133 model numbers and "220" in 15; the product holding both must come first
    # even where its cosine is the lowest of the candidates and a rival holding "220" alone has the best one
    # (at the placeholder weight 0.5 the rival won: 0.82 against 0.5).
    assert query_kind("XR 220", 2) == "words"
    rows = 2000
    both, number_only = _idf(133, rows) + _idf(15, rows), _idf(15, rows)
    vector = np.array([0.10, 0.30, 0.20, 0.25])  # the product, the rival, two candidates holding no word
    words = np.array([both, number_only, 0.0, 0.0])
    fused = fuse_words(vector, words, WORD_WEIGHTS["words"], DEFAULT_FUSION)
    assert int(np.argmax(fused)) == 0


def test_a_photo_is_found_by_the_words_of_its_file_name(tmp_path):
    """Shops name photos by SKU; a folder of photos has no other words."""
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    for name, colour in (("SHO-004", (200, 30, 30)), ("SHO-005", (30, 30, 200)), ("red_car_01", (30, 200, 30))):
        Image.new("RGB", (32, 24), colour).save(folder / f"{name}.png")
    build_index(tmp_path / "photos.idx", IndexConfig(images=[folder], workers=0), encoder=FakeEncoder())
    index = open_index(tmp_path / "photos.idx", encoder=FakeEncoder())
    assert index.search("sho004", target="image", k=1)[0].path.endswith("SHO-004.png")
    assert [Path(h.path).name for h in index.search("red car", target="image", k=3, mode="lexical")] == ["red_car_01.png"]
