"""A new index's first photos decode while the model loads, and give the vectors a plain build gives."""
from __future__ import annotations

import multiprocessing
from dataclasses import replace

import numpy as np
import pytest

from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.build import warm_start
from xmodal.indexer.build.encode import EncodeSettings
from xmodal.indexer.errors import ModelUnavailableError
from xmodal.indexer.models.export_cache import IdentityCache
from xmodal.indexer.models.openclip_onnx import model_key
from xmodal.indexer.models.recipe import local_dir_recipe
from xmodal.search.engine import open_index


def _vectors(index, encoder) -> dict[str, np.ndarray]:
    opened = open_index(index, encoder=encoder)
    return {hit.path: opened.embed_image(hit.path) for hit in opened.search("x", target="image", k=100)}


def test_a_first_build_decodes_while_the_model_loads(tmp_path, forty_jpegs, tiny_spec, tiny_encoder, monkeypatch):
    taken = []
    original = warm_start.WarmStart.take
    monkeypatch.setattr(warm_start.WarmStart, "take",
                        lambda self, paths, encoder: taken.append(r := original(self, paths, encoder)) or r)
    warm = build_index(tmp_path / "warm", IndexConfig(images=[forty_jpegs], model=tiny_spec, workers=2))
    assert taken and taken[0] is not None  # the workers started before the model were the ones used
    plain = build_index(tmp_path / "plain", IndexConfig(images=[forty_jpegs], workers=0), encoder=tiny_encoder)
    assert warm.counts == plain.counts == {"image": 40, "text": 0, "product": 0}
    stored_warm = open_index(tmp_path / "warm", encoder=tiny_encoder)._stored("image")
    stored_plain = open_index(tmp_path / "plain", encoder=tiny_encoder)._stored("image")
    assert np.allclose(stored_warm.take(np.arange(40)), stored_plain.take(np.arange(40)), atol=1e-6)
    assert not multiprocessing.active_children()


def test_a_stream_for_other_files_or_another_preprocessing_is_not_used(forty_jpegs, tiny_spec, tiny_encoder):
    paths = sorted(str(p) for p in forty_jpegs.iterdir())
    start = warm_start.WarmStart(tiny_spec, paths, EncodeSettings(workers=2))
    assert start.recipe == local_dir_recipe(tiny_spec) and start.recipe.side == 64
    assert start.take(paths[1:], tiny_encoder) is None  # resumed files dropped: not the files started
    assert not multiprocessing.active_children()
    start = warm_start.WarmStart(tiny_spec, paths, EncodeSettings(workers=2))

    class Other:
        recipe = None

    assert start.take(paths, Other()) is None


def test_a_model_a_run_before_loaded_decodes_before_it_loads(forty_jpegs, tiny_encoder, tmp_path, monkeypatch):
    """Any open_clip spec, not only a local-dir: one: what the model is was recorded by the run that loaded it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    paths = sorted(str(p) for p in forty_jpegs.iterdir())
    assert warm_start.WarmStart("ViT-B-32", paths, EncodeSettings(), "none").recipe is None  # known once loaded
    recorded = replace(tiny_encoder.identity, spec="ViT-B-32", pretrained="none", runtime="torch", precision="fp32")
    IdentityCache().put(model_key("ViT-B-32", "none"), {"identity": recorded.to_dict(), "exportable": True})
    start = warm_start.WarmStart("ViT-B-32", paths, EncodeSettings(workers=2), "none")
    assert start.recipe == tiny_encoder.recipe and start.recipe.side == 64
    assert len(multiprocessing.active_children()) == 2  # decoding before any model loads
    stream = start.take(paths, tiny_encoder)  # an encoder whose preprocessing is the recorded one takes it
    decoded = [item.pixels for item in stream]
    assert len(decoded) == 40 and all(np.shape(pixels.array) == (64, 64, 3) for pixels in decoded)  # uint8 crops
    assert tiny_encoder.encode_preprocessed(decoded).shape == (40, 32)
    assert not multiprocessing.active_children()
    other = warm_start.WarmStart("ViT-B-32", paths, EncodeSettings(workers=2), "openai")  # other weights: unknown
    assert other.recipe is None and not multiprocessing.active_children()


def test_a_model_that_fails_to_load_stops_the_workers(tmp_path, forty_jpegs, tiny_model_dir, monkeypatch):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "open_clip_config.json").write_text((tiny_model_dir / "open_clip_config.json").read_text())
    (broken / "open_clip_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(ModelUnavailableError, match="could not load model"):
        build_index(tmp_path / "index", IndexConfig(images=[forty_jpegs], model=f"local-dir:{broken}", workers=2))
    assert not multiprocessing.active_children()
    assert not (tmp_path / "index").exists()
