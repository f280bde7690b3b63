"""Segmented storage: commits write only what changed, deletions, compaction, format-2 indexes, float16.

Every test compares against a clean build of the same sources: same items, same vectors, same hits.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import env_with_tests_path, noise_image
from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.store.ann import AnnSpec, VectorIndex
from xmodal.indexer.build.commit import COMPACT_DELETED_SHARE, MAX_SMALL_SEGMENTS
from xmodal.indexer.build.edit import compact_index, remove_items
from xmodal.indexer.errors import InvalidInputError
from xmodal.indexer.store import IndexDir
from xmodal.search import open_index
from xmodal.search.vectors import StoredVectors, VectorPart
from test_incremental import DRIVER, assert_same, config, snapshot

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "data" / "format2.idx"
FIXTURE_ROOT = "/tmp/f2"  # where the format-2 fixture was built; tests move it to their own folder
QUERIES = ["a red car", "a blue mug", "a green bicycle", "yellow", "number 3"]


@pytest.fixture
def sources(tmp_path):
    images = tmp_path / "src"
    images.mkdir()
    for i in range(20):
        noise_image(i).save(images / f"n{i:02d}.png")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"a red car number {i}" if i % 3 == 0 else f"a blue mug {i}" for i in range(30)))
    return images, texts


def hits(index, target: str, where: str | None = None) -> list:
    """Every query's hits by meaning, by content (row ids differ between a re-run index and a clean build; word
    scores too, as BM25 normalises lengths per segment)."""
    idx = open_index(index, encoder=FakeEncoder())
    out = []
    for query in QUERIES:
        for hit in idx.search(text=query, target=target, k=8, where=where, mode="vector"):
            out.append((query, hit.path or hit.text, round(hit.score, 5)))
    return out


def assert_same_search(index, other) -> None:
    """Same scores in the same order, and the same items above each query's last score.

    Equal scores rank by row id, and a re-run numbers rows differently from a clean build, so which of
    several items tied at the k-th place made the cut may differ.
    """
    for target in ("image", "text"):
        for query in QUERIES:
            mine = [h for h in hits(index, target) if h[0] == query]
            theirs = [h for h in hits(other, target) if h[0] == query]
            assert [h[2] for h in mine] == [h[2] for h in theirs]
            last = mine[-1][2]
            assert {h[1] for h in mine if h[2] > last} == {h[1] for h in theirs if h[2] > last}


def segment_dirs(index: Path) -> list[Path]:
    return sorted(p for p in (index / "segments").iterdir() if not p.name.startswith("."))


def clean(tmp_path, images, texts) -> Path:
    out = tmp_path / f"clean-{len(list(tmp_path.glob('clean-*')))}"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    return out


# ---- commits write only what changed ---------------------------------------------------------------

def test_a_commit_adds_one_segment_and_a_deletion_record_and_rewrites_nothing(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    first = build_index(out, config(images, texts), encoder=FakeEncoder())
    [segment] = segment_dirs(out)
    files_before = {p.relative_to(segment): (p.stat().st_mtime_ns, p.read_bytes())  # its word index's too
                    for p in segment.rglob("*") if p.is_file()}
    noise_image(100).save(images / "new.png")
    (images / "n03.png").unlink()
    noise_image(101).save(images / "n05.png")  # changed content: a new row replaces the old one
    second = build_index(out, config(images, texts), encoder=FakeEncoder())
    manifest = IndexDir(out).read_manifest()
    assert [s.name for s in manifest.segments][0] == segment.name and len(manifest.segments) == 2
    old, new = manifest.segments
    assert (new.rows, old.deleted_count) == (2, 2)
    for name, (mtime, data) in files_before.items():  # the first segment's files are untouched
        assert (segment / name).stat().st_mtime_ns == mtime and (segment / name).read_bytes() == data
    assert second.stats.bytes_written < first.stats.bytes_written  # at this size Parquet footers weigh most
    other = clean(tmp_path, images, texts)
    assert_same(snapshot(out), snapshot(other))
    assert_same_search(out, other)


def test_deletion_records_name_the_removed_and_replaced_rows(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    idx = open_index(out, encoder=FakeEncoder())
    by_path = {idx.item(int(r))["path"]: int(r) for r in idx.embeddings("image")[0]}
    (images / "n03.png").unlink()
    noise_image(101).save(images / "n05.png")
    build_index(out, config(images, texts), encoder=FakeEncoder())
    old = IndexDir(out).read_manifest().segments[0]
    deleted = np.load(out / "segments" / old.name / old.deleted).tolist()
    assert deleted == sorted([by_path[str(images / "n03.png")], by_path[str(images / "n05.png")]])


def test_many_deletions_rewrite_the_segment_and_match_a_clean_build(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    total = 20 + 30
    doomed = int(COMPACT_DELETED_SHARE * total) + 1
    for i in range(doomed):
        (images / f"n{i:02d}.png").unlink()
    report = build_index(out, config(images, texts), encoder=FakeEncoder())
    manifest = IndexDir(out).read_manifest()
    assert report.stats.compacted == 1 and [s.deleted_count for s in manifest.segments] == [0]
    assert not list((out / "segments").glob("*/deleted-*.npy")) or len(segment_dirs(out)) > 1  # old one awaits GC
    other = clean(tmp_path, images, texts)
    assert_same(snapshot(out), snapshot(other))
    assert_same_search(out, other)


def test_many_small_commits_are_merged_and_still_match_a_clean_build(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    counts = []
    for i in range(MAX_SMALL_SEGMENTS + 3):
        texts.write_text(texts.read_text() + f"\nextra line {i} about a yellow apple")
        build_index(out, config(images, texts), encoder=FakeEncoder())
        counts.append(len(IndexDir(out).read_manifest().segments))
    assert max(counts) <= MAX_SMALL_SEGMENTS + 1 and counts[-1] < counts[MAX_SMALL_SEGMENTS - 1]
    other = clean(tmp_path, images, texts)
    assert_same(snapshot(out), snapshot(other))
    assert_same_search(out, other)


def test_cli_compact_drops_deleted_rows_and_keeps_every_answer(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    remove_items(out, paths=[images / "n01.png", images / "n02.png"])
    before = hits(out, "image") + hits(out, "text")
    run = subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.app()", "compact", str(out)], capture_output=True,
                         text=True, timeout=60, env=env_with_tests_path())
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"compacted {out}: 1 segment -> 1, 2 deleted rows dropped,"), run.stdout
    manifest = IndexDir(out).read_manifest()
    assert [s.deleted_count for s in manifest.segments] == [0] and manifest.segments[0].rows == 48
    assert hits(out, "image") + hits(out, "text") == before
    info = subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.app()", "info", str(out)], capture_output=True,
                          text=True, timeout=60, env=env_with_tests_path())
    assert "storage:  1 segment, 0 deleted rows awaiting compaction, vectors float32" in info.stdout


@pytest.mark.parametrize("point,nth", [("write_items", 1), ("write_vectors", 2), ("publish_segment", 1),
                                       ("manifest_write", 1), ("garbage_collect", 1)])
def test_a_killed_compaction_leaves_the_last_commit_and_runs_again(tmp_path, sources, point, nth):
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    remove_items(out, paths=[images / "n01.png"])
    before, answers = snapshot(out), hits(out, "image")
    killed = subprocess.run([sys.executable, str(DRIVER), str(out), "-", "-", point, str(nth), "compact"],
                            capture_output=True, text=True, timeout=120, env=env_with_tests_path())
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert_same(snapshot(out), before)  # compaction never changes what an index holds
    assert hits(out, "image") == answers
    assert compact_index(out).deleted_after == 0
    assert_same(snapshot(out), before)
    assert not list(out.glob("segments/.staging-*")) and len(segment_dirs(out)) <= 2


def test_an_open_index_keeps_answering_across_compactions(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    reader = open_index(out, encoder=FakeEncoder())
    answers = [h.path for h in reader.search(text="a red car", target="image", k=20)]
    first_segment = segment_dirs(out)[0]
    for i in range(3):
        remove_items(out, paths=[images / f"n{i:02d}.png"])
        compact_index(out)
    assert not first_segment.exists()  # collected: the reader's files are gone from the folder
    assert [h.path for h in reader.search(text="a red car", target="image", k=20)] == answers
    assert len(reader.search(text="a blue mug", target="text", k=5)) == 5
    assert len(open_index(out, encoder=FakeEncoder()).search(text="a red car", target="image", k=50)) == 17


# ---- searching across segments ---------------------------------------------------------------------

def test_search_across_parts_with_deletions_equals_brute_force(tmp_path):
    rng = np.random.default_rng(3)
    dim, parts, every_id, every_vector = 16, [], [], []
    next_id = 0
    for size, kind in ((300, "flat"), (200, "ivf"), (50, "hnsw"), (40, "flat")):
        vectors = rng.normal(size=(size, dim)).astype(np.float32)
        vectors[::7] = vectors[0]  # ties, inside and across parts
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids = np.arange(next_id, next_id + size, dtype=np.int64) * 3 + 1
        next_id += size
        live = rng.random(size) > 0.15
        index = None if kind == "flat" else VectorIndex.build(vectors, ids, {"ivf": AnnSpec("ivf", {"nlist": 4, "nprobe": 4}),
                                                                            "hnsw": AnnSpec("hnsw", {"M": 16, "efSearch": 256})}[kind])
        parts.append(VectorPart(ids, vectors.astype(np.float16) if kind == "flat" and size == 40 else vectors, live, index))
        every_id.append(ids[live])
        every_vector.append(vectors[live].astype(np.float16).astype(np.float32) if size == 40 else vectors[live])
    stored = StoredVectors(parts)
    ids, matrix = np.concatenate(every_id), np.concatenate(every_vector)
    queries = np.concatenate([matrix[:3], rng.normal(size=(3, dim)).astype(np.float32)])
    allowed = np.sort(rng.choice(ids, 150, replace=False))
    for wanted in (None, allowed):
        results = stored.search(queries, 10, wanted)
        for query, result in zip(queries, results):
            pool = ids if wanted is None else wanted
            scores = matrix[np.searchsorted(ids, pool, sorter=np.argsort(ids)).clip(max=len(ids) - 1)]
            order = np.argsort(ids)
            scores = matrix[order][np.searchsorted(ids[order], pool)] @ query
            best = np.lexsort((pool, -scores.astype(np.float64)))[:10]
            assert result.row_ids.tolist() == pool[best].tolist()
            np.testing.assert_allclose(result.scores, scores[best], atol=1e-5)
    assert stored.positions(ids[:5]).min() >= 0
    deleted = parts[0].row_ids[~parts[0].live][:3]
    assert (stored.positions(deleted) == -1).all()
    np.testing.assert_array_equal(stored.subset(ids[10:20])[1], matrix[np.argsort(ids)][np.searchsorted(np.sort(ids), np.sort(ids[10:20]))])


# ---- format 2 ----------------------------------------------------------------------------------------

@pytest.fixture
def format2(tmp_path) -> Path:
    """The committed format-2 index, moved to this test's folder with its sources."""
    root = tmp_path / "f2"
    root.mkdir()
    shutil.copytree(REPO / "data" / "photos", root / "photos")
    shutil.copytree(REPO / "data" / "catalog", root / "catalog")
    shutil.copy(REPO / "data" / "menu-latin1.csv", root / "menu-latin1.csv")
    out = root / "format2.idx"
    shutil.copytree(FIXTURE, out)
    manifest = out / "manifest.json"
    manifest.write_text(manifest.read_text().replace(FIXTURE_ROOT, str(root)))
    for name in ("items.parquet", "failures.parquet"):
        path = next(out.glob("gen-*")) / name
        table = pq.read_table(path)
        for column in ("path", "source"):
            if column in table.column_names:
                moved = pa.compute.replace_substring(table.column(column), FIXTURE_ROOT, str(root))
                table = table.set_column(table.column_names.index(column), column, moved)
        pq.write_table(table, path)
    return out


