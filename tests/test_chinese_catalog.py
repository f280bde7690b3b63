"""bench/chinese_catalog.py, the Chinese-language shop catalogue issue 28 measures on: the same catalogue and queries
from the same seed, each product a combination no other has, each query naming its product and only it, and the
dictionary giving English for every word the catalogue uses (else the measurement measures the words chosen)."""
from __future__ import annotations

import csv
import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO))
from bench.chinese_catalog import VOCABULARY, products, queries, write_catalog  # noqa: E402

opencc = pytest.importorskip("opencc", reason="the catalogue writes a share of its listings in traditional characters")


def test_the_same_seed_makes_the_same_catalogue_and_another_seed_another():
    assert products(60, seed=3) == products(60, seed=3)
    assert queries(products(60, seed=3), seed=3) == queries(products(60, seed=3), seed=3)
    assert products(60, seed=3) != products(60, seed=4)


def test_each_product_is_its_own_combination_and_each_query_asks_for_one():
    catalogue = products(240)
    combos = {(p.tint, p.material, p.kind.word) for p in catalogue}
    assert len(combos) == len(catalogue) == len({p.sku for p in catalogue})
    by_sku, simplify = {p.sku: p for p in catalogue}, opencc.OpenCC("t2s").convert
    for query in queries(catalogue):
        product = by_sku[query.sku]
        simplified = simplify(query.chinese)
        assert all(word.chinese in simplified for word in (product.tint, product.material, product.kind.word))
        assert all(word.english in query.english for word in (product.tint, product.material, product.kind.word))
    scripts = {p.traditional for p in catalogue}
    assert scripts == {True, False}  # a share of the listings in traditional characters


def test_the_catalogue_is_written_with_a_photo_per_product(tmp_path):
    catalogue, asked = write_catalog(tmp_path, 20, english=True)
    rows = list(csv.DictReader(open(tmp_path / "products.csv", encoding="utf-8")))
    assert [row["sku"] for row in rows] == [p.sku for p in catalogue]
    assert list(rows[0]) == ["sku", "title", "description", "price", "colour", "image"]
    assert all((tmp_path / row["image"]).stat().st_size > 0 for row in rows)
    assert len(list(csv.DictReader(open(tmp_path / "queries.csv", encoding="utf-8")))) == len(asked) == 20
    english = list(csv.DictReader(open(tmp_path / "products-en.csv", encoding="utf-8")))
    assert [row["sku"] for row in english] == [row["sku"] for row in rows]


def test_the_dictionary_gives_english_for_every_word_the_catalogue_uses():
    pytest.importorskip("jieba", reason="xmodal[zh] is part of .[dev]")
    from xmodal.search.translate import translate

    for word in VOCABULARY:
        english = translate(word.chinese)
        assert english is not None and english.text.isascii(), word
    # the words a plain shop listing says, as the catalogue means them (羊毛 was "fleece", 亚麻 "flax")
    assert translate("红色羊毛大衣").text == "red wool coat"
    assert translate("白色亚麻衬衫").text == "white linen shirt"
