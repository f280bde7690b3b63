"""xmodal's numpy preprocessing against open_clip's own transform: the same values, on real photos."""
from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
from PIL import Image

from conftest import noise_image, write_tiny_open_clip
from xmodal.indexer.models import load_encoder
from xmodal.indexer.models.recipe import ImageRecipe, local_dir_recipe
from photos import sample_photo_paths

CONFIGS = [
    {},
    {"interpolation": "bilinear", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    {"resize_mode": "squash"},
]


def _photos() -> list[Image.Image]:
    photos = [Image.open(p).convert("RGB") for p in sample_photo_paths()]
    return photos + [noise_image(1, size=(63, 200)), noise_image(2, size=(301, 65)), noise_image(3, size=(64, 64))]


@pytest.mark.parametrize("preprocess_cfg", CONFIGS)
def test_the_recipe_gives_open_clips_own_pixels(tmp_path, preprocess_cfg):
    folder = write_tiny_open_clip(tmp_path / "model")
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["preprocess_cfg"] = preprocess_cfg
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    spec = f"local-dir:{folder}"
    _, _, theirs = open_clip.create_model_and_transforms(spec)
    encoder = load_encoder(spec, None, "cpu")
    recipe = local_dir_recipe(spec)
    assert recipe == encoder.recipe == ImageRecipe.from_config(encoder.identity.preprocess)  # read before loading
    for photo in _photos():
        ours = recipe(photo)
        assert ours.dtype == np.float32 and ours.shape == (3, 64, 64)
        np.testing.assert_allclose(ours, theirs(photo).numpy(), rtol=0, atol=1e-6)


def test_configs_the_recipe_cannot_reproduce_leave_it_to_open_clip():
    assert ImageRecipe.from_config({"size": [64, 64]}).side == 64
    for config in ({"size": [64, 96]}, {"size": 64, "resize_mode": "longest"}, {"size": 64, "interpolation": "lanczos"},
                   {"size": None}):
        assert ImageRecipe.from_config(config) is None
    assert local_dir_recipe("local-dir:/no/such/folder") is None


def test_workers_get_numpy_pixels_and_the_model_takes_them(tiny_encoder):
    pixels = tiny_encoder.preprocess_image(noise_image(4, size=(120, 90)))
    assert isinstance(pixels, np.ndarray)
    vectors = tiny_encoder.encode_preprocessed([pixels, pixels])
    assert vectors.shape == (2, 32) and np.allclose(vectors[0], vectors[1])


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_workers_send_uint8_crops_and_the_model_gets_the_same_pixels(tmp_path, monkeypatch, runtime):
    """Decoding workers pass the recipe's uint8 crop, a quarter of the bytes of normalised float32 pixels; the
    encoder normalises a batch of them to the very values the recipe gives one image, and takes both kinds."""
    from xmodal.indexer.build.decode import DecodedStream
    from xmodal.indexer.build.encode_files import transferred_preprocess
    from xmodal.indexer.models.recipe import Cropped

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    encoder = load_encoder(f"local-dir:{write_tiny_open_clip(tmp_path / 'model')}", None, "cpu", runtime, "fp32")
    photos = sample_photo_paths()[:5]
    decoded = list(DecodedStream([str(p) for p in photos], transferred_preprocess(encoder), workers=2))
    crops = [item.pixels for item in decoded]
    assert all(isinstance(c, Cropped) and c.array.dtype == np.uint8 and c.array.shape == (64, 64, 3) for c in crops)
    whole = [encoder.preprocess_image(Image.open(p).convert("RGB").reduce(1)) for p in photos]
    recipe = encoder.recipe
    np.testing.assert_array_equal(recipe.normalised(crops), np.stack([recipe(Image.open(p).convert("RGB"))
                                                                      for p in photos]))
    np.testing.assert_array_equal(recipe.normalised([crops[0], whole[1]])[1], whole[1])
    np.testing.assert_allclose(encoder.encode_preprocessed(crops), encoder.encode_preprocessed(whole), atol=1e-6)
    np.testing.assert_allclose(encoder.encode_preprocessed([crops[0], whole[1]]),
                               encoder.encode_preprocessed(whole[:2]), atol=1e-6)
