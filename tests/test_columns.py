"""Missing values and column types: markers are nulls, a column of numbers stays numeric, a column made text
by a few words says which line did it, types can be set, `contains` finds text, and nulls never pass.

Real CSV, JSONL and Parquet files, indexed by a real `xmodal index` subprocess where the CLI is what is
tested; every filter is checked against a Python oracle that reads the same file with the csv module.
"""
from __future__ import annotations

import csv
import json
import os
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import xmodal.search.engine as engine
from conftest import CATALOG
from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.errors import InvalidInputError
from xmodal.indexer.models import ModelIdentity, l2_normalize
from xmodal.indexer.build.sources import read_corpus, stream_corpus
from xmodal.indexer.store import IndexDir
from xmodal.search import open_index
from xmodal.search.filters import FilterError, parse_filter
from test_cli import FAKE, xmodal

MARKERS = {"", "na", "n/a", "null", "none", "-", "nan"}  # the default missing markers, as docs/sources.md lists them

SHOP = """id,title,price,zip,text
1,Red sports car,18500,01234,a red car
2,Blue mug,N/A,02000,a blue mug
3,Green shirt,,12345,a green shirt
4,Yellow mug,-,54321,a yellow mug
5,Old bike,nan,00042,an old bike
6,New bike,null,99999,a new bike
7,Cheap pen,1.5,N/A,a cheap pen
8,Red mug,12,10001,a red mug
9,Box of apples, 6 ,NULL,a box of apples
10,Golden watch,120,20002,a golden watch
11,Paper clips,None,30003,a box of paper clips
12,Blue pencil,19.99,40004,a blue pencil
"""


