"""The word index beside the vectors (issue 29, item 1, storage): each segment's words written in the commit that
writes its vectors, edits and removals honoured at once, kept by compaction, added to an index from before."""
from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index, compact_index, remove_items
from xmodal.indexer.store import IndexDir, SegmentReader
from xmodal.indexer.words import query_terms

PRODUCTS = [
    {"sku": "SHO-004", "title": "Vantrel XR-220 trail runner", "description": "A red shoe for running", "price": "49"},
    {"sku": "SHO-005", "title": "Canvas sneaker", "description": "A blue shoe for every day", "price": "39"},
    {"sku": "MUG-010", "title": "Stoneware mug", "description": "A white mug that holds coffee", "price": "12"},
    {"sku": "CAR-001", "title": "Toy hatchback", "description": "A small green car", "price": "8"},
] + [{"sku": f"BOX-{n:03d}", "title": f"Storage box {n}", "description": "A plain box", "price": str(n)}
     for n in range(100, 108)]  # enough rows that an edit and a removal leave the first segment in place


def write_table(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def build(tmp_path: Path, rows: list[dict], **extra):
    table = tmp_path / "products.csv"
    write_table(table, rows)
    config = IndexConfig(texts=[table], text_column="description", id_column="sku", workers=0, **extra)
    return build_index(tmp_path / "shop.idx", config, encoder=FakeEncoder())


def manifest(tmp_path: Path):
    return IndexDir(tmp_path / "shop.idx").read_manifest()


def search(tmp_path: Path, query: str, k: int = 10) -> list[int]:
    """Row ids holding the query's words, best first, over every segment the manifest names."""
    hits = []
    for ref in manifest(tmp_path).segments:
        words = SegmentReader(tmp_path / "shop.idx", ref).words()
        assert words is not None, f"segment {ref.name} has no words"
        hits += words.search(query_terms(query), k)
    return [row for row, _ in sorted(hits, key=lambda hit: -hit[1])[:k]]


def row_ids(tmp_path: Path) -> dict[str, int]:
    """sku -> row id of every live row."""
    ids = {}
    for ref in manifest(tmp_path).segments:
        items = SegmentReader(tmp_path / "shop.idx", ref).items(["row_id", "key"])
        ids.update(zip(items.column("key").to_pylist(), items.column("row_id").to_pylist()))
    return ids


def test_a_built_index_finds_its_rows_by_their_sku_title_and_text_words(tmp_path):
    build(tmp_path, PRODUCTS)
    ids = row_ids(tmp_path)
    assert all(ref.words for ref in manifest(tmp_path).segments)
    assert manifest(tmp_path).settings["words"]["columns"] is None  # every text column
    assert search(tmp_path, "SHO-004")[0] == ids["SHO-004"]  # not SHO-005, which shares "sho"
    assert search(tmp_path, "sho005")[0] == ids["SHO-005"]
    assert search(tmp_path, "Vantrel") == [ids["SHO-004"]]  # a title word
    assert search(tmp_path, "xr220") == [ids["SHO-004"]]  # a model number, glued
    assert search(tmp_path, "coffee") == [ids["MUG-010"]]  # the text column's words
    assert set(search(tmp_path, "shoes")) == {ids["SHO-004"], ids["SHO-005"]}
    assert search(tmp_path, "49") == []  # numbers stay numbers: a price is not a word


def test_named_columns_are_the_only_table_columns_searched_and_a_number_column_gives_its_digits(tmp_path):
    build(tmp_path, PRODUCTS, lexical_columns=["price"])
    ids = row_ids(tmp_path)
    assert search(tmp_path, "49") == [ids["SHO-004"]]
    assert search(tmp_path, "Vantrel") == []  # title not named
    assert search(tmp_path, "SHO-004")[0] == ids["SHO-004"]  # the key is always searched
    build(tmp_path, PRODUCTS)  # a re-run without the option keeps the recorded columns
    assert manifest(tmp_path).settings["words"]["columns"] == ["price"]


def test_an_edited_title_no_longer_matches_its_old_words_and_a_removed_row_matches_nothing(tmp_path):
    build(tmp_path, PRODUCTS)
    ids = row_ids(tmp_path)
    edited = [dict(r, title="Ostrava AX-9 road racer") if r["sku"] == "SHO-004" else r
              for r in PRODUCTS if r["sku"] != "MUG-010"]
    build(tmp_path, edited)
    assert len(manifest(tmp_path).segments) == 2  # the old segment kept, with deletions; words filtered by them
    assert search(tmp_path, "Vantrel") == []
    assert search(tmp_path, "xr-220") == []
    assert search(tmp_path, "Ostrava") == [row_ids(tmp_path)["SHO-004"]]
    assert search(tmp_path, "MUG-010") == [] and search(tmp_path, "coffee") == []
    assert ids["MUG-010"] not in search(tmp_path, "mug white stoneware")


def test_compaction_keeps_the_words_of_the_rows_it_moves(tmp_path):
    build(tmp_path, PRODUCTS)
    first = manifest(tmp_path).segments[0].name
    build(tmp_path, [dict(r, title=r["title"] + " v2") if r["sku"] == "CAR-001" else r for r in PRODUCTS])
    remove_items(tmp_path / "shop.idx", row_ids=[row_ids(tmp_path)["MUG-010"]])
    compact_index(tmp_path / "shop.idx")
    segments = manifest(tmp_path).segments
    assert first not in {ref.name for ref in segments}  # rewritten: its live rows moved into a new segment
    assert all(ref.deleted is None and ref.words == "words" for ref in segments)
    ids = row_ids(tmp_path)
    assert search(tmp_path, "SHO-004")[0] == ids["SHO-004"]
    assert search(tmp_path, "hatchback v2")[0] == ids["CAR-001"]
    assert search(tmp_path, "coffee") == []


def test_an_index_built_before_words_gets_them_on_its_next_run_and_then_idles(tmp_path):
    build(tmp_path, PRODUCTS)
    _forget_words(tmp_path / "shop.idx")
    assert SegmentReader(tmp_path / "shop.idx", manifest(tmp_path).segments[0]).words() is None

    report = build(tmp_path, PRODUCTS)  # nothing changed but the words
    assert report.committed
    ref = manifest(tmp_path).segments[0]
    assert ref.words.startswith("words-gen-") and manifest(tmp_path).settings["words"]["analyser"]
    assert search(tmp_path, "Vantrel") == [row_ids(tmp_path)["SHO-004"]]
    assert not build(tmp_path, PRODUCTS).committed  # words in place: a run with no change writes nothing


def test_another_analysis_rewrites_every_segments_words_and_collects_the_old_ones(tmp_path):
    hat = {"sku": "HAT-001", "title": "Wool beanie", "description": "A black hat", "price": "15"}
    build(tmp_path, PRODUCTS)
    build(tmp_path, PRODUCTS + [hat])
    path = tmp_path / "shop.idx" / "manifest.json"
    data = json.loads(path.read_text())
    data["settings"]["words"]["analyser"] = "words 0; an older analysis"
    path.write_text(json.dumps(data))
    build(tmp_path, PRODUCTS + [hat])
    segments = manifest(tmp_path).segments
    assert len(segments) == 2 and all(ref.words.startswith("words-gen-") for ref in segments)
    assert search(tmp_path, "beanie") == [row_ids(tmp_path)["HAT-001"]]
    for price in range(3):  # later commits; the replaced words go once no kept generation reads them
        build(tmp_path, PRODUCTS + [dict(hat, price=str(20 + price))])
    for ref in manifest(tmp_path).segments:
        folder = tmp_path / "shop.idx" / "segments" / ref.name
        assert [p.name for p in folder.iterdir() if p.name.startswith("words")] == [ref.words]
    assert search(tmp_path, "SHO-004")[0] == row_ids(tmp_path)["SHO-004"]


def test_info_says_which_segments_hold_words_and_what_they_are_made_of(tmp_path):
    from test_cli import xmodal

    build(tmp_path, PRODUCTS, lexical_columns=["title"])
    shown = xmodal("info", str(tmp_path / "shop.idx"))
    assert "words:    in every segment: item texts, keys and title\n" in shown.stdout, shown.stderr
    _forget_words(tmp_path / "shop.idx")
    shown = xmodal("info", str(tmp_path / "shop.idx"), "--json")
    assert json.loads(shown.stdout)["words"] == {"segments": 0}
    assert "words:    in 0 of 1 segment: the next `xmodal index` run adds the rest" in \
        xmodal("info", str(tmp_path / "shop.idx")).stdout


def test_the_cli_names_the_columns_searched_as_words_and_refuses_one_no_table_has(tmp_path):
    from test_cli import xmodal

    table = tmp_path / "products.csv"
    write_table(table, PRODUCTS)
    out = tmp_path / "shop.idx"
    args = ["index", "--texts", str(table), "--text-column", "description", "--id-column", "sku",
            "--model", "python:fakes:make_encoder", "--workers", "0", "--out", str(out)]
    refused = xmodal(*args, "--lexical-columns", "title,titel")
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "no table column 'titel' for --lexical-columns; the tables' columns: description, price, sku, title" \
        in refused.stderr
    assert not (out / "manifest.json").exists()
    done = xmodal(*args, "--lexical-columns", "title, price")
    assert done.returncode == 0, done.stderr
    assert manifest(tmp_path).settings["words"]["columns"] == ["title", "price"]
    assert search(tmp_path, "49") == [row_ids(tmp_path)["SHO-004"]]


KILLED_AFTER_WORDS = """
import os, signal, sys
from pathlib import Path
import xmodal.indexer.store.segments as segments
from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index

def killed(folder, items, columns=None):
    written(folder, items, columns)  # the words are on disk; the manifest that would name them is not
    os.kill(os.getpid(), signal.SIGKILL)

written, segments.write_words = segments.write_words, killed
table = Path(sys.argv[1])
build_index(table.parent / "shop.idx", IndexConfig(texts=[table], text_column="description", id_column="sku",
                                                   workers=0), encoder=FakeEncoder())
"""


@pytest.mark.parametrize("before_words", [False, True], ids=["new-segment", "words-added-to-an-old-segment"])
def test_a_run_killed_once_words_are_written_leaves_the_last_commit_and_the_next_run_agrees(tmp_path, before_words):
    from conftest import env_with_tests_path

    if before_words:
        build(tmp_path, PRODUCTS)
        _forget_words(tmp_path / "shop.idx")
    else:
        write_table(tmp_path / "products.csv", PRODUCTS)
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_WORDS, str(tmp_path / "products.csv")],
                            env=env_with_tests_path(), capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    index = tmp_path / "shop.idx"
    if before_words:  # the last commit stands, still without words
        assert [ref.words for ref in manifest(tmp_path).segments] == [None]
    else:
        assert not (index / "manifest.json").exists()
    build(tmp_path, PRODUCTS)
    ids = row_ids(tmp_path)
    assert len(ids) == len(PRODUCTS)
    assert search(tmp_path, "SHO-004")[0] == ids["SHO-004"] and search(tmp_path, "Vantrel") == [ids["SHO-004"]]
    for ref in manifest(tmp_path).segments:  # the killed run's words are gone, or are the ones named
        folder = index / "segments" / ref.name
        assert [p.name for p in folder.iterdir() if p.name.startswith("words")] == [ref.words]