def expected_format2(root: Path) -> dict:
    text = (Path(__file__).parent / "data" / "format2-expected.json").read_text()
    return json.loads(text.replace(FIXTURE_ROOT, str(root)))


def format2_answers(out: Path) -> dict:
    idx = open_index(out, encoder=FakeEncoder())
    answers = {target: [[h.row_id, round(h.score, 5), h.path, h.text] for h in idx.search(text="a red car", target=target, k=5, mode="vector")]
               for target in ("image", "text", "product")}
    answers["filtered"] = [[h.row_id, round(h.score, 5)] for h in
                           idx.search(text="a red car", target="product", k=5, where="price < 10000", mode="vector")]
    answers["failures"] = [f.where() for f in idx.failures()]
    return answers


def test_a_format_2_index_is_searched_as_it_was(format2):
    assert IndexDir(format2).read_manifest().format_version == 2
    assert format2_answers(format2) == expected_format2(format2.parent)


def test_compact_upgrades_a_format_2_index_and_every_answer_stays(format2):
    report = compact_index(format2)
    assert report.upgraded and report.segments_after == 1
    manifest = IndexDir(format2).read_manifest()
    assert manifest.format_version == 3 and not manifest.is_legacy
    assert format2_answers(format2) == expected_format2(format2.parent)