def oracle(path, column: str, test) -> set[str]:
    """Titles of the rows whose `column` passes `test`, a missing value (a marker) never passing."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {r["title"] for r in rows if test(None if r[column].strip().lower() in MARKERS else r[column].strip())}


def number(cell):
    try:
        return float(cell)
    except (TypeError, ValueError):
        return None


def titles(out, where: str, target: str = "text") -> set[str]:
    found = xmodal("search", str(out), "anything", "--target", target, "-k", "100", "--where", where, "--json")
    assert found.returncode == 0, found.stderr
    return {h["metadata"]["title"] for h in json.loads(found.stdout)["hits"]}


def refused(out, where: str) -> str:
    """The one line a refused filter prints (exit 2)."""
    result = xmodal("search", str(out), "anything", "--target", "text", "--where", where)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, \
        result.stderr
    return result.stderr


def column_lines(run) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("column ")]


@pytest.fixture
def shop(tmp_path):
    path = tmp_path / "shop.csv"
    path.write_text(SHOP, encoding="utf-8")
    return path


def test_missing_markers_are_nulls_and_a_price_column_stays_numeric(shop, tmp_path):
    out = tmp_path / "idx"
    run = xmodal("index", "--texts", str(shop), "--out", str(out), "--model", FAKE)
    assert run.returncode == 0, run.stderr
    assert column_lines(run) == ["column id (shop.csv): int, 0 nulls", "column title (shop.csv): text, 0 nulls",
                                 "column price (shop.csv): float, 6 nulls", "column zip (shop.csv): text, 2 nulls"]
    cheap = oracle(shop, "price", lambda v: v is not None and float(v) < 20)
    assert cheap == {"Cheap pen", "Red mug", "Box of apples", "Blue pencil"}
    assert titles(out, "price < 20") == cheap
    assert titles(out, "price == null") == oracle(shop, "price", lambda v: v is None)
    assert titles(out, "price != null") == oracle(shop, "price", lambda v: v is not None)
    assert titles(out, "not (price < 20)") == oracle(shop, "price", lambda v: v is not None and float(v) >= 20)
    assert titles(out, "zip == '01234'") == {"Red sports car"}  # leading zeros: an identifier, kept as text
    assert titles(out, "zip == null") == {"Cheap pen", "Box of apples"}
    info = xmodal("info", str(out))
    assert "columns:  id int, title text, price float (6 nulls), zip text (2 nulls)\n" in info.stdout
    [source] = json.loads(xmodal("info", str(out), "--json").stdout)["sources"]
    assert [(c["name"], c["type"], c["nulls"]) for c in source["columns"]] == [
        ("id", "int", 0), ("title", "text", 0), ("price", "float", 6), ("zip", "text", 2)]
    os.utime(shop, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))  # the same file, read again
    again = xmodal("index", "--out", str(out))
    assert again.returncode == 0 and "encoded 0, reused 12" in again.stdout, again.stdout + again.stderr
    manifest = IndexDir(out).read_manifest()
    assert len(manifest.segments) == 1 and manifest.segments[0].deleted_count == 0  # nulls equal nulls: kept


def test_a_few_words_keep_a_column_text_and_a_filter_says_which_line(shop, tmp_path):
    shop.write_text(SHOP.replace("10,Golden watch,120,", "10,Golden watch,call us,"), encoding="utf-8")
    out = tmp_path / "idx"
    run = xmodal("index", "--texts", str(shop), "--out", str(out), "--model", FAKE)
    assert run.returncode == 0, run.stderr
    assert "column price (shop.csv): text, 6 nulls; mostly numbers, but line 11 holds 'call us' (if that means " \
           "missing, add it to --na-values)" in column_lines(run)
    message = refused(out, "price < 20")
    assert message == ('error: price is text, not numbers: line 11 of shop.csv holds \'call us\'; if that means a '
                       'missing value, index shop.csv again with --na-values "NA,N/A,null,None,-,nan,call us", '
                       'or fix that line\n')
    assert "quote" not in refused(out, "price in [12, 20]")
    assert "columns:  id int, title text, price text (6 nulls; line 11 holds 'call us')" in \
        xmodal("info", str(out)).stdout

    fixed = xmodal("index", "--texts", str(shop), "--out", str(out), "--na-values", "NA,N/A,null,None,-,nan,call us")
    assert fixed.returncode == 0 and "encoded 0" in fixed.stdout, fixed.stdout + fixed.stderr
    assert "column price (shop.csv): float, 7 nulls" in column_lines(fixed)
    cheap = {"Cheap pen", "Red mug", "Box of apples", "Blue pencil"}
    assert titles(out, "price < 20") == cheap  # every row re-typed, "12" included
    assert titles(out, "price == null") == oracle(shop, "price", lambda v: v is None) | {"Golden watch"}


def test_fixing_the_cell_retypes_rows_whose_text_reads_like_the_number(shop, tmp_path):
    """Stored as text, "12" and 12 print alike; the re-run must still rewrite the row, or the column stays text."""
    shop.write_text(SHOP.replace("10,Golden watch,120,", "10,Golden watch,call us,"), encoding="utf-8")
    out = tmp_path / "idx"
    build_index(out, IndexConfig(texts=[shop]), encoder=FakeEncoder())
    shop.write_text(SHOP, encoding="utf-8")
    report = build_index(out, IndexConfig(texts=[shop]), encoder=FakeEncoder())
    assert report.stats.encoded == 0
    index = open_index(out, encoder=FakeEncoder())
    hits = index.search(text="x", target="text", k=100, where="price < 20")
    assert {h.metadata["title"] for h in hits} == {"Cheap pen", "Red mug", "Box of apples", "Blue pencil"}
    assert {h.metadata["price"] for h in hits} == {1.5, 12.0, 6.0, 19.99}


def test_na_values_changes_the_set_and_is_recorded(tmp_path):
    path = tmp_path / "stock.csv"
    path.write_text("title,price,text\nPen,5,a pen\nMug,unknown,a mug\nCar,unknown,a car\nBike,N/A,a bike\n",
                    encoding="utf-8")
    out = tmp_path / "idx"
    build_index(out, IndexConfig(texts=[path]), encoder=FakeEncoder())  # "unknown" is no default marker
    [source] = IndexDir(out).read_manifest().sources
    assert source.columns[1] == {"name": "price", "type": "text", "nulls": 1}  # one value of three is a number
    report = build_index(out, IndexConfig(texts=[path], na_values=["unknown", "N/A"]), encoder=FakeEncoder())
    assert report.committed and [(c.name, c.type, c.nulls) for c in report.columns[str(path)]] == [
        ("title", "text", 0), ("price", "int", 3)]
    index = open_index(out, encoder=FakeEncoder())
    assert {h.text for h in index.search(text="x", target="text", k=9, where="price < 100")} == {"a pen"}
    report = build_index(out, IndexConfig(texts=[path]), encoder=FakeEncoder())  # as recorded: not read again
    assert report.columns == {} and IndexDir(out).read_manifest().sources[0].na_values == ("unknown", "N/A")
    report = build_index(out, IndexConfig(texts=[path], na_values=["unknown"]), encoder=FakeEncoder())
    assert [(c.name, c.type, c.nulls) for c in report.columns[str(path)]] == [
        ("title", "text", 0), ("price", "text", 2)]  # N/A is a value now, and a text one
    report = build_index(out, IndexConfig(texts=[path], na_values=[]), encoder=FakeEncoder())  # only empty cells
    assert report.columns[str(path)][1].nulls == 0
    ran = xmodal("index", "--out", str(out), "--na-values", "unknown")
    assert ran.returncode == 2 and ran.stderr == (
        "error: --na-values applies to the tables named in the same run; name them with --texts FILE\n")


def test_a_corpus_recorded_before_columns_were_is_read_once_more_and_retyped(shop, tmp_path):
    out = tmp_path / "idx"
    build_index(out, IndexConfig(texts=[shop], na_values=["N/A"]), encoder=FakeEncoder())  # as before: "-" was text
    manifest = json.loads((out / "manifest.json").read_text())
    for source in manifest["sources"]:  # what an index written before this xmodal recorded
        del source["columns"], source["na_values"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    report = build_index(out, IndexConfig(), encoder=FakeEncoder())
    assert report.committed and report.stats.encoded == 0
    assert [(c.name, c.type) for c in report.columns[str(shop)]][2] == ("price", "float")
    again = build_index(out, IndexConfig(), encoder=FakeEncoder())
    assert not again.committed and again.columns == {}  # recorded now: not read again


def test_column_types_set_what_inference_would_get_wrong(tmp_path):
    path = tmp_path / "stores.csv"
    path.write_text("title,zip,price,open,text\nNorth,12345,20,yes,north shop\nSouth,02134,35,no,south shop\n"
                    "East,N/A,12,yes,east shop\n", encoding="utf-8")
    out = tmp_path / "idx"
    run = xmodal("index", "--texts", str(path), "--out", str(out), "--model", FAKE,
                 "--column-types", "price=float,zip=str,open=bool")
    assert run.returncode == 0, run.stderr
    assert column_lines(run) == ["column title (stores.csv): text, 0 nulls",
                                 "column zip (stores.csv): text (set by --column-types), 1 null",
                                 "column price (stores.csv): float (set by --column-types), 0 nulls",
                                 "column open (stores.csv): bool (set by --column-types), 0 nulls"]
    found = xmodal("search", str(out), "shop", "--target", "text", "-k", "9", "--where", "zip == '12345'", "--json")
    [hit] = json.loads(found.stdout)["hits"]
    assert hit["metadata"] == {"title": "North", "zip": "12345", "price": 20.0, "open": True}
    assert titles(out, "open == true and price < 30") == {"North", "East"}
    info = xmodal("info", str(out))
    assert "(texts, column_types open=bool,price=float,zip=text)" in info.stdout
    assert "columns:  title text, zip text (set; 1 null), price float (set), open bool (set)" in info.stdout


@pytest.mark.parametrize("types,message", [
    ("price=money", "error: unknown column type 'money' for price in --column-types; use int, float, bool or str"),
    ("prize=float", "error: stores.csv has no column 'prize' (named in --column-types); its columns are title, "
                    "zip, price, text"),
    ("title=int", "error: stores.csv line 2: title holds 'North', which is not an int (--column-types sets "
                  "title=int); fix that line, or count it as missing with --na-values"),
    ("zip=float", "error: stores.csv line 4: zip holds 'n.a.', which is not a float"),
    ("text=str", "error: text is the text column of stores.csv, always read as text; leave it out of "
                 "--column-types"),
    ("price", "error: --column-types takes NAME=TYPE pairs, e.g. price=float,zip=str (got 'price')"),
])
def test_a_bad_column_type_is_one_line_and_nothing_is_written(tmp_path, types, message):
    path = tmp_path / "stores.csv"
    path.write_text("title,zip,price,text\nNorth,12345,20,north shop\nSouth,02134,35,south shop\n"
                    "East,n.a.,12,east shop\n", encoding="utf-8")
    new = tmp_path / "new"
    result = xmodal("index", "--texts", str(path), "--out", str(new), "--model", FAKE, "--column-types", types)
    assert result.returncode == 2 and result.stderr.startswith(message) and result.stderr.count("\n") == 1, \
        result.stderr
    assert not new.exists()
    existing = tmp_path / "existing"
    assert xmodal("index", "--texts", str(path), "--out", str(existing), "--model", FAKE).returncode == 0
    before = {p: p.read_bytes() for p in existing.rglob("*") if p.is_file()}
    result = xmodal("index", "--texts", str(path), "--out", str(existing), "--column-types", types)
    assert result.returncode == 2 and result.stderr.startswith(message)
    assert {p: p.read_bytes() for p in existing.rglob("*") if p.is_file()} == before


def test_jsonl_and_parquet_nulls_stay_nulls_and_markers_in_text_cells_are_nulls(tmp_path):
    jsonl = tmp_path / "items.jsonl"
    jsonl.write_text('{"text": "a pen", "price": 5, "brand": "Acme"}\n'
                     '{"text": "a mug", "price": "N/A", "brand": "n/a"}\n'
                     '{"text": "a car", "price": null, "brand": null}\n'
                     '{"text": "a bike", "price": 12.5}\n'
                     '{"text": "a hat", "price": NaN, "brand": ""}\n', encoding="utf-8")
    corpus = read_corpus(jsonl)
    assert [r.metadata for r in corpus.records] == [
        {"price": 5.0, "brand": "Acme"}, {"price": None, "brand": None}, {"price": None, "brand": None},
        {"price": 12.5, "brand": None}, {"price": None, "brand": None}]
    assert [(c.name, c.type, c.nulls) for c in corpus.columns] == [("price", "float", 3), ("brand", "text", 4)]

    parquet = tmp_path / "items.parquet"
    pq.write_table(pa.table({"text": ["a pen", "a mug", "a car", "", "a hat"],
                             "price": pa.array([5.0, float("nan"), None, 1.0, 7.0], pa.float32()),
                             "brand": ["Acme", " N/A ", None, "x", "null"],
                             "stock": pa.array([1, None, 3, 4, None], pa.int16())}), parquet)
    whole = read_corpus(parquet)
    streamed = list(stream_corpus(parquet))
    assert [m for b in streamed for m in b.metadata.to_pylist()] == [r.metadata for r in whole.records] == [
        {"price": 5.0, "brand": "Acme", "stock": 1}, {"price": None, "brand": None, "stock": None},
        {"price": None, "brand": None, "stock": 3}, {"price": 7.0, "brand": None, "stock": None}]
    out = tmp_path / "idx"
    report = build_index(out, IndexConfig(texts=[jsonl, parquet]), encoder=FakeEncoder())
    assert [(c.name, c.type, c.nulls) for c in report.columns[str(parquet)]] == [
        ("price", "float", 2), ("brand", "text", 3), ("stock", "int", 2)]  # the row without text is no item
    index = open_index(out, encoder=FakeEncoder())
    assert sorted(h.text for h in index.search(text="x", target="text", k=20, where="price < 10")) == \
        ["a hat", "a pen", "a pen"]
    assert sorted(h.text for h in index.search(text="x", target="text", k=20, where="price == null")) == \
        ["a car", "a car", "a hat", "a mug", "a mug"]


def test_a_null_bearing_number_column_unifies_with_the_same_column_of_another_corpus(shop, tmp_path):
    whole = tmp_path / "whole.csv"  # prices in whole numbers, and missing ones: int64 with nulls
    whole.write_text("title,price,text\nTeapot,15,a teapot\nKettle,N/A,a kettle\nToaster,45,a toaster\n",
                     encoding="utf-8")
    more = tmp_path / "more.jsonl"
    more.write_text('{"text": "a red pen", "title": "Red pen", "price": 2.5}\n'
                    '{"text": "a blue car", "title": "Blue car", "price": null}\n'
                    '{"text": "a green car", "title": "Green car", "price": 25000}\n', encoding="utf-8")
    out = tmp_path / "idx"
    for corpus in (shop, whole, more):  # a segment each, each typed on its own
        build_index(out, IndexConfig(texts=[corpus]), encoder=FakeEncoder())
    index = open_index(out, encoder=FakeEncoder())
    cheap = {h.metadata["title"] for h in index.search(text="x", target="text", k=50, where="price < 20")}
    assert cheap == oracle(shop, "price", lambda v: v is not None and float(v) < 20) | {"Teapot", "Red pen"}
    missing = {h.metadata["title"] for h in index.search(text="x", target="text", k=50, where="price == null")}
    assert missing == oracle(shop, "price", lambda v: v is None) | {"Kettle", "Blue car"}


def test_a_products_table_with_missing_prices_and_photos(tmp_path):
    table = tmp_path / "listings.csv"
    rows = (CATALOG / "listings.csv").read_text(encoding="utf-8").splitlines()
    rows[3] = rows[3].replace(",22000,", ",N/A,")  # the green vintage car: price on request
    rows[5] = rows[5].replace("images/05-white-shoe.png", "N/A")  # the sneakers: no photo
    table.write_text("\n".join(rows).replace("images/", str(CATALOG / "images") + "/") + "\n", encoding="utf-8")
    out = tmp_path / "idx"
    report = build_index(out, IndexConfig(texts=[table], text_column="description", image_column="image",
                                          workers=0), encoder=FakeEncoder())
    assert report.failures == [] and report.counts["product"] == 12  # "N/A" is no photo, not a missing file
    assert ("price", "int", 1) in [(c.name, c.type, c.nulls) for c in report.columns[str(table)]]
    index = open_index(out, encoder=FakeEncoder())
    over = index.search(text="a car", target="product", k=20, where="price > 10000")
    assert [h.metadata["title"] for h in over] == ["Red sports car"]
    assert [h.metadata["title"] for h in index.search(text="a car", target="product", where="price == null")] == \
        ["Green vintage car"]


TABLE = pa.table({"price": [18500, None, 45, None], "title": ["Red CAR", "blue car", None, "Mug"]})


@pytest.mark.parametrize("where,expected", [
    ("price > 100", [True, False, False, False]),
    ("not (price > 100)", [False, False, True, False]),
    ("price != 45", [True, False, False, False]),
    ("not (price == 45 or title == 'Mug')", [True, False, False, False]),
    ("price > 100 or title contains 'car'", [True, True, False, False]),
    ("not (price > 100 and title contains 'mug')", [True, True, True, False]),
    ("price == null", [False, True, False, True]),
    ("price in [45, null]", [False, True, True, True]),
    ("not price in [45, null]", [True, False, False, False]),
    ("title contains 'car'", [True, True, False, False]),
    ("title not contains 'car'", [False, False, False, True]),
    ("not (title contains 'car')", [False, False, False, True]),
])
def test_nulls_never_pass_a_comparison(where, expected):
    assert parse_filter(where).mask(TABLE).tolist() == expected


@pytest.mark.parametrize("where,message", [
    ("price contains '1'", "price holds number values; contains finds text within text"),
    ("title contains 3", "contains takes a quoted text, e.g. title contains '3'"),
    ("title contains null", "contains takes a quoted text"),
    ("title not < 3", "expected 'in' or 'contains' after 'not'"),
    ("title ~ 'car'", "compare with ==, !=, <, <=, >, >=, in or contains"),
])
def test_contains_errors_name_the_fix(where, message):
    with pytest.raises(FilterError) as caught:
        parse_filter(where).mask(TABLE)
    assert message in str(caught.value)


@pytest.fixture(scope="module")
def catalog_index(tmp_path_factory):
    out = tmp_path_factory.mktemp("catalog") / "idx"
    build_index(out, IndexConfig(texts=[CATALOG / "listings.csv"], text_column="description", image_column="image",
                                 workers=0), encoder=FakeEncoder())
    return out


@pytest.mark.parametrize("pattern", ["car", "CAR", "Red", "t-shirt", "e", "", "zzz", "CYCLE", ".", "s.*r"])
def test_contains_matches_a_python_oracle_on_the_demo_catalog(catalog_index, pattern):
    index = open_index(catalog_index, encoder=FakeEncoder())
    with open(CATALOG / "listings.csv", newline="", encoding="utf-8") as handle:
        listings = list(csv.DictReader(handle))
    for negate in (False, True):
        where = f"title {'not ' if negate else ''}contains '{pattern}'"
        want = {r["title"] for r in listings if (pattern.lower() in r["title"].lower()) != negate}
        got = {h.metadata["title"] for h in index.search(text="x", target="product", k=50, where=where)}
        assert got == want, where


def test_cli_contains_on_the_demo_catalog(tmp_path):
    out = tmp_path / "idx"
    assert xmodal("index", "--texts", str(CATALOG / "listings.csv"), "--text-column", "description", "--out",
                  str(out), "--model", FAKE).returncode == 0
    assert titles(out, "title contains 'CAR' and price < 20000") == {"Red sports car"}
    assert titles(out, "colour == 'red' and title not contains 'car'") == {
        "Red running shoes", "Red mug", "Box of red apples"}
    assert "price holds number values; contains finds text within text" in refused(out, "price contains '1'")


DIM = 16
NOISE = np.random.default_rng(1).normal(size=(65_536, DIM)).astype(np.float32)
CENTRES = np.random.default_rng(2).normal(size=(64, DIM)).astype(np.float32)


class ClusteredEncoder:
    """Texts to clustered vectors, a batch at a time in numpy: a 100,000-item index builds in seconds."""

    device = "cpu"
    identity = ModelIdentity("fake", "clustered", None, DIM, {}, {})

    def encode_texts(self, texts):
        keys = np.array([zlib.crc32(t.encode()) for t in texts], np.int64)
        return l2_normalize(CENTRES[keys % 64] + 0.6 * NOISE[(keys >> 6) % 65_536])


WORDS = ["car", "Carpet", "mug", "SCAR", "bike", "shoe", "cable car", "lamp", "oscar", "pen"]


def test_contains_through_the_id_selector_at_100k_items(tmp_path):
    count = 100_000
    rng = np.random.default_rng(5)
    titles_by_row = [None if i % 97 == 0 else f"{WORDS[w]} {i}" for i, w in enumerate(rng.integers(0, 10, count))]
    corpus = tmp_path / "items.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": f"item {i}", "title": t}) for i, t in enumerate(titles_by_row))
                      + "\n", encoding="utf-8")
    out, encoder = tmp_path / "idx", ClusteredEncoder()
    build_index(out, IndexConfig(texts=[corpus], index_type="ivf", batch_size=8192), encoder=encoder)
    index = open_index(out, encoder=encoder)
    assert all(part.ann is not None for part in index._sets["text"].parts)  # the filter runs inside FAISS
    row_ids, vectors = index.embeddings("text")
    texts = index._items.table("text", ["row_id", "text"])  # "item N": row N of the corpus
    title_of_row = dict(zip(texts.column("row_id").to_pylist(),
                            (titles_by_row[int(t.split()[1])] for t in texts.column("text").to_pylist())))
    for where, passes in (("title contains 'CAR'", lambda t: "car" in t.lower()),
                          ("title not contains 'car'", lambda t: "car" not in t.lower())):
        want = {r for r, t in title_of_row.items() if t is not None and passes(t)}
        admitted = set(index._admitted("text", where).tolist())
        assert admitted == want and len(want) > engine.EXACT_SUBSET, where
        recalls = []
        for q in range(20):
            query = encoder.encode_texts([f"query {q}"])[0]
            hits = index.search_vector(query, target="text", k=10, where=where)
            assert {h.row_id for h in hits} <= want
            scores = vectors @ query
            allowed = np.isin(row_ids, np.fromiter(want, np.int64))
            best = row_ids[allowed][np.argsort(-scores[allowed], kind="stable")[:10]]
            recalls.append(len({h.row_id for h in hits} & set(best.tolist())) / 10)
        assert np.mean(recalls) >= 0.95, (where, np.mean(recalls))


def test_the_markers_do_not_touch_the_text_column_or_negative_numbers(tmp_path):
    path = tmp_path / "notes.csv"
    path.write_text("delta,text\n-5,None\n-,N/A\n3,-\n", encoding="utf-8")
    corpus = read_corpus(path)
    assert [(r.text, r.metadata["delta"]) for r in corpus.records] == [("None", -5), ("N/A", None), ("-", 3)]
    assert [(c.name, c.type, c.nulls) for c in corpus.columns] == [("delta", "int", 1)]


def test_the_api_takes_the_cli_forms_and_refuses_a_bad_type(tmp_path, shop):
    out = tmp_path / "idx"
    report = build_index(out, IndexConfig(texts=[shop], na_values="N/A,-", column_types="zip=str,id=float"),
                         encoder=FakeEncoder())
    types = {c.name: (c.type, c.nulls) for c in report.columns[str(shop)]}
    assert types == {"id": ("float", 0), "title": ("text", 0), "price": ("text", 3), "zip": ("text", 1)}
    with pytest.raises(InvalidInputError, match="unknown column type 'number' for price in column_types"):
        build_index(out, IndexConfig(texts=[shop], column_types={"price": "number"}), encoder=FakeEncoder())
