"""Sources add up: naming one adds and syncs it, the others are kept; dropping one is explicit."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import CATALOG, noise_image
from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.build.edit import list_items, remove_items
from xmodal.indexer.errors import InvalidInputError
from xmodal.indexer.store import IndexDir
from test_cli import xmodal
from test_incremental import snapshot

FAKE = "python:fakes:make_encoder"


def folder(root, name: str, count: int, seed: int):
    path = root / name
    path.mkdir()
    for i in range(count):
        noise_image(seed + i).save(path / f"{name}-{i}.png")
    return path


def paths(index, modality="image") -> set[str]:
    return {r.path or r.text for r in list_items(index, modality)}


def build(out, **config):
    return build_index(out, IndexConfig(workers=0, **config), encoder=FakeEncoder())


def test_naming_a_second_folder_adds_it_and_keeps_the_first(tmp_path):
    first, second = folder(tmp_path, "photos", 5, 0), folder(tmp_path, "photos2", 3, 100)
    out = tmp_path / "lib"
    build(out, images=[first])
    report = build(out, images=[second])
    assert (report.stats.encoded, report.stats.removed, report.counts["image"]) == (3, 0, 8)
    assert [s.path for s in IndexDir(out).read_manifest().sources] == [str(first), str(second)]


def test_indexing_only_images_into_a_catalog_keeps_its_texts(tmp_path):
    images = tmp_path / "images"
    shutil.copytree(CATALOG / "images", images)
    out = tmp_path / "catalog"
    build(out, texts=[CATALOG / "listings.csv"], text_column="description")
    report = build(out, images=[images])
    assert report.counts == {"image": 12, "text": 12, "product": 0} and report.stats.removed == 0


def test_a_named_source_is_synced_and_the_others_left_alone(tmp_path):
    first, second = folder(tmp_path, "photos", 5, 0), folder(tmp_path, "photos2", 3, 100)
    out = tmp_path / "lib"
    build(out, images=[first, second])
    (first / "photos-0.png").unlink()
    (second / "photos2-0.png").unlink()
    report = build(out, images=[first])
    assert report.stats.removed == 1
    assert str(second / "photos2-0.png") in paths(out)  # not synced: kept as it was
    everything = build(out)
    assert everything.stats.removed == 1 and str(second / "photos2-0.png") not in paths(out)


def test_remove_source_drops_its_items_and_a_rerun_does_not_bring_them_back(tmp_path):
    first, second = folder(tmp_path, "photos", 5, 0), folder(tmp_path, "photos2", 3, 100)
    out = tmp_path / "lib"
    build(out, images=[first, second], texts=[CATALOG / "listings.csv"], text_column="title")
    removed = remove_items(out, sources=[second, CATALOG / "listings.csv"])
    assert len(removed) == 3 + 12
    assert paths(out) == {str(p) for p in first.iterdir()} and not list_items(out, "text")
    again = build(out)
    assert again.counts == {"image": 5, "text": 0, "product": 0} and again.stats.encoded == 0
    with pytest.raises(InvalidInputError, match="is not a source of this index"):
        remove_items(out, sources=[tmp_path / "elsewhere"])


def test_replace_sources_makes_the_named_ones_the_whole_set(tmp_path):
    first, second = folder(tmp_path, "photos", 5, 0), folder(tmp_path, "photos2", 3, 100)
    out = tmp_path / "lib"
    build(out, images=[first])
    report = build(out, images=[second], replace_sources=True)
    assert report.counts["image"] == 3 and report.stats.removed == 5
    assert [s.path for s in IndexDir(out).read_manifest().sources] == [str(second)]


def test_a_vanished_source_folder_is_an_error_not_a_mass_deletion(tmp_path):
    first, second = folder(tmp_path, "photos", 5, 0), folder(tmp_path, "photos2", 3, 100)
    out = tmp_path / "lib"
    build(out, images=[first, second])
    before = snapshot(out)
    shutil.rmtree(second)  # an unmounted drive looks the same
    with pytest.raises(InvalidInputError, match="photos2, a source of this index, does not exist.*remove_items"):
        build(out)
    assert snapshot(out)["items"].keys() == before["items"].keys()


def test_an_emptied_source_folder_loses_its_items(tmp_path):
    first, second = folder(tmp_path, "photos", 5, 0), folder(tmp_path, "photos2", 3, 100)
    out = tmp_path / "lib"
    build(out, images=[first, second])
    for path in second.iterdir():
        path.unlink()
    report = build(out)
    assert report.counts["image"] == 5 and report.stats.removed == 3


def test_each_corpus_keeps_its_own_reading_options(tmp_path):
    titles = tmp_path / "titles.csv"
    titles.write_text("name,price\na red car,1\n", encoding="utf-8")
    menu = tmp_path / "menu.txt"
    menu.write_bytes("café latte\n".encode("latin-1"))
    out = tmp_path / "texts"
    build(out, texts=[titles], text_column="name")
    build(out, texts=[menu], encoding="latin-1")
    report = build(out)  # every corpus re-read with its recorded options
    assert report.stats.encoded == 0 and report.stats.removed == 0
    assert paths(out, "text") == {"a red car", "café latte"}
    recorded = {s.path: s for s in IndexDir(out).read_manifest().sources}
    assert recorded[str(titles)].text_column == "name" and recorded[str(menu)].encoding == "latin-1"


def test_the_same_text_in_two_corpora_is_two_items_encoded_once(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("a red car\n")
    b.write_text("a red car\nblue mug\n")
    out = tmp_path / "texts"
    build(out, texts=[a])
    report = build(out, texts=[b])
    assert report.counts["text"] == 3 and (report.stats.encoded, report.stats.reused) == (1, 1)


def write_embeddings(path, row_ids, vectors) -> None:
    """Format 2's vector file: row_id + a fixed-size list of float32 (xmodal no longer writes it)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), vectors.shape[1])
    pq.write_table(pa.table({"row_id": pa.array(np.asarray(row_ids, dtype=np.int64)), "embedding": embedding}), path)


