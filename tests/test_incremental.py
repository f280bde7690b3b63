"""Incremental re-runs, resume after SIGKILL at many points, one writer, readers never fail."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import TESTS, env_with_tests_path, noise_image
from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.build.edit import list_items, remove_items
from xmodal.indexer.errors import IndexLockedError, IndexWriteError, InvalidInputError
from xmodal.indexer.build.stored import load_state, stored_rows
from xmodal.indexer.store import IndexDir
from xmodal.indexer.store.lock import WriterLock
from xmodal.search import open_index

DRIVER = str(TESTS / "kill_driver.py")
IMAGES_IN_SOURCES = 23  # with batch 4 and journal chunks of 4: several chunks, a ragged last one


@pytest.fixture
def sources(tmp_path):
    images = tmp_path / "src"
    (images / "nested").mkdir(parents=True)
    for i in range(IMAGES_IN_SOURCES):
        noise_image(i).save(images / ("nested" if i % 2 else "") / f"n{i:02d}.png")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(f"a red car number {i}" if i % 3 == 0 else f"a blue mug {i}" for i in range(9)))
    return images, texts


def config(images, texts, **extra) -> IndexConfig:
    return IndexConfig(images=[images], texts=[texts], workers=0, batch_size=4, journal_every=4, **extra)


def snapshot(index) -> dict:
    """What an index holds, keyed by content, never by position or row id."""
    index_dir = IndexDir(index)
    manifest = index_dir.read_manifest()
    state, rows = load_state(index_dir, manifest), stored_rows(index_dir, manifest)
    items = {}
    for row in rows:
        key = (row.modality, row.path or row.text)
        assert key not in items, f"duplicate item {key}"
        items[key] = state.vector(row.modality, row.row_id)
    ids = [r.row_id for r in rows]
    assert len(ids) == len(set(ids)), "duplicate row ids"
    return {"items": items, "failures": sorted(f.path for f in state.failures)}


def assert_same(a: dict, b: dict) -> None:
    assert a["items"].keys() == b["items"].keys()
    for key in a["items"]:
        np.testing.assert_array_equal(a["items"][key], b["items"][key])
    assert a["failures"] == b["failures"]


def clean_build(tmp_path, images, texts) -> dict:
    out = tmp_path / f"clean-{time.monotonic_ns()}"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    return snapshot(out)


def run_driver(index, images, texts, point: str, number: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, DRIVER, str(index), str(images), str(texts), point, str(number)],
                          capture_output=True, text=True, timeout=120, env=env_with_tests_path())


# ---- incremental re-runs --------------------------------------------------------------------------

def test_no_change_rerun_encodes_nothing_and_writes_no_generation(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    first = build_index(out, config(images, texts), encoder=FakeEncoder())
    assert first.stats.encoded == IMAGES_IN_SOURCES + 9 and first.stats.failed == 1
    again = build_index(out, config(images, texts), encoder=FakeEncoder())
    assert (again.stats.encoded, again.stats.removed, again.stats.failed) == (0, 0, 0)
    assert again.stats.reused == IMAGES_IN_SOURCES + 9 and not again.committed
    manifest = IndexDir(out).read_manifest()
    assert manifest.generation == "gen-000001" and manifest.last_run["reused"] == IMAGES_IN_SOURCES + 9


def test_a_re_run_counts_an_unchanged_corpus_as_reused_whatever_else_changed(tmp_path, sources):
    """The corpus is not read again when it is as recorded; its texts are reused all the same, as a run with
    nothing changed at all counts them."""
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    noise_image(100).save(images / "added.png")
    again = build_index(out, config(images, texts), encoder=FakeEncoder())
    assert (again.stats.encoded, again.stats.reused) == (1, IMAGES_IN_SOURCES + 9)


def test_add_delete_modify_rename_and_texts_equal_a_clean_build(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    before = {r.path: r.row_id for r in list_items(out, "image")}
    noise_image(100).save(images / "added.png")                       # add
    (images / "n00.png").unlink()                                     # delete
    noise_image(101).save(images / "n02.png")                         # modify
    (images / "moved").mkdir()
    shutil.move(images / "n04.png", images / "moved" / "renamed.png")  # rename + move
    texts.write_text(texts.read_text().replace("a blue mug 1\n", "") + "\na new green bicycle")
    report = build_index(out, config(images, texts), encoder=FakeEncoder())
    assert report.stats.encoded == 3 and report.stats.removed == 2  # added, n02, new text / n00, old text
    after = {r.path: r.row_id for r in list_items(out, "image")}
    assert after[str(images / "moved" / "renamed.png")] == before[str(images / "n04.png")]
    assert after[str(images / "n02.png")] == before[str(images / "n02.png")]  # edited in place: its row id
    assert_same(snapshot(out), clean_build(tmp_path, images, texts))


def test_an_edited_photo_keeps_its_row_id_so_a_saved_like_still_finds_it(tmp_path, sources):
    """A photo edited in place (other pixels, same path) is the same item: a like saved by its row id keeps
    working and now means the new photo."""
    from PIL import Image

    from fakes import PALETTE

    images, texts = sources
    out, photo = tmp_path / "idx", images / "n02.png"
    Image.new("RGB", (72, 56), PALETTE["red"]).save(photo)
    build_index(out, config(images, texts), encoder=FakeEncoder())
    before = {r.path: r.row_id for r in list_items(out, "image")}
    Image.new("RGB", (72, 56), PALETTE["blue"]).save(photo)
    report = build_index(out, config(images, texts), encoder=FakeEncoder())
    assert (report.stats.encoded, report.stats.removed) == (1, 0)
    after = {r.path: r.row_id for r in list_items(out, "image")}
    assert after == before  # every path, the edited one included, has the row id it had
    index = open_index(out, encoder=FakeEncoder())
    row_ids, vectors = index.embeddings("image")
    encoder = FakeEncoder()
    blue = encoder.encode_preprocessed([encoder.preprocess_image(Image.open(photo))])[0]
    np.testing.assert_allclose(vectors[list(row_ids).index(before[str(photo)])], blue, atol=1e-6)
    liked = index.search(like=[before[str(photo)]], target="image", k=5)  # the liked item itself left out
    nearest = [h for h in index.search_vector(blue, "image", 6) if h.row_id != before[str(photo)]]
    assert [(h.row_id, round(h.score, 5)) for h in liked] == [(h.row_id, round(h.score, 5)) for h in nearest[:5]]
    assert_same(snapshot(out), clean_build(tmp_path, images, texts))


def test_cli_rerun_with_recorded_sources_changes_nothing(tmp_path, sources, monkeypatch):
    from typer.testing import CliRunner

    from xmodal.cli import app

    images, texts = sources
    monkeypatch.chdir(tmp_path)  # relative paths on the first run, recorded absolute ones on the second
    first = CliRunner().invoke(app, ["index", "src", "--texts", "texts.txt", "--out", "idx",
                                     "--model", "python:fakes:make_encoder", "--workers", "0"])
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(app, ["index", "--out", "idx"])
    assert again.exit_code == 0, again.output
    assert ("this run: encoded 0, reused 32, resumed 0, removed 0, failed 0 (1 skipped as before: a file is retried "
            "once it changes, or with --retry-failed; nothing changed)") in again.output  # broken.png
    assert IndexDir(tmp_path / "idx").read_manifest().generation == "gen-000001"


def test_touched_file_keeps_its_row_without_encoding(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    os.utime(images / "n01.png" if (images / "n01.png").exists() else images / "nested" / "n01.png",
             (time.time() + 100, time.time() + 100))
    report = build_index(out, config(images, texts), encoder=FakeEncoder())
    assert report.stats.encoded == 0 and report.stats.removed == 0


def test_failures_are_retried_only_when_changed_or_asked(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    assert build_index(out, config(images, texts), encoder=FakeEncoder()).stats.failed == 0  # not retried
    assert open_index(out, encoder=FakeEncoder()).failures()[0].path.endswith("broken.png")
    retried = build_index(out, config(images, texts, retry_failed=True), encoder=FakeEncoder())
    assert retried.stats.failed == 1
    noise_image(777).save(images / "broken.png")  # repaired, with content not seen before
    fixed = build_index(out, config(images, texts), encoder=FakeEncoder())
    assert fixed.stats.encoded == 1 and fixed.counts["image"] == IMAGES_IN_SOURCES + 1
    assert open_index(out, encoder=FakeEncoder()).failures() == []


def test_ivf_takes_additions_and_removals_in_place_and_stays_exact_enough(tmp_path, sources, tiny_encoder):
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts, index_type="ivf"), encoder=tiny_encoder)
    trained = IndexDir(out).read_manifest().ann["image"].params["trained_on"]
    noise_image(200).save(images / "extra.png")
    (images / "n00.png").unlink()
    build_index(out, config(images, texts), encoder=tiny_encoder)  # index type recorded: stays ivf
    manifest = IndexDir(out).read_manifest()
    assert manifest.ann["image"].kind == "ivf" and manifest.ann["image"].params["trained_on"] == trained
    idx = open_index(out, encoder=tiny_encoder)
    row_ids, vectors = idx.embeddings("image")
    for query in vectors[:5]:
        exact = row_ids[np.argsort(-(vectors @ query), kind="stable")[:5]]
        assert [h.row_id for h in idx.search_vector(query, "image", 5)][0] == exact[0]
    assert len(idx.search_vector(vectors[0], "image", 100)) == IMAGES_IN_SOURCES


def test_remove_and_list(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    text_id = list_items(out, "text")[0].row_id
    removed = remove_items(out, paths=[images / "nested"], row_ids=[text_id])
    assert len(removed) == IMAGES_IN_SOURCES // 2 + 1
    idx = open_index(out, encoder=FakeEncoder())
    assert idx.manifest.counts == {"image": IMAGES_IN_SOURCES - IMAGES_IN_SOURCES // 2, "text": 8, "product": 0}
    assert all("nested" not in h.path for h in idx.search(text="red", target="image", k=50))
    with pytest.raises(InvalidInputError, match="no indexed item"):
        remove_items(out, paths=[images / "nested"])
    with pytest.raises(InvalidInputError, match="row id 99999"):
        remove_items(out, row_ids=[99999])


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), PermissionError(13, "Permission denied")])
def test_write_errors_keep_the_last_commit_and_the_encoded_work(tmp_path, sources, monkeypatch, error):
    import xmodal.indexer.build.fresh as pipeline
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    before = snapshot(out)
    noise_image(300).save(images / "new.png")

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(pipeline, "write_segment", fail)
    with pytest.raises(IndexWriteError, match=f"{error.strerror}; the last committed index is unchanged"):
        build_index(out, config(images, texts), encoder=FakeEncoder())
    assert_same(snapshot(out), before)
    monkeypatch.undo()
    resumed = build_index(out, config(images, texts), encoder=FakeEncoder())
    assert resumed.stats.encoded == 0 and resumed.stats.resumed == 1


class InterruptedEncoder(FakeEncoder):
    """Ctrl-C arrives during the third batch of images."""

    def __init__(self):
        super().__init__()
        self.batches = 0

    def encode_preprocessed(self, batch):
        self.batches += 1
        if self.batches == 3:
            raise KeyboardInterrupt
        return super().encode_preprocessed(batch)


def test_ctrl_c_in_a_first_build_keeps_the_work_for_the_next_run(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    given = config(images, texts)
    with pytest.raises(KeyboardInterrupt):
        build_index(out, given, encoder=InterruptedEncoder())
    assert given.model is None and not IndexDir(out).is_index()  # caller's config untouched; nothing committed
    report = build_index(out, config(images, texts), encoder=FakeEncoder())
    done = 2 * 4  # two batches of 4 decoded images made it (broken.png is a failure, in no batch)
    assert report.stats.resumed == done and report.stats.encoded == IMAGES_IN_SOURCES + 9 - done
    assert_same(snapshot(out), clean_build(tmp_path, images, texts))


def test_bad_model_on_a_new_folder_leaves_nothing(tmp_path, sources):
    from xmodal.indexer.errors import UnknownModelError

    images, texts = sources
    with pytest.raises(UnknownModelError):
        build_index(tmp_path / "new", IndexConfig(images=[images], model="python:nomodule_xyz:f"))
    assert not (tmp_path / "new").exists()


# ---- SIGKILL at many points, then resume ---------------------------------------------------------

KILLS = [("encode_image", 1), ("encode_image", 2), ("encode_image", 4), ("encode_image", 6),
         ("journal_append", 1), ("journal_append", 3), ("journal_append", 6), ("encode_text", 1),
         ("encode_text", 3), ("write_items", 1), ("write_vectors", 1), ("write_vectors", 3),
         ("publish_segment", 1), ("write_failures", 1), ("generation_rename", 1), ("manifest_write", 1),
         ("garbage_collect", 1), ("journal_clear", 1)]


@pytest.mark.parametrize("point,nth", KILLS)
def test_first_build_killed_then_resumed_equals_a_clean_build(tmp_path, sources, point, nth):
    images, texts = sources
    out = tmp_path / "idx"
    killed = run_driver(out, images, texts, point, nth)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    committed = IndexDir(out).is_index()
    if committed:  # killed after the manifest was replaced: the new index is complete
        assert_same(snapshot(out), clean_build(tmp_path, images, texts))
    resumed = run_driver(out, images, texts, "none", 0)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    stats = eval(resumed.stdout.strip().splitlines()[-1])
    if not committed:
        assert stats["encoded"] + stats["resumed"] == IMAGES_IN_SOURCES + 9
    assert_same(snapshot(out), clean_build(tmp_path, images, texts))
    assert not list(out.glob(".staging-*")) and not (out / ".journal").exists()


@pytest.mark.parametrize("point,nth", [("encode_image", 2), ("journal_append", 1), ("write_items", 1),
                                       ("write_vectors", 2), ("write_deletions", 1), ("publish_segment", 1),
                                       ("manifest_write", 1), ("garbage_collect", 1), ("encode_text", 1)])
def test_update_killed_keeps_the_last_commit_readable_then_resumes(tmp_path, sources, point, nth):
    images, texts = sources
    out = tmp_path / "idx"
    assert run_driver(out, images, texts, "none", 0).returncode == 0
    before = snapshot(out)
    for i in range(6):
        noise_image(500 + i).save(images / f"more{i}.png")
    (images / "n00.png").unlink()  # a deletion record, too
    texts.write_text(texts.read_text() + "\nanother yellow bicycle\nand a black shoe")
    killed = run_driver(out, images, texts, point, nth)
    assert killed.returncode == -signal.SIGKILL
    after_kill = snapshot(out)
    if after_kill["items"].keys() != before["items"].keys():  # only once the manifest was replaced
        assert_same(after_kill, clean_build(tmp_path, images, texts))
    else:
        assert_same(after_kill, before)
    assert open_index(out, encoder=FakeEncoder()).search(text="red car", k=3)
    assert run_driver(out, images, texts, "none", 0).returncode == 0
    assert_same(snapshot(out), clean_build(tmp_path, images, texts))


# ---- one writer, many readers --------------------------------------------------------------------

def test_a_second_writer_is_refused_at_once_and_a_dead_writer_frees_the_lock(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    with WriterLock(out):
        with pytest.raises(IndexLockedError, match=f"pid {os.getpid()}"):
            build_index(out, config(images, texts), encoder=FakeEncoder())
        cli = subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.app()", "index", "--out", str(out)],
                             capture_output=True, text=True, timeout=60, env=env_with_tests_path())
        assert cli.returncode == 2 and cli.stderr.startswith("error: another xmodal run")
    noise_image(900).save(images / "late.png")
    assert run_driver(out, images, texts, "encode_image", 1).returncode == -signal.SIGKILL
    assert build_index(out, config(images, texts), encoder=FakeEncoder()).stats.encoded == 1


def test_readers_never_fail_while_a_writer_commits(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    writer = subprocess.Popen([sys.executable, DRIVER, str(out), str(images), str(texts), "loop", "12"],
                              env=env_with_tests_path(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    searches = 0
    generations = set()
    while writer.poll() is None:
        idx = open_index(out, encoder=FakeEncoder())
        generations.add(idx.manifest.generation)
        assert len(idx.search(text="a red car", target="image", k=5)) == 5
        assert idx.search(text="a red car", target="text", k=1)
        searches += 1
    assert writer.returncode == 0, writer.stderr.read()[-2000:]
    assert searches > 10 and len(generations) > 1


def test_an_open_index_keeps_answering_after_its_generation_is_collected(tmp_path, sources):
    images, texts = sources
    out = tmp_path / "idx"
    build_index(out, config(images, texts), encoder=FakeEncoder())
    idx = open_index(out, encoder=FakeEncoder())
    for i in range(3):
        noise_image(700 + i).save(images / f"later{i}.png")
        build_index(out, config(images, texts), encoder=FakeEncoder())
    assert not (out / idx.manifest.generation).exists()
    assert len(idx.search(text="a red car", target="image", k=50)) == IMAGES_IN_SOURCES
    assert len(idx.search(text="a red car", target="text", k=3)) == 3


def test_ctrl_c_in_a_small_first_build_keeps_every_encoded_batch(tmp_path, sources):
    """Under 512 items nothing reached the journal before an interrupt; now the interrupt commits it."""
    images, _ = sources
    out, progress = tmp_path / "idx", tmp_path / "progress"
    # Two seconds a batch: the search below (a fresh Python process) must run while the build is still going.
    env = {**env_with_tests_path(), "FAKE_PROGRESS_FILE": str(progress), "FAKE_BATCH_SECONDS": "2"}
    command = [sys.executable, "-c", "from xmodal import cli; cli.app()", "index", str(images), "--out", str(out),
               "--model", "python:fakes:make_slow_encoder", "--batch-size", "2", "--workers", "0"]
    # As in a terminal: a test run started in the background (`cmd &`) would pass SIGINT on as ignored.
    run = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while (not progress.exists() or len(progress.read_text().split()) < 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    while_running = subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.app()", "search", str(out), "car"],
                                   capture_output=True, text=True, timeout=60, env=env)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130 and stderr.strip().splitlines()[-1].startswith("error: interrupted")
    assert f"is being built (xmodal run pid {run.pid})" in while_running.stderr
    encoded = sum(int(n) for n in progress.read_text().split())
    assert 6 <= encoded < IMAGES_IN_SOURCES and not IndexDir(out).is_index()
    after = subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.app()", "search", str(out), "car"],
                           capture_output=True, text=True, timeout=60, env=env)
    assert after.returncode == 2 and after.stderr == (
        f"error: the first build of {out} was interrupted before its first commit; "
        "run the same `xmodal index` again to resume it\n")
    report = build_index(out, IndexConfig(images=[images], workers=0), encoder=FakeEncoder())
    assert report.stats.resumed == encoded and report.stats.encoded == IMAGES_IN_SOURCES - encoded
