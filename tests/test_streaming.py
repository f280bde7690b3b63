"""Corpora streamed in batches and planned by joins; new rows written a segment at a time.

The oracle is a build of the same corpus in one batch and one segment: the same items,
vectors and hits, whatever the batch and segment sizes.
"""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import xmodal.indexer.build.commit
import xmodal.indexer.build.fresh
import xmodal.indexer.build.sources.corpus
from fakes import HashEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.build.sources import read_corpus, stream_corpus
from xmodal.indexer.store import IndexDir
from xmodal.indexer.build.stored import load_state, stored_rows
from xmodal.search import open_index

COLOURS = ["red", "blue", "green", "black"]


def catalog(path, n: int, start: int = 0, dupes: bool = True) -> None:
    """A Parquet corpus with typed metadata, a few empty texts and repeated texts."""
    numbers = range(start, start + n)
    texts = [("" if i % 97 == 5 else f"a {COLOURS[i % 4]} car number {i % 300 if dupes else i}") for i in numbers]
    pq.write_table(pa.table({
        "text": texts,
        "price": pa.array([None if i % 50 == 7 else 1000 + 10 * i for i in numbers], pa.int32()),
        "colour": [COLOURS[i % 4] for i in numbers],
        "rating": [i / 7 for i in numbers],
        "in_stock": [i % 3 == 0 for i in numbers],
    }), path, row_group_size=100)


def build(out, corpus, **extra):
    return build_index(out, IndexConfig(texts=[corpus], workers=0, batch_size=16, **extra), encoder=HashEncoder())


def content(index) -> dict:
    """(text, metadata, n-th copy) -> (metadata, vector): what an index holds, independent of row ids, segments
    and lines (rows do not keep their lines)."""
    index_dir = IndexDir(index)
    manifest = index_dir.read_manifest()
    state = load_state(index_dir, manifest)
    held = {}
    for row in stored_rows(index_dir, manifest):
        same = (row.text, json.dumps(row.metadata, sort_keys=True))
        copy = sum(1 for key in held if key[:2] == same)
        held[(*same, copy)] = (row.metadata, state.vector("text", row.row_id))
    return held


def assert_same_content(a, b) -> None:
    mine, theirs = content(a), content(b)
    assert mine.keys() == theirs.keys()
    for key in mine:
        assert mine[key][0] == theirs[key][0]
        np.testing.assert_allclose(mine[key][1], theirs[key][1], atol=1e-6)