def test_the_next_commit_upgrades_a_format_2_index(format2):
    expected = expected_format2(format2.parent)
    removed = remove_items(format2, row_ids=[0])
    assert [r.row_id for r in removed] == [0]
    manifest = IndexDir(format2).read_manifest()
    assert manifest.format_version == 3 and not manifest.is_legacy and manifest.counts["image"] == 10
    answers = format2_answers(format2)
    assert answers["image"] == expected["image"][1:] + answers["image"][4:]
    assert answers["text"] == expected["text"] and answers["product"] == expected["product"]
    assert answers["failures"] == expected["failures"]


# ---- float16 ---------------------------------------------------------------------------------------

def test_float16_vectors_take_half_the_space_and_rank_the_same(tmp_path, sources):
    images, texts = sources
    full, half = tmp_path / "f32", tmp_path / "f16"
    build_index(full, config(images, texts), encoder=FakeEncoder())
    build_index(half, config(images, texts, vectors="float16"), encoder=FakeEncoder())
    [segment] = segment_dirs(half)
    stored = np.load(segment / "text.vectors.npy", mmap_mode="r")
    assert stored.dtype == np.float16
    assert (segment / "text.vectors.npy").stat().st_size < 0.6 * (segment_dirs(full)[0] / "text.vectors.npy").stat().st_size
    for target in ("image", "text"):
        assert [h[:2] for h in hits(half, target)] == [h[:2] for h in hits(full, target)]
        np.testing.assert_allclose([h[2] for h in hits(half, target)], [h[2] for h in hits(full, target)], atol=2e-3)
    noise_image(300).save(images / "later.png")
    build_index(half, config(images, texts), encoder=FakeEncoder())  # recorded: stays float16
    assert IndexDir(half).read_manifest().segments[-1].sets["image"].dtype == "float16"