def as_format_2(out) -> None:
    """Rewrite a fresh index in the format-2 layout: one generation folder of Parquet files."""
    from xmodal.indexer.store import VECTOR_SETS
    from xmodal.indexer.store.tables import items_table, write_failures, write_items
    from xmodal.indexer.build.stored import load_state, stored_rows

    index_dir = IndexDir(out)
    manifest = index_dir.read_manifest()
    state, rows = load_state(index_dir, manifest), stored_rows(index_dir, manifest)
    generation = out / manifest.generation
    write_items(generation / "items.parquet", items_table(rows))
    write_failures(generation / "failures.parquet", state.failures)
    for vector_set in VECTOR_SETS:
        ids = [r.row_id for r in rows if state.has_vector(vector_set, r.row_id)]
        if ids:
            write_embeddings(generation / f"embeddings-{vector_set}.parquet", ids,
                             [state.vector(vector_set, i) for i in ids])
    shutil.rmtree(out / "segments")
    data = json.loads(index_dir.manifest_path.read_text())
    data.pop("segments")
    data["format_version"] = 2
    index_dir.manifest_path.write_text(json.dumps(data))


def test_a_format_1_index_is_read_and_upgraded_on_its_next_commit(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = folder(tmp_path, "photos", 4, 0)
    out = tmp_path / "old"
    build(out, images=[images], texts=[CATALOG / "listings.csv"], text_column="title")
    as_format_2(out)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    items_path = out / manifest["generation"] / "items.parquet"
    items = pq.read_table(items_path).sort_by("row_id")
    lines = iter(range(2, len(items) + 2))  # rows no longer keep their lines: the texts came in line order
    sources = [f"{s}:{next(lines)}" if s else None for s in items["source"].to_pylist()]
    old_items = items.drop_columns(["line"]).set_column(items.schema.get_field_index("source"), "source",
                                                        pa.array(sources, pa.string()))
    pq.write_table(old_items, items_path)
    manifest.update(format_version=1, sources={"images": [str(images)], "texts": [str(CATALOG / "listings.csv")]},
                    settings={"text_column": "title", "index_type": "auto"})
    manifest_path.write_text(json.dumps(manifest))
    report = build(out)
    assert (report.stats.encoded, report.stats.removed) == (0, 0) and report.counts == {"image": 4, "text": 12, "product": 0}
    upgraded = json.loads(manifest_path.read_text())
    assert upgraded["format_version"] == 3 and upgraded["sources"][1]["text_column"] == "title"
    assert not IndexDir(out).read_manifest().is_legacy


def test_cli_adds_a_folder_lists_sources_and_drops_one(tmp_path):
    first, second = folder(tmp_path, "photos", 4, 0), folder(tmp_path, "photos2", 2, 100)
    out = tmp_path / "lib"
    assert xmodal("index", str(first), "--out", str(out), "--model", FAKE).returncode == 0
    added = xmodal("index", str(second), "--out", str(out))
    assert added.returncode == 0, added.stderr
    assert "removed 0" in added.stdout and "indexed 6 images" in added.stdout
    info = xmodal("info", str(out))
    assert f"source:   {first} (images)" in info.stdout and f"source:   {second} (images)" in info.stdout
    assert [s["path"] for s in json.loads(xmodal("info", str(out), "--json").stdout)["sources"]] == [
        str(first), str(second)]
    dropped = xmodal("remove", str(out), "--source", str(second))
    assert dropped.returncode == 0 and "removed 2 items" in dropped.stdout


def test_a_missing_folder_names_the_way_out_that_fits_it(tmp_path):
    """A recorded folder that is gone may be dropped with `xmodal remove --source`; a folder never indexed
    (a typo, a word taken for a folder) is only a wrong path."""
    a = folder(tmp_path, "a", 3, seed=1)
    out = tmp_path / "idx"
    build(out, images=[a])
    before = IndexDir(out).read_manifest()
    shutil.rmtree(a)
    done = xmodal("index", "--out", str(out), "--model", FAKE)
    assert done.returncode == 2 and done.stderr == (
        f"error: image folder {a}, a source of this index, does not exist; check the path (or, if it is gone "
        f"for good, drop it and its items with `xmodal remove {out} --source {a}`)\n")
    typo = tmp_path / "localhost"
    done = xmodal("index", str(typo), "--out", str(tmp_path / "other"), "--model", FAKE)
    assert done.returncode == 2 and done.stderr == f"error: image folder {typo} does not exist; check the path\n"
    assert IndexDir(out).read_manifest() == before and not (tmp_path / "other").exists()


def test_a_run_plans_and_reads_its_sources_once_under_the_writer_lock(tmp_path, monkeypatch):
    """Planned before the lock and again under it, a run read what another run could change in between."""
    import os

    import xmodal.indexer.build.pipeline as pipeline
    from xmodal.indexer.store.lock import running_writer

    out, calls = tmp_path / "idx", []
    planned, read = pipeline.plan_sources, pipeline.read_sources

    def plan(*args, **kwargs):
        calls.append(("plan", running_writer(out)))
        return planned(*args, **kwargs)

    def reading(*args, **kwargs):
        calls.append(("read", running_writer(out)))
        return read(*args, **kwargs)

    monkeypatch.setattr(pipeline, "plan_sources", plan)
    monkeypatch.setattr(pipeline, "read_sources", reading)
    images = folder(tmp_path, "a", 3, 0)
    for _ in range(2):  # a new index, then a re-run of it
        calls.clear()
        build_index(out, IndexConfig(images=[images], workers=0), encoder=FakeEncoder())
        assert calls == [("plan", os.getpid()), ("read", os.getpid())]
