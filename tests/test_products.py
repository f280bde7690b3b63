"""Products: a table row and its photo are one item with two vectors, kept in sync part by part."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import CATALOG, noise_image
from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.build.stored import load_state, stored_rows
from xmodal.indexer.build.edit import remove_items
from xmodal.indexer.errors import TextColumnError
from xmodal.indexer.imaging import load_image
from xmodal.indexer.models import encode_images
from xmodal.indexer.store import IndexDir
from xmodal.search.engine import open_index
from test_cli import xmodal


class CountingEncoder(FakeEncoder):
    def __init__(self):
        super().__init__()
        self.images = self.texts = 0

    def encode_preprocessed(self, batch):
        self.images += len(batch)
        return super().encode_preprocessed(batch)

    def encode_texts(self, texts):
        self.texts += len(texts)
        return super().encode_texts(texts)


@pytest.fixture
def shop(tmp_path):
    """A copy of the demo catalog that tests may change."""
    folder = tmp_path / "shop"
    shutil.copytree(CATALOG, folder)
    return folder


def build(out, table, encoder=None, **extra):
    config = IndexConfig(texts=[table], text_column="description", image_column="image", workers=0, **extra)
    return build_index(out, config, encoder=encoder or FakeEncoder())


def products(out) -> dict[str, tuple]:
    """title -> (row id, photo vector or None, text vector, row), from the stored index."""
    state = load_state(IndexDir(out), IndexDir(out).read_manifest())
    found = {}
    for row in stored_rows(IndexDir(out), IndexDir(out).read_manifest()):
        assert row.modality == "product"
        photo = state.vector("product-image", row.row_id) if state.has_vector("product-image", row.row_id) else None
        found[row.metadata["title"]] = (row.row_id, photo, state.vector("product-text", row.row_id), row)
    return found


def rewrite(table, change) -> None:
    with open(table, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows = change(rows)
    with open(table, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_each_row_is_one_product_with_its_photo_and_text(shop, tmp_path):
    out = tmp_path / "idx"
    report = build(out, shop / "listings.csv")
    assert report.counts == {"image": 0, "text": 0, "product": 12} and not report.failures
    encoder = FakeEncoder()
    for title, (_, photo, text, row) in products(out).items():
        picture = load_image(shop / row.metadata["image"])
        np.testing.assert_allclose(photo, encode_images(encoder, [picture])[0], atol=1e-6)
        np.testing.assert_allclose(text, encoder.encode_texts([row.text])[0], atol=1e-6)
        assert row.path == str(shop / row.metadata["image"]) and (row.width, row.height) == picture.size
        assert row.metadata["title"] == title and isinstance(row.metadata["price"], int)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["product"] == 12 and manifest["sources"][0]["image_column"] == "image"


def test_a_missing_or_broken_photo_leaves_a_product_with_its_text(shop, tmp_path):
    (shop / "images" / "02-blue-car.png").unlink()
    (shop / "images" / "03-green-car.png").write_bytes((CATALOG / "images" / "03-green-car.png").read_bytes()[:300])
    rewrite(shop / "listings.csv", lambda rows: [{**r, "image": "" if r["id"] == "4" else r["image"]} for r in rows])
    out = tmp_path / "idx"
    report = build(out, shop / "listings.csv")
    assert report.counts["product"] == 12
    reasons = {(f.path.rsplit("/", 1)[1], f.line): f.reason.split(":")[0] for f in report.failures}
    assert reasons == {("02-blue-car.png", 3): "unreadable", ("03-green-car.png", 4): "corrupt or truncated"}
    found = products(out)
    for title in ("Blue family hatchback", "Green vintage car", "Red running shoes"):
        assert found[title][1] is None and found[title][2] is not None
        assert found[title][3].image_hash is None and found[title][3].width is None
    assert found["Red running shoes"][3].path is None  # an empty cell: no photo, and no failure


def test_a_folder_in_the_image_column_skips_that_photo_and_the_run_goes_on(tmp_path):
    """A folder named as a photo aborted the run with 'could not write the index ...: Is a directory', and every
    re-run the same: it is that row's photo failure, as a missing file is."""
    (tmp_path / "photos" / "misc").mkdir(parents=True)
    noise_image(3).save(tmp_path / "photos" / "jug.png")
    (tmp_path / "d.csv").write_text("sku,description,image\nA1,a red mug,photos/misc\nA2,a jug,photos/jug.png\n")
    out = tmp_path / "d.idx"
    for _ in range(2):
        built = xmodal("index", "--texts", str(tmp_path / "d.csv"), "--text-column", "description", "--image-column",
                       "image", "--out", str(out), "--model", "python:fakes:make_encoder", "--workers", "0")
        assert built.returncode == 0, built.stderr
        assert f"{tmp_path / 'photos' / 'misc'} (the photo of {tmp_path / 'd.csv'}:2): is a folder, not an image" \
            in built.stderr
        assert "2 products (1 without a photo); skipped 1 (1 product photo)" in built.stdout
    found = products_by_sku(out)
    assert found["A1"][1] is None and found["A1"][2] is not None and found["A2"][1] is not None


