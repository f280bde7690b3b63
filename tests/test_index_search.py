"""Indexing and searching through the Python API, with the tiny real open_clip model."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import write_tiny_open_clip
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.errors import IndexWriteError, InvalidInputError, ModelMismatchError, NotAnIndexError
from xmodal.indexer.imaging import load_image
from xmodal.indexer.models import load_encoder
from xmodal.search import Hit, open_index


@pytest.fixture
def built(tmp_path, image_folder, texts_csv, tiny_spec):
    (image_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "index"
    report = build_index(out, IndexConfig(images=[image_folder], texts=[texts_csv], model=tiny_spec,
                                          device="cpu", batch_size=4, workers=2))
    return out, report


def test_report_counts_and_failures(built):
    _, report = built
    assert report.counts == {"image": 11, "text": 4, "product": 0}
    assert [(f.path.endswith("broken.jpg"), f.modality) for f in report.failures] == [(True, "image")]
    assert "not a recognised image format" in report.failures[0].reason or "corrupt" in report.failures[0].reason


def test_every_image_and_text_finds_itself_first(built, tiny_encoder):
    out, _ = built
    idx = open_index(out, encoder=tiny_encoder)
    items = pq.read_table(next(out.glob("segments/seg-*")) / "items.parquet").to_pylist()
    for item in items:
        if item["modality"] == "image":
            hits = idx.search(image=item["path"], target="image", k=3)
        else:
            hits = idx.search(text=item["text"], target="text", k=3)
        assert hits[0].row_id == item["row_id"], item
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_stored_vectors_equal_open_clip_encoding_of_the_files(built, tiny_spec):
    import open_clip
    import torch

    out, _ = built
    idx = open_index(out)
    model, _, preprocess = open_clip.create_model_and_transforms(tiny_spec)
    row_ids, vectors = idx.embeddings("image")
    paths = [idx.item(int(r))["path"] for r in row_ids]
    with torch.no_grad():
        want = model.eval().encode_image(torch.stack([preprocess(load_image(p)) for p in paths]))
    np.testing.assert_allclose(vectors, torch.nn.functional.normalize(want, dim=-1).numpy(), atol=1e-5)


def test_items_table_has_unique_ids_and_the_documented_columns(built):
    out, _ = built
    table = pq.read_table(next(out.glob("segments/seg-*")) / "items.parquet")
    ids = table.column("row_id").to_pylist()
    assert len(ids) == len(set(ids)) == 15
    for name in ["modality", "path", "text", "content_hash", "size", "mtime", "width", "height", "metadata"]:
        assert name in table.column_names
    images = [r for r in table.to_pylist() if r["modality"] == "image"]
    assert all(r["width"] == 72 and r["height"] == 56 and len(r["content_hash"]) == 32 for r in images)
    car = next(r for r in table.to_pylist() if r["text"] == "a red sports car")
    assert car["metadata"] == {"sku": "B2", "price": 20000}


def test_manifest_records_model_counts_and_metric(built, tiny_encoder):
    out, _ = built
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "xmodal-index" and manifest["format_version"] == 3
    assert manifest["counts"] == {"image": 11, "text": 4, "product": 0} and manifest["failures"] == 1
    assert manifest["metric"] == "cosine"
    assert manifest["model"]["spec"] == tiny_encoder.identity.spec and manifest["model"]["dim"] == 32
    assert manifest["ann"]["image"]["kind"] == "flat"


def test_hits_are_typed_ranked_and_never_padded(built, tiny_encoder):
    out, _ = built
    idx = open_index(out, encoder=tiny_encoder)
    hits = idx.search(text="a red sports car", target="image", k=100)
    assert len(hits) == 11 and all(isinstance(h, Hit) for h in hits)
    assert [h.rank for h in hits] == list(range(1, 12))
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    assert all(h.modality == "image" and h.path and h.text is None for h in hits)
    texts = idx.search(image=hits[0].path, target="text", k=2)
    assert all(h.modality == "text" and h.text and h.path is None for h in texts)


def test_search_matches_brute_force_over_stored_vectors(built, tiny_encoder):
    out, _ = built
    idx = open_index(out, encoder=tiny_encoder)
    row_ids, vectors = idx.embeddings("image")
    query = tiny_encoder.encode_texts(["a mountain at dawn"])[0]
    order = np.argsort(-(vectors @ query), kind="stable")[:5]
    hits = idx.search(text="a mountain at dawn", target="image", k=5)
    assert [h.row_id for h in hits] == row_ids[order].tolist()
    np.testing.assert_allclose([h.score for h in hits], (vectors @ query)[order], atol=1e-5)


def test_query_arguments_are_checked(built, tiny_encoder, tmp_path):
    out, _ = built
    idx = open_index(out, encoder=tiny_encoder)
    with pytest.raises(InvalidInputError, match="at least 1"):
        idx.search(text="x", k=0)
    with pytest.raises(InvalidInputError, match="unknown target"):
        idx.search(text="x", target="video")
    with pytest.raises(InvalidInputError, match="give a query: a text, image='FILE', or liked items"):
        idx.search()
    with pytest.raises(InvalidInputError, match="a text or an image, not both"):
        idx.search(text="x", image=tmp_path / "nope.jpg")
    with pytest.raises(InvalidInputError, match="does not exist"):
        idx.search(image=tmp_path / "nope.jpg")
    with pytest.raises(InvalidInputError, match=f"query image {tmp_path} is a folder; give one image file"):
        idx.search(image=tmp_path)  # it exists
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(InvalidInputError, match="cannot be read"):
        idx.search(image=bad)


def test_another_model_is_refused_for_queries_and_updates(built, tmp_path, image_folder):
    out, _ = built
    other = load_encoder(f"local-dir:{write_tiny_open_clip(tmp_path / 'other', seed=1)}", device="cpu")
    with pytest.raises(ModelMismatchError, match="built with"):
        open_index(out, encoder=other)
    before = (out / "manifest.json").read_text()
    with pytest.raises(ModelMismatchError, match="built with"):
        build_index(out, IndexConfig(images=[image_folder], device="cpu", workers=0), encoder=other)
    assert (out / "manifest.json").read_text() == before


def test_another_named_model_is_refused_before_it_loads(built, tmp_path, image_folder, monkeypatch):
    """--model ViT-B-32 on an index of another model: refused before loading it (9 s, or a missing-weights
    error that hid the real problem)."""
    out, _ = built
    from xmodal.indexer.build import pipeline

    monkeypatch.setattr(pipeline, "load_encoder", lambda *a, **k: pytest.fail("the model was loaded"))
    before = (out / "manifest.json").read_text()
    for spec in ("ViT-B-32", f"local-dir:{tmp_path / 'nowhere'}"):
        with pytest.raises(ModelMismatchError, match=f"was built with .*, not {spec}; index into a new"):
            build_index(out, IndexConfig(images=[image_folder], model=spec, workers=0))
    assert (out / "manifest.json").read_text() == before


def test_rebuild_replaces_the_index_atomically(built, image_folder, tiny_encoder):
    out, _ = built
    (image_folder / "img00.png").unlink()
    build_index(out, IndexConfig(images=[image_folder], workers=0, replace_sources=True), encoder=tiny_encoder)
    idx = open_index(out, encoder=tiny_encoder)
    assert idx.manifest.counts == {"image": 10, "text": 0, "product": 0} and idx.manifest.generation == "gen-000002"
    assert len(idx.search(text="anything", target="image", k=50)) == 10


def test_a_failed_write_leaves_the_previous_index_intact(built, image_folder, tiny_encoder, monkeypatch):
    import xmodal.indexer.build.commit as pipeline
    out, _ = built
    before = (out / "manifest.json").read_text()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "write_deletions", disk_full)
    (image_folder / "img00.png").unlink()  # a real change: the run must record a deletion
    with pytest.raises(IndexWriteError, match="No space left on device; the last committed index is unchanged"):
        build_index(out, IndexConfig(images=[image_folder], workers=0), encoder=tiny_encoder)
    assert (out / "manifest.json").read_text() == before
    assert not list(out.glob(".staging-*")) and not list(out.glob("segments/.staging-*"))
    assert len(open_index(out, encoder=tiny_encoder).search(text="dog", target="text", k=10)) == 4


def test_not_an_index_and_unusable_targets(tmp_path, image_folder, tiny_encoder):
    with pytest.raises(NotAnIndexError, match="does not exist"):
        open_index(tmp_path / "missing")
    with pytest.raises(NotAnIndexError, match="not an xmodal index"):
        open_index(image_folder)
    with pytest.raises(NotAnIndexError, match="non-empty folder"):
        build_index(image_folder / "a", IndexConfig(images=[image_folder]), encoder=tiny_encoder)
    with pytest.raises(InvalidInputError, match="nothing to index"):
        build_index(tmp_path / "x", IndexConfig(), encoder=tiny_encoder)
    assert not (tmp_path / "x").exists()


def test_approximate_index_type_is_recorded_and_searchable(tmp_path, image_folder, tiny_encoder):
    out = tmp_path / "hnsw"
    build_index(out, IndexConfig(images=[image_folder], workers=0, index_type="hnsw"), encoder=tiny_encoder)
    idx = open_index(out, encoder=tiny_encoder)
    assert idx.manifest.ann["image"].kind == "hnsw"
    first = idx.search(image=next(image_folder.glob("*.png")), k=1)[0]
    assert first.score == pytest.approx(1.0, abs=1e-4)
