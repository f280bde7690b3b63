"""Items keep their identity across runs: a table's id column (`--id-column`), and without one, rows known by
their content; line numbers are for messages, never identity. Issue 20, point 2."""
from __future__ import annotations

import csv
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import CATALOG
from fakes import FakeEncoder, HashEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.build.edit import list_items
from xmodal.indexer.errors import InvalidInputError, KeyColumnError
from xmodal.indexer.store import IndexDir
from xmodal.search import open_index
from test_cli import xmodal

FAKE = "python:fakes:make_encoder"


def shop(tmp_path, with_key: bool = True):
    """A copy of the demo shop: listings.csv keyed by `sku`, with the photos beside it."""
    root = tmp_path / "shop"
    shutil.copytree(CATALOG, root)
    rows = read(root / "listings.csv")
    for row in rows:
        row["sku"] = f"SKU-{int(row['id']):03d}"
    write(root / "listings.csv", rows if with_key else [{k: v for k, v in r.items() if k != "sku"} for r in rows])
    return root


def read(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def write(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def build(root, **extra):
    config = dict(texts=[root / "listings.csv"], text_column="description", image_column="image", workers=0)
    return build_index(root / "shop.idx", IndexConfig(**{**config, **extra}), encoder=FakeEncoder())


def products(root) -> dict[str, int]:
    """title -> row id of every product."""
    return {r.metadata["title"]: r.row_id for r in list_items(root / "shop.idx", "product")}


def test_without_a_key_a_new_product_on_a_removed_products_line_gets_a_new_row_id(tmp_path):
    """The issue's case: the last row deleted and a different product appended took the old row id (same
    line), the run said `removed 0`, and a saved like=11 named a different product."""
    root = shop(tmp_path, with_key=False)
    build(root)
    before = products(root)
    rows = read(root / "listings.csv")
    rows[-1] = {**rows[-1], "id": "13", "title": "Green pear", "description": "One ripe green pear.",
                "colour": "green", "price": "1", "image": "images/06-green-shirt.png"}
    write(root / "listings.csv", rows)
    report = build(root)
    after = products(root)
    assert report.stats.removed == 1
    assert "Box of red apples" not in after and after["Green pear"] not in before.values()
    assert all(after[title] == row_id for title, row_id in before.items() if title in after)


def test_without_a_key_one_edited_part_keeps_the_row_and_a_reordered_table_changes_nothing(tmp_path):
    root = shop(tmp_path, with_key=False)
    build(root)
    before = products(root)
    rows = read(root / "listings.csv")
    rows[2]["description"] = "Restored green vintage car from 1968, new tyres."  # its photo is the same
    write(root / "listings.csv", rows[::-1])
    report = build(root)
    assert report.stats.removed == 0 and report.stats.encoded == 1
    assert products(root) == before


def test_a_keyed_table_keeps_row_ids_by_key_wherever_lines_move(tmp_path):
    root = shop(tmp_path)
    build(root, id_column="sku")
    before = products(root)
    first_next = IndexDir(root / "shop.idx").read_manifest().next_row_id
    rows = read(root / "listings.csv")
    write(root / "listings.csv", rows[::-1])  # a re-export in another order
    report = build(root)
    assert (report.stats.encoded, report.stats.removed) == (0, 0) and not report.committed
    assert products(root) == before

    rows = read(root / "listings.csv")
    edited = next(r for r in rows if r["sku"] == "SKU-002")
    edited["description"] = "Blue hatchback, five doors, new brakes."  # an edited description
    edited["image"] = "images/07-blue-shirt.png"  # and another photo: still the same product
    gone = next(r for r in rows if r["sku"] == "SKU-012")
    rows.remove(gone)
    rows.insert(0, {**gone, "sku": "SKU-013", "title": "Green pear", "description": "One ripe green pear."})
    write(root / "listings.csv", rows)
    report = build(root)
    after = products(root)
    assert report.stats.removed == 1 and report.stats.encoded == 2  # the new description, the pear's
    assert after["Blue family hatchback"] == before["Blue family hatchback"]
    assert "Box of red apples" not in after and after["Green pear"] >= first_next  # never a used row id
    item = open_index(root / "shop.idx", encoder=FakeEncoder()).item(after["Blue family hatchback"])
    assert item["text"].startswith("Blue hatchback") and item["path"].endswith("07-blue-shirt.png")


@pytest.mark.parametrize("problem, cell, words", [
    ("repeated", "SKU-003", "repeats 'SKU-003' on lines 4 and 5"),
    ("empty", "", "is empty on line 5"),
])
def test_repeated_or_empty_keys_are_refused_in_one_line_and_nothing_changes(tmp_path, problem, cell, words):
    root = shop(tmp_path)
    built = xmodal("index", "--texts", str(root / "listings.csv"), "--text-column", "description",
                   "--image-column", "image", "--id-column", "sku", "--out", str(root / "shop.idx"), "--model", FAKE)
    assert built.returncode == 0, built.stderr
    manifest = (root / "shop.idx" / "manifest.json").read_bytes()
    rows = read(root / "listings.csv")
    rows[3]["sku"] = cell  # line 5 of the file
    write(root / "listings.csv", rows)
    again = xmodal("index", "--out", str(root / "shop.idx"))
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert again.stderr.startswith(f"error: listings.csv: id column 'sku' {words}")
    assert again.stderr.count("\n") == 1 and "--id-column" in again.stderr
    assert (root / "shop.idx" / "manifest.json").read_bytes() == manifest


def test_a_missing_id_column_is_named_with_the_columns_there_are(tmp_path):
    root = shop(tmp_path)
    with pytest.raises(InvalidInputError, match="has no column 'handle'; its columns are id, title"):
        build(root, id_column="handle")


def test_a_keyed_text_corpus_keeps_ids_through_edits_and_moves(tmp_path):
    corpus = tmp_path / "notes.parquet"
    keys = [f"n{i}" for i in range(50)]
    texts = [f"note number {i}" for i in range(50)]
    pq.write_table(pa.table({"id": keys, "text": texts}), corpus)
    out = tmp_path / "idx"
    build_index(out, IndexConfig(texts=[corpus], id_column="id", workers=0), encoder=HashEncoder())
    before = {r.key: r.row_id for r in list_items(out)}
    texts[7] = "note number seven, edited"
    order = list(range(50))[::-1]
    pq.write_table(pa.table({"id": [keys[i] for i in order][:-1], "text": [texts[i] for i in order][:-1]}), corpus)
    report = build_index(out, IndexConfig(texts=[corpus], workers=0), encoder=HashEncoder())
    after = {r.key: (r.row_id, r.text) for r in list_items(out)}
    assert (report.stats.encoded, report.stats.removed) == (1, 1)  # n7 edited, n0 gone
    assert {k: v[0] for k, v in after.items()} == {k: v for k, v in before.items() if k != "n0"}
    assert after["n7"][1] == "note number seven, edited"
    manifest = IndexDir(out).read_manifest()
    assert sum(s.rows for s in manifest.segments if s.name.startswith("seg-000002")) == 1  # only n7 written


def test_keys_in_parquet_are_checked_column_wise(tmp_path):
    corpus = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [1.0, 2.0, 1.0], "text": ["a", "b", "c"]}), corpus)
    with pytest.raises(KeyColumnError, match="repeats '1' on lines 1 and 3"):
        build_index(tmp_path / "idx", IndexConfig(texts=[corpus], id_column="id", workers=0), encoder=HashEncoder())
    assert not (tmp_path / "idx").exists()