def test_other_vector_storage_for_an_existing_index_is_refused_and_nothing_changes(tmp_path, sources):
    """--vectors float16 on a float32 index was recorded (info said float16) while every stored vector stayed
    float32: refused now, like another --decode, and the index is left as it was."""
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    before = (out / "manifest.json").read_bytes()
    noise_image(301).save(images / "later.png")
    with pytest.raises(InvalidInputError, match=r"this index stores vectors as float32 \(recorded when it was built\); "
                                                r"vectors='float16' applies to a new index"):
        build_index(out, config(images, texts, vectors="float16"), encoder=FakeEncoder())
    assert (out / "manifest.json").read_bytes() == before
    build_index(out, config(images, texts, vectors="float32"), encoder=FakeEncoder())  # the same: fine


def test_search_many_equals_one_query_at_a_time_across_segments(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    for i in range(3):
        noise_image(400 + i).save(images / f"late{i}.png")
    (images / "n04.png").unlink()
    build_index(out, config(images, texts), encoder=FakeEncoder())
    idx = open_index(out, encoder=FakeEncoder())
    assert len(IndexDir(out).read_manifest().segments) == 2
    photos = [images / "n07.png", images / "late1.png"]
    vectors = [idx.embed_text("a green apple")]
    for target in ("image", "text"):
        batched = idx.search_many(texts=QUERIES, images=photos, vectors=vectors, target=target, k=6)
        single = [idx.search(text=q, target=target, k=6) for q in QUERIES] + \
                 [idx.search(image=p, target=target, k=6) for p in photos] + \
                 [idx.search_vector(v, target=target, k=6) for v in vectors]
        assert [[(h.row_id, h.rank) for h in hs] for hs in batched] == [[(h.row_id, h.rank) for h in hs] for hs in single]
        for many, one in zip(batched, single):
            np.testing.assert_allclose([h.score for h in many], [h.score for h in one], atol=1e-6)
    where = "size >= 13"
    batched = idx.search_many(texts=QUERIES, target="text", k=4, where=where)
    assert [[h.row_id for h in hs] for hs in batched] == [[h.row_id for h in idx.search(text=q, target="text", k=4,
                                                                                           where=where)] for q in QUERIES]
    with pytest.raises(Exception, match="non-empty"):
        idx.search_many(texts=["ok", " "], target="text")


# ---- re-runs that need not load the index ------------------------------------------------------------

def test_a_rerun_with_nothing_changed_neither_reads_corpora_nor_loads_the_index(tmp_path, sources, monkeypatch):
    import xmodal.indexer.build.pipeline as pipeline
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    recorded = IndexDir(out).read_manifest().sources
    assert [s.fingerprint is not None for s in recorded] == [False, True]  # corpora only

    def forbidden(*args, **kwargs):
        raise AssertionError("should not be needed")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline.sources, "read_corpus", forbidden)
        patch.setattr(pipeline.sources, "stream_corpus", forbidden)
        patch.setattr(pipeline, "load_state", forbidden)
        report = build_index(out, config(images, texts), encoder=FakeEncoder())
    assert not report.committed and report.stats.reused == 50 and report.counts["text"] == 30
    assert IndexDir(out).read_manifest().last_run["reused"] == 50

    with monkeypatch.context() as patch:  # an image changed: the index is loaded, the corpus still not read
        patch.setattr(pipeline.sources, "read_corpus", forbidden)
        patch.setattr(pipeline.sources, "stream_corpus", forbidden)
        noise_image(77).save(images / "n02.png")
        report = build_index(out, config(images, texts), encoder=FakeEncoder())
    assert report.committed and (report.stats.encoded, report.stats.removed) == (1, 0)  # edited: its row id kept

    texts.write_text(texts.read_text() + "\none more line about a red car")  # the corpus changed: read again
    report = build_index(out, config(images, texts), encoder=FakeEncoder())
    assert report.stats.encoded == 1 and report.counts["text"] == 31
    assert_same(snapshot(out), snapshot(clean(tmp_path, images, texts)))