def _forget_words(index: Path) -> None:
    """Make the index look written before words: no word folders, nothing about words in its manifests."""
    import shutil

    for copy in [index / "manifest.json", *index.glob("gen-*/manifest.json")]:
        data = json.loads(copy.read_text())
        data["settings"].pop("words", None)
        for segment in data["segments"]:
            segment.pop("words", None)
        copy.write_text(json.dumps(data))
    for folder in index.glob("segments/*/words*"):
        shutil.rmtree(folder)



def test_a_rows_words_are_its_text_key_and_text_cells_and_a_row_without_any_has_none():
    import pyarrow as pa

    from xmodal.indexer.store.words import row_words

    items = pa.table({"row_id": pa.array([1, 2, 3], pa.int64()), "text": ["Red shoes", None, None],
                      "key": ["1001", None, "1003"],
                      "metadata": pa.array([{"id": 1001, "brand": "Vantrel", "size": 42.0}, None,
                                            {"id": 1003, "brand": None, "size": 41.5}])})
    # a photo alone has no words; a key is also marked by its own term, for an exact lookup
    assert dict(row_words(items)) == {1: "red shoe vantrel 1001 key:1001", 3: "1003 key:1003"}
    assert dict(row_words(items, ["size"])) == {1: "red shoe 42 1001 key:1001", 3: "41.5 1003 key:1003"}