def products_by_sku(out) -> dict[str, tuple]:
    state = load_state(IndexDir(out), IndexDir(out).read_manifest())
    return {row.metadata["sku"]: (row.row_id, state.vector("product-image", row.row_id)
                                  if state.has_vector("product-image", row.row_id) else None,
                                  state.vector("product-text", row.row_id))
            for row in stored_rows(IndexDir(out), IndexDir(out).read_manifest())}


def test_run_counts_are_the_vectors_encoded_when_photos_are_missing_or_broken(shop, tmp_path):
    """A missing photo was taken off the encoded count though it was never sent to the model: 22 of 23
    vectors counted, then -1 on a run that changed nothing."""
    (shop / "images" / "12-red-apple.png").unlink()
    (shop / "images" / "03-green-car.png").write_bytes((CATALOG / "images" / "03-green-car.png").read_bytes()[:300])
    out, table = tmp_path / "idx", shop / "listings.csv"
    counting = CountingEncoder()
    first = build(out, table, counting)
    assert (counting.images, counting.texts) == (10, 12)  # neither the missing photo nor the broken one
    assert (first.stats.encoded, first.stats.failed) == (10 + 12, 2)
    again = build(out, table, CountingEncoder())
    assert (again.stats.encoded, again.stats.reused) == (0, 10 + 12)
    rewrite(table, lambda rows: [{**r, "description": "A blue hatchback car, new tyres."} if r["id"] == "2" else r
                                 for r in rows])
    edited = build(out, table, CountingEncoder())
    assert (edited.stats.encoded, edited.stats.reused) == (1, 10 + 11)


def test_a_corpus_read_again_as_products_leaves_no_texts_behind(shop, tmp_path):
    """The same table first as plain texts, then with an image column: its rows are products now, and its
    12 texts were left behind as orphans of no source."""
    out, table = tmp_path / "idx", shop / "listings.csv"
    build_index(out, IndexConfig(texts=[table], text_column="description", workers=0), encoder=FakeEncoder())
    as_products = build(out, table)
    assert as_products.counts == {"image": 0, "text": 0, "product": 12} and as_products.stats.removed == 12
    assert all(row.modality == "product" for row in stored_rows(IndexDir(out), IndexDir(out).read_manifest()))
    hits = open_index(out, encoder=FakeEncoder()).search("a red car", target="product", k=20)
    assert len(hits) == 12


def test_reruns_encode_only_the_part_that_changed(shop, tmp_path):
    out, table = tmp_path / "idx", shop / "listings.csv"
    build(out, table)
    before = products(out)
    counting = CountingEncoder()
    unchanged = build(out, table, counting)
    assert not unchanged.committed and (counting.images, counting.texts) == (0, 0)

    noise_image(5).save(shop / "images" / "05-white-shoe.png")  # a new photo for one product
    counting = CountingEncoder()
    report = build(out, table, counting)
    assert (counting.images, counting.texts) == (1, 0) and report.stats.encoded == 1
    after = products(out)
    assert after["White sneakers"][0] == before["White sneakers"][0]  # same product, same row id
    assert not np.array_equal(after["White sneakers"][1], before["White sneakers"][1])

    rewrite(table, lambda rows: [{**r, "description": "A blue hatchback car, new tyres."} if r["id"] == "2" else r
                                 for r in rows])
    counting = CountingEncoder()
    build(out, table, counting)
    assert (counting.images, counting.texts) == (0, 1)
    edited = products(out)["Blue family hatchback"]
    assert edited[0] == before["Blue family hatchback"][0] and edited[3].text == "A blue hatchback car, new tyres."
    np.testing.assert_array_equal(edited[1], before["Blue family hatchback"][1])

    rewrite(table, lambda rows: [r for r in rows if r["id"] != "9"])
    counting = CountingEncoder()
    removed = build(out, table, counting)
    assert removed.stats.removed == 1 and removed.counts["product"] == 11 and counting.images + counting.texts == 0