def test_changed_reading_options_read_an_unchanged_corpus_again(tmp_path):
    corpus = tmp_path / "menu.csv"
    corpus.write_text("id,text,name\n1,a red car,first\n2,a blue mug,second\n")
    out = tmp_path / "idx"
    build_index(out, IndexConfig(texts=[corpus], workers=0), encoder=FakeEncoder())
    report = build_index(out, IndexConfig(texts=[corpus], text_column="name", workers=0), encoder=FakeEncoder())
    assert report.committed and report.stats.encoded == 2
    assert sorted(h.text for h in open_index(out, encoder=FakeEncoder()).search(text="x", target="text", k=5)) == \
        ["first", "second"]


def test_memory_mapped_ivf_segments_keep_answering_after_they_are_collected(tmp_path):
    from fakes import HashEncoder

    corpus = tmp_path / "notes.txt"
    corpus.write_text("\n".join(f"note {i} kind:{i % 9}" for i in range(2000)) + "\n")
    encoder, out = HashEncoder(), tmp_path / "idx"
    build_index(out, IndexConfig(texts=[corpus], workers=0, index_type="ivf"), encoder=encoder)
    assert list(out.glob("segments/*/text.faiss"))
    reader = open_index(out, encoder=encoder)
    answers = [[h.row_id for h in reader.search(text=f"note {i} kind:{i % 9}", target="text", k=5)] for i in range(0, 2000, 199)]
    corpus.write_text("\n".join(f"note {i} kind:{i % 9}" for i in range(1000)) + "\n")  # half deleted: rewritten
    build_index(out, IndexConfig(texts=[corpus], workers=0), encoder=encoder)
    for extra in range(2):  # two more commits: the first generation, and its segment, are collected
        corpus.write_text(corpus.read_text() + f"one more note {extra}\n")
        build_index(out, IndexConfig(texts=[corpus], workers=0), encoder=encoder)
    assert not (out / "segments" / "seg-000001-0").exists()
    assert [[h.row_id for h in reader.search(text=f"note {i} kind:{i % 9}", target="text", k=5)]
            for i in range(0, 2000, 199)] == answers


