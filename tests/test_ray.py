"""Indexing on a real local Ray: the same index as the local engine, item for item and vector for vector."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from PIL import Image

from conftest import CATALOG, TESTS, env_with_tests_path, noise_image
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.build.edit import list_items
from xmodal.indexer.errors import InvalidInputError
from xmodal.indexer.models import encode_images
from test_cli import xmodal
from xmodal.search.engine import open_index

FAKE = "python:fakes:make_encoder"


@pytest.fixture(scope="module")
def local_ray():
    """A real Ray on this machine, two CPUs; its workers import what the tests import."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
    yield
    ray.shutdown()


@pytest.fixture
def mixed_folder(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i in range(30):
        noise_image(i, size=(400 + i, 300)).save(folder / ("sub" if i % 3 else ".") / f"p{i:02d}.jpg", quality=90)
    noise_image(99).save(folder / "flat.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 40)
    return folder


def _by_path(index) -> dict[str, tuple]:
    return {(r.path or r.text): (r.row_id, r.modality, r.content_hash, r.width, r.height) for r in list_items(index)}


def _vectors_by_path(index, encoder) -> dict[str, np.ndarray]:
    opened, by_row = open_index(index, encoder=encoder), {}
    for vector_set in opened._sets:
        stored = opened._stored(vector_set)
        by_row.update(zip(stored.row_ids.tolist(), stored.take(np.arange(len(stored.row_ids)))))
    return {(r.path or r.text): by_row[r.row_id] for r in list_items(index)}


def _assert_same_content(local, on_ray, encoder):
    """The same items, vectors and failures, whatever row ids they settled under: a resumed run gives a
    resumed item its id as it plans it, and Ray's workers journal their batches in any order."""
    strip = lambda items: {path: item[1:] for path, item in items.items()}  # noqa: E731
    assert strip(_by_path(on_ray)) == strip(_by_path(local))
    assert sorted(r[0] for r in _by_path(on_ray).values()) == list(range(len(_by_path(local))))
    va, vb = _vectors_by_path(local, encoder), _vectors_by_path(on_ray, encoder)
    assert va.keys() == vb.keys()
    for path in va:
        np.testing.assert_allclose(va[path], vb[path], atol=1e-5)
    failures = [sorted((f.path, f.reason) for f in open_index(i, encoder=encoder).failures()) for i in (local, on_ray)]
    assert failures[0] == failures[1]


def _assert_same_index(local, on_ray, encoder):
    assert _by_path(on_ray) == _by_path(local)  # same items under the same row ids
    a, b = open_index(local, encoder=encoder), open_index(on_ray, encoder=encoder)
    for vector_set in a._sets:
        ids = a._stored(vector_set).row_ids
        assert np.array_equal(ids, b._stored(vector_set).row_ids)
        np.testing.assert_allclose(a._stored(vector_set).take(np.arange(len(ids))),
                                   b._stored(vector_set).take(np.arange(len(ids))), atol=1e-5)
    assert sorted((f.path, f.reason) for f in a.failures()) == sorted((f.path, f.reason) for f in b.failures())
    return a, b


def test_a_ray_built_index_is_the_local_one(local_ray, tmp_path, mixed_folder, texts_csv, tiny_spec, tiny_encoder):
    config = dict(images=[mixed_folder], texts=[texts_csv], model=tiny_spec, batch_size=8)
    local = build_index(tmp_path / "local", IndexConfig(**config, workers=0))
    on_ray = build_index(tmp_path / "ray", IndexConfig(**config, engine="ray", ray_actors=2))
    assert on_ray.counts == local.counts == {"image": 31, "text": 4, "product": 0}
    assert [f.reason for f in on_ray.failures] == [f.reason for f in local.failures]
    assert on_ray.failures[0].reason == "not a recognised image format"  # broken.jpg, as locally
    a, b = _assert_same_index(tmp_path / "local", tmp_path / "ray", tiny_encoder)
    for query in ("a red sports car", "a bowl of soup"):
        for target in ("image", "text"):
            assert [(h.row_id, round(h.score, 5)) for h in a.search(query, target=target, k=5)] == \
                [(h.row_id, round(h.score, 5)) for h in b.search(query, target=target, k=5)]
    assert ray.is_initialized()  # a Ray the caller started is left running


def test_a_re_run_on_ray_encodes_only_what_changed(local_ray, tmp_path, mixed_folder, tiny_spec, tiny_encoder):
    for engine in ("local", "ray"):
        folder = tmp_path / f"photos-{engine}"
        shutil.copytree(mixed_folder, folder)
        config = IndexConfig(images=[folder], model=tiny_spec, engine=engine, workers=0)
        build_index(tmp_path / engine, config)
        (folder / "p00.jpg").unlink()
        noise_image(500, size=(320, 240)).save(folder / "new.jpg", quality=90)
        report = build_index(tmp_path / engine, config)
        assert (report.stats.encoded, report.stats.removed, report.stats.reused) == (1, 1, 30), engine
    local = {p.replace("photos-local", "X"): v for p, v in _by_path(tmp_path / "local").items()}
    assert {p.replace("photos-ray", "X"): v for p, v in _by_path(tmp_path / "ray").items()} == local


def test_products_and_your_own_model_on_ray(local_ray, tmp_path):
    config = dict(images=[], texts=[CATALOG / "listings.csv"], text_column="description", image_column="image",
                  model=FAKE)
    build_index(tmp_path / "local", IndexConfig(**config, workers=0))
    build_index(tmp_path / "ray", IndexConfig(**config, engine="ray"))
    from fakes import make_encoder

    _assert_same_index(tmp_path / "local", tmp_path / "ray", make_encoder(None, "cpu"))
    hits = open_index(tmp_path / "ray", encoder=make_encoder(None, "cpu")).search(
        "I want to buy a red car", target="product", k=1)
    assert "red" in hits[0].text.lower()
    # the words built on Ray answer as the local ones do: hybrid and lexical hits, scores and parts alike
    for mode in ("hybrid", "lexical"):
        found = [[(h.text, h.score, h.scores) for h in open_index(tmp_path / name, encoder=make_encoder(None, "cpu"))
                  .search("red car", target="product", k=5, mode=mode)] for name in ("local", "ray")]
        assert found[0] == found[1] and found[0] and all(s["words"] > 0 for _, _, s in found[0][:1]), mode


def test_a_worker_lost_midway_is_replaced_and_nothing_is_missing_or_doubled(local_ray, tmp_path, mixed_folder):
    """The first actor to encode a batch of photos dies (os._exit); Ray restarts it and retries the batch."""
    marker = tmp_path / "crashed"
    config = dict(images=[mixed_folder], batch_size=4)
    report = build_index(tmp_path / "ray", IndexConfig(**config, model="python:fakes:make_crashing_encoder",
                                                       pretrained=str(marker), engine="ray"))
    assert marker.exists()  # a worker did die
    build_index(tmp_path / "local", IndexConfig(**config, model=FAKE, workers=0))
    ray_items, local_items = _by_path(tmp_path / "ray"), _by_path(tmp_path / "local")
    assert ray_items == local_items and report.counts["image"] == 31
    from fakes import make_encoder

    a, b = open_index(tmp_path / "local", encoder=make_encoder(None, "cpu")), open_index(tmp_path / "ray")
    np.testing.assert_allclose(a._stored("image").take(np.arange(31)), b._stored("image").take(np.arange(31)))


def test_a_driver_killed_midway_resumes_on_ray_without_re_encoding(local_ray, tmp_path, mixed_folder, texts_csv):
    """SIGKILL as the driver reads back the third batch the workers journaled (its own local Ray, stopped with
    it), then the same run again: every vector the workers wrote is resumed, heard of by the driver or not,
    and the index holds what a clean local run builds."""
    index = tmp_path / "index"
    driver = subprocess.Popen([sys.executable, str(TESTS / "kill_driver.py"), str(index), str(mixed_folder),
                               str(texts_csv), "journal_read_chunk", "3"], env={**env_with_tests_path(),
                              "XMODAL_TEST_ENGINE": "ray"}, start_new_session=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    driver.communicate(timeout=300)
    os.killpg(driver.pid, signal.SIGKILL)  # the Ray it started goes with it
    assert driver.returncode == -signal.SIGKILL
    written = _settled_rows(index / ".journal")
    assert written >= 8  # at least the two batches the driver had read back
    report = build_index(index, IndexConfig(images=[mixed_folder], texts=[texts_csv], model=FAKE, batch_size=4,
                                            journal_every=4, engine="ray"))
    assert report.stats.resumed == written
    assert report.stats.resumed + report.stats.encoded == 31 + 4  # each photo and text once; broken.jpg fails
    build_index(tmp_path / "local", IndexConfig(images=[mixed_folder], texts=[texts_csv], model=FAKE, workers=0))
    from fakes import make_encoder

    _assert_same_content(tmp_path / "local", index, make_encoder(None, "cpu"))


def _settled_rows(journal) -> int:
    """Rows in the workers' chunks once no more arrive: a worker of the killed Ray may outlive it briefly."""
    counts = []
    while len(counts) < 3 or len(set(counts[-3:])) > 1:
        counts.append(sum(pq.ParquetFile(c).metadata.num_rows for c in journal.glob("chunk-ray-*.parquet")))
        time.sleep(0.5)
    return counts[-1]


def test_unknown_engine_and_no_actors_are_refused_before_anything_runs(tmp_path, mixed_folder, tiny_encoder):
    for config, words in ((IndexConfig(images=[mixed_folder], engine="spark"), "unknown engine 'spark'; use local or ray"),
                          (IndexConfig(images=[mixed_folder], engine="ray", ray_actors=0), "at least 1 encoding actor")):
        with pytest.raises(InvalidInputError, match=words):
            build_index(tmp_path / "index", config, encoder=tiny_encoder)
        assert not (tmp_path / "index").exists()


def test_the_cli_starts_a_local_ray_and_stops_it(tmp_path, mixed_folder):
    """--ray followed by a folder: the folder is a source, not an address."""
    out = tmp_path / "index"
    done = xmodal("index", "--ray", str(mixed_folder), "--out", str(out), "--model", FAKE, "--ray-actors", "2")
    assert done.returncode == 0, done.stderr
    assert "indexed 31 images" in done.stdout and "skipped 1" in done.stdout
    assert "Traceback" not in done.stderr
    local = build_index(tmp_path / "local", IndexConfig(images=[mixed_folder], model=FAKE, workers=0))
    assert _by_path(out) == _by_path(tmp_path / "local") and local.counts["image"] == 31


@pytest.mark.parametrize("form", [["--ray", "127.0.0.1:1"], ["--ray=127.0.0.1:1"], ["--ray-address", "127.0.0.1:1"]])
def test_the_cli_joins_a_cluster_by_the_address_after_ray(tmp_path, mixed_folder, form):
    done = xmodal("index", str(mixed_folder), "--out", str(tmp_path / "index"), "--model", FAKE, *form)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: cannot join the Ray cluster at 127.0.0.1:1: nothing answers there")
    assert len(done.stderr.splitlines()) == 1 and not (tmp_path / "index").exists()


def test_ray_photos_keep_their_own_sizes(local_ray, tmp_path, tiny_spec):
    folder = tmp_path / "big"
    folder.mkdir()
    noise_image(1, size=(1200, 900)).save(folder / "big.jpg", quality=90)
    Image.new("RGB", (50, 40), "red").save(folder / "small.png")
    build_index(tmp_path / "index", IndexConfig(images=[folder], model=tiny_spec, engine="ray"))
    assert {r.path.rsplit("/", 1)[1]: (r.width, r.height) for r in list_items(tmp_path / "index")} == \
        {"big.jpg": (1200, 900), "small.png": (50, 40)}


def test_ray_actors_lay_transparent_photos_on_the_index_background(local_ray, tmp_path, tiny_spec, tiny_encoder):
    """The actors decode with the index's background, as the local workers do (before, the hidden red showed)."""
    folder = tmp_path / "cutouts"
    folder.mkdir()
    cutout = Image.new("RGBA", (120, 90), (255, 0, 0, 0))
    cutout.paste((0, 0, 255, 255), (30, 20, 90, 70))
    cutout.save(folder / "cutout.png")
    noise_image(1, size=(200, 150)).save(folder / "photo.jpg", quality=90)
    config = dict(images=[folder], model=tiny_spec, background="black")
    build_index(tmp_path / "local", IndexConfig(**config, workers=0))
    build_index(tmp_path / "ray", IndexConfig(**config, engine="ray", ray_actors=1))
    _assert_same_index(tmp_path / "local", tmp_path / "ray", tiny_encoder)
    laid = Image.new("RGB", cutout.size, "black")
    laid.paste((0, 0, 255), (30, 20, 90, 70))
    stored = _vectors_by_path(tmp_path / "ray", tiny_encoder)[str(folder / "cutout.png")]
    np.testing.assert_allclose(stored, encode_images(tiny_encoder, [laid])[0], atol=1e-5)


def test_an_index_folder_a_node_cannot_write_is_one_line(local_ray, tmp_path):
    """The workers write vectors into the index's folder: every node is asked before anything is encoded."""
    from xmodal.indexer.build import ray_engine

    ray_engine.check_storage(tmp_path)
    with pytest.raises(InvalidInputError, match=r"cannot be written from the Ray node\(s\) at [\d.]+, .*"
                                                r"index into a folder \(out\) on storage every node mounts"):
        ray_engine.check_storage(tmp_path / "not-mounted-here")


@pytest.mark.parametrize("codes", ["IVF40,Flat", "IVF40,SQ8", "IVF40,PQ8"])
def test_ivf_lists_filled_in_shards_on_ray_are_the_ones_filled_here(local_ray, monkeypatch, codes):
    """Quantisers trained once here, the vectors added by two Ray tasks and merged in order: the same index,
    byte for byte, as adding them all in this process."""
    import faiss

    from xmodal.indexer.build import ray_engine
    from xmodal.indexer.store import ann

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    row_ids = rng.permutation(10_000)[:3000].astype(np.int64)
    trained = faiss.index_factory(32, codes, faiss.METRIC_INNER_PRODUCT)
    trained.train(vectors)
    blank = faiss.serialize_index(trained)
    here = ann.add_here(faiss.deserialize_index(blank), vectors, row_ids)
    merged = []
    monkeypatch.setattr(ray_engine, "SHARD_ROWS", 1000)
    monkeypatch.setattr(ray_engine, "_merge", lambda index, shard: merged.append(index.merge_from(
        faiss.deserialize_index(shard), 0)))
    on_ray = ray_engine.add_in_shards(faiss.deserialize_index(blank), vectors, row_ids)
    assert len(merged) == 2  # one shard per CPU of the local Ray
    assert np.array_equal(faiss.serialize_index(on_ray), faiss.serialize_index(here))


def test_a_ray_built_ivf_index_is_the_local_one_byte_for_byte(local_ray, tmp_path, mixed_folder, texts_csv,
                                                               monkeypatch):
    from xmodal.indexer.build import ray_engine

    shards = []
    merge = ray_engine._merge
    monkeypatch.setattr(ray_engine, "SHARD_ROWS", 8)
    monkeypatch.setattr(ray_engine, "_merge", lambda index, shard: shards.append(merge(index, shard)))
    config = dict(images=[mixed_folder], texts=[texts_csv], model=FAKE, batch_size=8, index_type="ivf")
    build_index(tmp_path / "local", IndexConfig(**config, workers=0))
    build_index(tmp_path / "ray", IndexConfig(**config, engine="ray"))
    assert len(shards) == 2  # the 31 photos in two shards (the 4 texts are too few to share out)
    built = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*.faiss"))
    assert [p.name for p in built] == ["image.faiss", "text.faiss"]
    for path in built:
        assert (tmp_path / "ray" / path).read_bytes() == (tmp_path / "local" / path).read_bytes()


def test_ray_uses_the_whole_cluster_unless_told(local_ray):
    """No GPU in this local Ray of 2 CPUs: one encoding actor per CPU core, or as many as asked."""
    from xmodal.indexer.build import ray_engine

    assert ray_engine._actor_options(ray_engine.RaySettings())["compute"].max_size == 2
    assert ray_engine._actor_options(ray_engine.RaySettings(actors=1))["compute"].max_size == 1
    assert ray_engine._actor_options(ray_engine.RaySettings())["num_gpus"] == 0