def test_a_photo_also_in_an_image_folder_is_encoded_once(shop, tmp_path):
    out = tmp_path / "idx"
    counting = CountingEncoder()
    build_index(out, IndexConfig(images=[shop / "images"], workers=0), encoder=counting)
    build(out, shop / "listings.csv", counting)
    assert counting.images == 12 and counting.texts == 12


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_jsonl_and_parquet_tables_link_relative_and_absolute_photos(shop, tmp_path, suffix):
    rows = [{"description": "a red sports car", "photo": "images/01-red-car.png", "price": 18500},
            {"description": "a blue hatchback", "photo": str(shop / "images" / "02-blue-car.png"), "price": 7900}]
    table = shop / f"listings{suffix}"
    if suffix == ".jsonl":
        table.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), table)
    report = build_index(tmp_path / "idx", IndexConfig(texts=[table], text_column="description",
                                                        image_column="photo", workers=0), encoder=FakeEncoder())
    assert report.counts["product"] == 2 and not report.failures
    state = load_state(IndexDir(tmp_path / "idx"), IndexDir(tmp_path / "idx").read_manifest())
    assert sorted(r.path for r in state.rows) == [str(shop / "images" / "01-red-car.png"),
                                                 str(shop / "images" / "02-blue-car.png")]
    assert all(state.has_vector("product-image", r.row_id) for r in state.rows)


def test_dropping_the_table_drops_its_products_and_their_photo_failures(shop, tmp_path):
    (shop / "images" / "02-blue-car.png").unlink()
    out = tmp_path / "idx"
    build(out, shop / "listings.csv")
    removed = remove_items(out, sources=[shop / "listings.csv"])
    assert len(removed) == 12
    manifest = IndexDir(out).read_manifest()
    assert manifest.counts["product"] == 0 and manifest.failures == 0 and manifest.sources == []


def test_an_image_column_that_is_not_there(shop, tmp_path):
    with pytest.raises(TextColumnError, match="has no column 'photo'; its columns are id, title, description"):
        build_index(tmp_path / "idx", IndexConfig(texts=[shop / "listings.csv"], text_column="description",
                                                  image_column="photo"), encoder=FakeEncoder())
    result = xmodal("index", "--texts", str(shop / "listings.csv"), "--text-column", "description",
                    "--image-column", "photo", "--out", str(tmp_path / "idx"), "--model", "python:fakes:make_encoder")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: listings.csv has no column 'photo'") and "--image-column" in result.stderr
    assert not (tmp_path / "idx").exists()


def test_cli_indexes_products_and_counts_them(shop, tmp_path):
    out = tmp_path / "idx"
    built = xmodal("index", "--texts", str(shop / "listings.csv"), "--text-column", "description",
                   "--image-column", "image", "--out", str(out), "--model", "python:fakes:make_encoder")
    assert built.returncode == 0, built.stderr
    assert "indexed 0 images, 0 texts, 12 products; skipped 0;" in built.stdout
    info = json.loads(xmodal("info", str(out), "--json").stdout)
    assert info["counts"]["product"] == 12
    found = xmodal("search", str(out), "a red car", "--json")  # no --target: the products, as the service does
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout)
    assert answer["target"] == "product" and answer["count"] == 10
    assert {h["modality"] for h in answer["hits"]} == {"product"}
    nothing = xmodal("search", str(out))
    assert nothing.returncode == 2 and nothing.stderr.startswith("error: give a query")


def test_list_shows_products_as_it_shows_images_and_texts(shop, tmp_path):
    """`xmodal list IDX --modality product` was refused ('use image or text') though products are a modality."""
    out = tmp_path / "idx"
    build(out, shop / "listings.csv")
    listed = xmodal("list", str(out), "--modality", "product")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 12 and all(line.split()[1] == "product" for line in lines)
    assert xmodal("list", str(out), "--modality", "image").stdout == ""
    wrong = xmodal("list", str(out), "--modality", "products")
    assert wrong.returncode == 2 and wrong.stderr.strip() == \
        "error: unknown --modality 'products'; use image, text or product"