def test_an_open_index_reads_only_the_item_rows_its_hits_need(tmp_path):
    from fakes import HashEncoder
    from xmodal.indexer.store.tables import ITEMS_ROW_GROUP

    corpus = tmp_path / "notes.txt"
    corpus.write_text("\n".join(f"note {i} kind:{i % 9}" for i in range(3 * ITEMS_ROW_GROUP + 5)) + "\n")
    encoder, out = HashEncoder(), tmp_path / "idx"
    build_index(out, IndexConfig(texts=[corpus], workers=0), encoder=encoder)
    [segment] = segment_dirs(out)
    assert pq.ParquetFile(segment / "items.parquet").metadata.num_row_groups == 4
    idx = open_index(out, encoder=encoder)
    assert len(idx) == 3 * ITEMS_ROW_GROUP + 5 and not idx._items._groups  # opening read ids only
    hit = idx.search(text="note 9000 kind:0", target="text", k=1)[0]
    assert hit.text == "note 9000 kind:0" and len(idx._items._groups) == 1


def test_items_of_corpora_with_different_columns_share_one_set_of_fields(tmp_path):
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("text,price,colour\na red car,18500,red\na blue mug,9,blue\n")
    second.write_text("text,price,size\na red shoe,49.5,42\na green apple,0.5,\n")
    out = tmp_path / "idx"
    build_index(out, IndexConfig(texts=[first], workers=0), encoder=FakeEncoder())
    build_index(out, IndexConfig(texts=[second], workers=0), encoder=FakeEncoder())
    assert len(IndexDir(out).read_manifest().segments) == 2
    idx = open_index(out, encoder=FakeEncoder())
    hits = {h.text: h.metadata for h in idx.search(text="red", target="text", k=4)}
    assert hits["a red car"] == {"price": 18500, "colour": "red", "size": None}
    assert hits["a red shoe"] == {"price": 49.5, "colour": None, "size": 42}
    cheap = idx.search(text="red", target="text", k=4, where="price < 10")
    assert sorted(h.text for h in cheap) == ["a blue mug", "a green apple"]