def ranked(index, where=None) -> list:
    idx = open_index(index, encoder=HashEncoder())
    return [[(h.text, h.metadata.get("price"), round(h.score, 5)) for h in idx.search(text=q, target="text", k=10, where=where, mode="vector")]
            for q in ("a red car number 7", "a green car", "black car number 250")]


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of 64 rows and segments of 300: a few thousand rows behave as millions would."""
    monkeypatch.setattr(xmodal.indexer.build.sources.corpus, "STREAM_ROWS", 64)
    monkeypatch.setattr(xmodal.indexer.build.fresh, "SEGMENT_ROWS", 300)
    monkeypatch.setattr(xmodal.indexer.build.commit, "SEGMENT_ROWS", 300)


def test_a_parquet_corpus_streams_the_rows_read_corpus_reads(tmp_path):
    corpus = tmp_path / "catalog.parquet"
    catalog(corpus, 1000)
    whole = read_corpus(corpus)
    batches = list(stream_corpus(corpus, rows=64))
    assert len(batches) == 16
    texts = [t for b in batches for t in b.texts.to_pylist()]
    lines = [int(line) for b in batches for line in b.lines]
    metadata = [m for b in batches for m in b.metadata.to_pylist()]
    assert texts == [r.text for r in whole.records] and lines == [r.line for r in whole.records]
    assert metadata == [r.metadata for r in whole.records]
    assert [(s.line, s.reason) for b in batches for s in b.skipped] == [(s.line, s.reason) for s in whole.skipped]


def test_a_corpus_in_many_batches_and_segments_equals_one_built_whole(tmp_path, monkeypatch):
    corpus = tmp_path / "catalog.parquet"
    catalog(corpus, 1000)
    whole = build(tmp_path / "whole", corpus)
    with monkeypatch.context() as patch:
        patch.setattr(xmodal.indexer.build.sources.corpus, "STREAM_ROWS", 64)
        patch.setattr(xmodal.indexer.build.fresh, "SEGMENT_ROWS", 300)
        patch.setattr(xmodal.indexer.build.commit, "SEGMENT_ROWS", 300)
        streamed = build(tmp_path / "streamed", corpus)
    manifest = IndexDir(tmp_path / "streamed").read_manifest()
    assert [s.rows for s in manifest.segments] == [300, 300, 300, 89]  # 1000 rows, 11 of them empty
    assert streamed.counts == whole.counts == {"image": 0, "text": 989, "product": 0}
    assert_same_content(tmp_path / "streamed", tmp_path / "whole")
    assert ranked(tmp_path / "streamed") == ranked(tmp_path / "whole")
    assert ranked(tmp_path / "streamed", "price < 2000 and colour == 'red'") == \
        ranked(tmp_path / "whole", "price < 2000 and colour == 'red'")


def rerun_after(tmp_path, edit):
    """Build a 1,000-row catalog, apply `edit` to its rows, re-run; returns (index, corpus, report)."""
    corpus, out = tmp_path / "catalog.parquet", tmp_path / "idx"
    catalog(corpus, 1000)
    build(out, corpus)
    table = pq.read_table(corpus).to_pylist()
    edit(table)
    pq.write_table(pa.Table.from_pylist(table), corpus)
    return out, corpus, build(out, corpus)


def assert_same_as_clean_build(tmp_path, out, corpus) -> None:
    clean = tmp_path / "clean"
    build(clean, corpus)
    assert_same_content(out, clean)
    assert ranked(out) == ranked(clean)


def test_a_changed_corpus_writes_only_changed_rows_and_equals_a_clean_build(tmp_path, small_batches):
    def edit(table):
        table[10]["text"] = "a brand new listing"  # new text: encoded; the old one has a copy fewer
        table[20]["price"] = 1  # same text, other metadata: rewritten under its row id, vector reused
        table.append(dict(table[40]))  # a repeated text: a new row, its vector reused
        table.append({**table[41], "text": "another new listing"})
        del table[999]  # the last row

    out, corpus, report = rerun_after(tmp_path, edit)
    assert (report.stats.encoded, report.stats.removed, report.stats.compacted) == (2, 2, 0)
    manifest = IndexDir(out).read_manifest()
    [written] = [s for s in manifest.segments if s.name.startswith("seg-000002")]
    assert written.rows == 4  # two new texts, the new price, the repeated text
    assert sum(s.deleted_count for s in manifest.segments) == 3  # the old line 11, the old price, the last row
    assert_same_as_clean_build(tmp_path, out, corpus)


def test_rows_moved_to_other_lines_equal_a_clean_build(tmp_path, small_batches):
    def edit(table):
        del table[30]  # every later row moves up a line: rewritten under its row id, vectors reused

    out, corpus, report = rerun_after(tmp_path, edit)
    assert (report.stats.encoded, report.stats.removed) == (0, 1)
    assert_same_as_clean_build(tmp_path, out, corpus)


def test_unchanged_rows_of_a_rerun_stay_where_they_are(tmp_path, small_batches):
    corpus = tmp_path / "catalog.parquet"
    catalog(corpus, 1000)
    out = tmp_path / "idx"
    build(out, corpus)
    before = IndexDir(out).read_manifest().segments
    corpus.touch()  # a newer mtime: the corpus is read again, and every row matches
    report = build(out, corpus)
    assert (report.stats.encoded, report.stats.removed, report.stats.reused) == (0, 0, 989)
    assert not report.committed and IndexDir(out).read_manifest().segments == before


def test_repeated_texts_claim_stored_rows_one_each(tmp_path):
    corpus = tmp_path / "texts.parquet"
    pq.write_table(pa.table({"text": ["same", "other", "same", "same"]}), corpus)
    out = tmp_path / "idx"
    build(out, corpus)
    ids = [(r.text, r.row_id) for r in stored_rows(IndexDir(out), IndexDir(out).read_manifest())]
    assert ids == [("same", 0), ("other", 1), ("same", 2), ("same", 3)]
    pq.write_table(pa.table({"text": ["same", "other", "same"]}), corpus)  # a "same" goes
    report = build(out, corpus)
    after = [(r.text, r.row_id) for r in stored_rows(IndexDir(out), IndexDir(out).read_manifest())]
    assert (report.stats.removed, report.stats.encoded) == (1, 0)
    assert after == ids[:3]  # the copies keep their rows in row-id order; the last copy's row goes


def test_segments_at_the_size_cap_are_not_merged_as_small(tmp_path, small_batches):
    corpus = tmp_path / "catalog.parquet"
    catalog(corpus, 3000, dupes=False)
    out = tmp_path / "idx"
    build(out, corpus)
    full = [s.name for s in IndexDir(out).read_manifest().segments if s.rows == 300]
    assert len(full) == 9
    for round_number in range(3):  # small commits: each appends a few rows
        catalog(corpus, 3000 + 5 * (round_number + 1), dupes=False)
        build(out, corpus)
    after = [s.name for s in IndexDir(out).read_manifest().segments]
    assert set(full) <= set(after)


def test_batch_text_hashes_are_the_content_hash_of_each_text():
    from xmodal.indexer.build.plan import text_hash, text_hashes

    texts = ["a red car", "", "我想买一辆红色汽车", "x" * 5000]
    assert text_hashes(texts) == [text_hash(t) for t in texts]


def test_tuning_scores_in_chunks_find_the_exact_best(monkeypatch):
    from xmodal.indexer.store import ann

    monkeypatch.setattr(ann, "TUNING_CHUNK", 7)
    rng = np.random.default_rng(3)
    vectors, queries = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(4, 8)).astype(np.float32)
    found = ann._exact_top(queries, vectors, 5)
    assert [sorted(row) for row in found.tolist()] == \
        [sorted(np.argsort(-(q @ vectors.T))[:5].tolist()) for q in queries]


@pytest.mark.parametrize("point,nth", [("publish_segment", 2), ("write_vectors", 3), ("manifest_write", 1)])
def test_a_run_killed_between_its_segments_resumes_and_equals_a_clean_build(tmp_path, point, nth):
    import signal
    import subprocess
    import sys

    from conftest import env_with_tests_path, noise_image
    from fakes import FakeEncoder
    from test_incremental import DRIVER, assert_same, config, snapshot

    images = tmp_path / "photos"
    images.mkdir()
    for i in range(3):
        noise_image(i).save(images / f"n{i}.png")
    corpus = tmp_path / "texts.parquet"
    pq.write_table(pa.table({"text": [f"a {COLOURS[i % 4]} mug number {i}" for i in range(50)]}), corpus)
    out = tmp_path / "idx"
    env = {**env_with_tests_path(), "XMODAL_TEST_SEGMENT_ROWS": "20"}
    killed = subprocess.run([sys.executable, str(DRIVER), str(out), str(images), str(corpus), point, str(nth)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert list((out / "segments").iterdir())  # segments of the killed run were written
    resumed = build_index(out, config(images, corpus), encoder=FakeEncoder())
    stats = resumed.stats  # what the killed run encoded comes from the journal; only the rest is encoded
    assert stats.resumed >= 20 and stats.encoded + stats.resumed == 53
    clean = tmp_path / "clean"
    build_index(clean, config(images, corpus), encoder=FakeEncoder())
    assert_same(snapshot(out), snapshot(clean))
    import json

    referenced = {s["name"] for copy in out.glob("gen-*/manifest.json")
                  for s in json.loads(copy.read_text())["segments"]}
    assert {p.name for p in (out / "segments").iterdir()} == referenced  # no orphan of the killed run is left


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".txt"])
def test_text_formats_stream_in_batches_with_the_types_of_the_whole_file(tmp_path, suffix):
    import json

    path = tmp_path / f"corpus{suffix}"
    rows = [{"text": f"item {i}" if i % 9 else " ", "price": i if i < 150 else i + 0.5, "tag": "x" if i % 2 else ""}
            for i in range(200)]
    if suffix == ".csv":
        path.write_text("text,price,tag\n" + "".join(f"{r['text']},{r['price']},{r['tag']}\n" for r in rows))
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    else:
        path.write_text("".join(r["text"] + "\n" for r in rows))
    whole = read_corpus(path)
    batches = list(stream_corpus(path, rows=32))
    assert len(batches) > 5
    assert [t for b in batches for t in b.texts.to_pylist()] == [r.text for r in whole.records]
    assert [int(x) for b in batches for x in b.lines] == [r.line for r in whole.records]
    metadata = [m for b in batches for m in (b.metadata.to_pylist() if b.metadata is not None else [None] * len(b.texts))]
    assert metadata == [r.metadata or None for r in whole.records]
    if suffix != ".txt":  # a late float makes the whole column float, in the first batch too
        assert isinstance(metadata[0]["price"], float)
    assert sorted((s.line, s.reason) for b in batches for s in b.skipped) == [(s.line, s.reason) for s in whole.skipped]


def test_image_folders_in_small_batches_and_segments_equal_a_clean_build(tmp_path, monkeypatch):
    import xmodal.indexer.build.pipeline
    from conftest import noise_image
    from fakes import FakeEncoder
    from test_incremental import assert_same, config, snapshot

    monkeypatch.setattr(xmodal.indexer.build.pipeline, "IMAGE_BATCH", 3)
    monkeypatch.setattr(xmodal.indexer.build.fresh, "SEGMENT_ROWS", 7)
    monkeypatch.setattr(xmodal.indexer.build.commit, "SEGMENT_ROWS", 7)
    images = tmp_path / "photos"
    images.mkdir()
    for i in range(16):
        noise_image(i).save(images / f"n{i:02d}.png")
    texts = tmp_path / "notes.txt"
    texts.write_text("a red car\na blue mug\n")
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    assert len(IndexDir(out).read_manifest().segments) == 3
    ids = {r.path: r.row_id for r in stored_rows(IndexDir(out), IndexDir(out).read_manifest())}
    (images / "n01.png").rename(images / "z-moved.png")  # moves to the last batch: takes over its row
    (images / "n05.png").unlink()
    noise_image(99).save(images / "n09.png")  # new content at a known path
    report = build_index(out, config(images, texts), encoder=FakeEncoder())
    assert (report.stats.encoded, report.stats.removed) == (1, 1)  # n09's new content, in its own row; n05
    after = {r.path: r.row_id for r in stored_rows(IndexDir(out), IndexDir(out).read_manifest())}
    assert after[str(images / "z-moved.png")] == ids[str(images / "n01.png")]
    assert after[str(images / "n09.png")] == ids[str(images / "n09.png")]  # an edited photo keeps its row id
    clean = tmp_path / "clean"
    build_index(clean, config(images, texts), encoder=FakeEncoder())
    assert_same(snapshot(out), snapshot(clean))