def test_the_summary_counts_products_without_a_photo_as_products(shop, tmp_path):
    """'12 products; skipped 2 (2 images)' read as two products dropped: they are indexed with their text."""
    (shop / "images" / "02-blue-car.png").unlink()
    (shop / "images" / "03-green-car.png").write_bytes((CATALOG / "images" / "03-green-car.png").read_bytes()[:300])
    folder = tmp_path / "photos"
    folder.mkdir()
    noise_image(1).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    built = xmodal("index", str(folder), "--texts", str(shop / "listings.csv"), "--text-column", "description",
                   "--image-column", "image", "--out", str(tmp_path / "idx"), "--model", "python:fakes:make_encoder",
                   "--workers", "0")
    assert built.returncode == 0, built.stderr
    assert "indexed 1 image, 0 texts, 12 products (2 without a photo); skipped 3 (1 image, 2 product photos);" \
        in built.stdout
    again = xmodal("index", "--out", str(tmp_path / "idx"))  # the failures the index holds, on a run that reads none
    assert "12 products (2 without a photo); skipped 3 (1 image, 2 product photos);" in again.stdout
    assert "failed 0 (3 skipped as before: " in again.stdout  # 'skipped 3' and 'failed 0' add up


def test_a_product_photo_that_failed_is_named_with_the_table_line_that_names_it(shop, tmp_path):
    """'skipped .../02-blue-car.png:3' read as line 3 of the photo: the line is the table's."""
    photo, table = shop / "images" / "02-blue-car.png", shop / "listings.csv"
    photo.unlink()
    out = tmp_path / "idx"
    built = xmodal("index", "--texts", str(table), "--text-column", "description", "--image-column", "image",
                   "--out", str(out), "--model", "python:fakes:make_encoder", "--workers", "0")
    assert built.returncode == 0, built.stderr
    said = f"skipped {photo} (the photo of {table}:3): unreadable"
    assert said in built.stderr and f"{photo}:3" not in built.stderr, built.stderr
    listed = xmodal("info", str(out), "--failures")
    assert f"skipped:  {photo} (the photo of {table}:3): unreadable" in listed.stdout, listed.stdout


def test_a_product_whose_image_cell_is_empty_counts_as_without_a_photo(shop, tmp_path):
    """'12 products (2 without a photo)' when 3 had none: a row with an empty image cell was not counted."""
    (shop / "images" / "02-blue-car.png").unlink()
    rewrite(shop / "listings.csv", lambda rows: [{**r, "image": "" if r["id"] in ("4", "5") else r["image"]}
                                                 for r in rows])
    folder = tmp_path / "photos"
    folder.mkdir()
    noise_image(1).save(folder / "good.png")
    out = tmp_path / "idx"
    built = xmodal("index", str(folder), "--texts", str(shop / "listings.csv"), "--text-column", "description",
                   "--image-column", "image", "--out", str(out), "--model", "python:fakes:make_encoder",
                   "--workers", "0")
    assert built.returncode == 0, built.stderr
    assert "12 products (3 without a photo); skipped 1 (1 product photo);" in built.stdout
    state = load_state(IndexDir(out), IndexDir(out).read_manifest())
    held = [row for row in state.rows if row.modality == "product"]
    assert sum(not state.has_vector("product-image", row.row_id) for row in held) == 3
    for again in (xmodal("index", "--out", str(out)),  # every source read again
                  xmodal("index", str(folder), "--out", str(out))):  # the folder alone: nothing changed
        assert "12 products (3 without a photo); skipped 1 (1 product photo);" in again.stdout, again.stdout


@pytest.mark.parametrize("point,nth", [("encode_image", 2), ("encode_text", 1), ("journal_append", 2),
                                       ("write_items", 1), ("manifest_write", 1)])
def test_a_killed_product_run_resumes_to_a_clean_build(shop, tmp_path, point, nth):
    import signal
    import subprocess
    import sys

    from conftest import TESTS, env_with_tests_path

    def driver(out, kill_point, number):
        return subprocess.run([sys.executable, str(TESTS / "kill_driver.py"), str(out), "-",
                               str(shop / "listings.csv"), kill_point, str(number), "products"],
                              capture_output=True, text=True, timeout=120, env=env_with_tests_path())

    out = tmp_path / "idx"
    assert driver(out, point, nth).returncode == -signal.SIGKILL
    resumed = driver(out, "none", 0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    stats = eval(resumed.stdout.strip().splitlines()[-1])
    clean = tmp_path / "clean"
    build(clean, shop / "listings.csv")
    got, want = products(out), products(clean)
    assert got.keys() == want.keys() and len(got) == 12
    for title in want:
        np.testing.assert_array_equal(got[title][1], want[title][1])
        np.testing.assert_array_equal(got[title][2], want[title][2])
    assert len({p[0] for p in got.values()}) == 12  # no duplicate row ids
    if point != "manifest_write":
        assert stats["encoded"] + stats["resumed"] + stats["reused"] == 24  # nothing encoded twice