def test_an_unkeyed_corpus_exported_again_in_another_order_writes_nothing(tmp_path):
    corpus = tmp_path / "t.csv"
    rows = [{"text": f"listing {i}", "price": str(i)} for i in range(300)]
    write(corpus, rows)
    out = tmp_path / "idx"
    build_index(out, IndexConfig(texts=[corpus], workers=0), encoder=HashEncoder())
    write(corpus, rows[150:] + rows[:150])
    report = build_index(out, IndexConfig(texts=[corpus], workers=0), encoder=HashEncoder())
    assert (report.stats.encoded, report.stats.removed, report.committed) == (0, 0, False)


def test_a_saved_like_names_the_key_and_outlives_a_reindexed_table(tmp_path):
    root = shop(tmp_path)
    build(root, id_column="sku")
    index = open_index(root / "shop.idx", encoder=FakeEncoder())
    hit = index.search(text="a red car", target="product", k=1)[0]
    assert (hit.key, hit.key_column, hit.reference) == ("SKU-001", "sku", "sku:SKU-001")
    assert hit.to_dict()["reference"] == "sku:SKU-001"
    by_key = index.search(text="a car", like=["sku:SKU-001"], target="product", k=3)
    by_id = index.search(text="a car", like=[hit.row_id], target="product", k=3)
    assert [h.row_id for h in by_key] == [h.row_id for h in by_id] and hit.row_id not in [h.row_id for h in by_key]
    with pytest.raises(InvalidInputError, match="no item has sku 'SKU-999'"):
        index.search(text="a car", like=["sku:SKU-999"], target="product")
    with pytest.raises(InvalidInputError, match="both liked and disliked"):
        index.search(text="a car", like=["sku:SKU-001"], dislike=[hit.row_id], target="product")
    # a text that merely holds a colon is still a text
    assert index.search(text="a car", like=["colour:red"], target="product", k=1)


def test_cli_likes_by_key_and_info_says_what_identity_rests_on(tmp_path):
    root = shop(tmp_path)
    built = xmodal("index", "--texts", str(root / "listings.csv"), "--text-column", "description",
                   "--image-column", "image", "--id-column", "sku", "--out", str(root / "shop.idx"), "--model", FAKE)
    assert built.returncode == 0, built.stderr
    found = xmodal("search", str(root / "shop.idx"), "a car", "--like", "sku:SKU-001", "--json", "-k", "2")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["hits"]
    assert [h["reference"] for h in hits] and all(h["reference"].startswith("sku:") for h in hits)
    assert "SKU-001" not in [h["key"] for h in hits]
    info = xmodal("info", str(root / "shop.idx"))
    assert "id_column sku); a row is known by its sku" in info.stdout
    plain = tmp_path / "plain.idx"
    xmodal("index", "--texts", str(root / "listings.csv"), "--text-column", "title", "--out", str(plain), "--model", FAKE)
    assert "a row is known by its text (no --id-column)" in xmodal("info", str(plain)).stdout
