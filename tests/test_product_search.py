"""Searching products: the fused ranking against numpy oracles over the stored vectors."""
from __future__ import annotations

import csv

import numpy as np
import pytest

import xmodal.search.engine as engine
from conftest import CATALOG, noise_image
from fakes import FakeEncoder, HashEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.errors import InvalidInputError
from xmodal.search import open_index
from test_cli import xmodal

COUNT = 203  # products; 17 without a photo, 11 without a description


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """A synthetic shop: noise photos, listings naming one of 7 kinds, some parts missing."""
    root = tmp_path_factory.mktemp("shop")
    (root / "photos").mkdir()
    rows = []
    for i in range(COUNT):
        photo = "" if i % 12 == 5 else f"photos/p{i:03d}.png"
        if photo:
            noise_image(3000 + i, size=(16, 12)).save(root / photo)
        text = "" if i % 19 == 7 else f"listing {i} kind:{i % 7} in stock"
        rows.append({"sku": f"S{i:03d}", "text": text, "photo": photo, "price": 10 * (i % 50), "colour":
                     ["red", "blue", "green"][i % 3]})
    table = root / "listings.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = root / "idx"
    build_index(out, IndexConfig(texts=[table], image_column="photo", workers=0), encoder=HashEncoder())
    return out


def oracle(index, query: np.ndarray):
    """Per product: (photo cosine or nan, description cosine or nan), from the stored vectors."""
    ids = {}
    for part, vector_set in (("image", "product-image"), ("text", "product-text")):
        row_ids, vectors = index.embeddings(vector_set)
        for row_id, cosine in zip(row_ids.tolist(), vectors @ query):
            ids.setdefault(row_id, {})[part] = float(cosine)
    return ids


def ranking(scores: dict[int, float]) -> list[int]:
    return [row_id for row_id, _ in sorted(scores.items(), key=lambda item: (-item[1], item[0]))]


def test_extreme_weights_rank_exactly_by_one_part(catalogue):
    index = open_index(catalogue, encoder=HashEncoder())
    query = "listing kind:3 wanted"
    parts = oracle(index, HashEncoder().encode_texts([query])[0])
    for part, weights in (("image", {"image": 1, "text": 0}), ("text", {"image": 0, "text": 1})):
        hits = index.search(mode="vector", text=query, target="product", k=COUNT, weights=weights)
        with_part = [h.row_id for h in hits if part in h.scores]
        assert with_part == ranking({i: s[part] for i, s in parts.items() if part in s})
        for hit in hits:
            assert hit.scores == pytest.approx(parts[hit.row_id], abs=1e-6)
        without = [h for h in hits if part not in h.scores]
        other = "text" if part == "image" else "image"
        assert [h.row_id for h in without] == ranking({h.row_id: h.scores[other] for h in without})


def test_default_fusion_is_the_weighted_sum_of_standardised_part_scores(catalogue):
    """A text query's defaults: photo 0.3, description 0.7, each part standardised by its population's mean
    and spread (a spread under 0.05 counts as 0.05)."""
    index = open_index(catalogue, encoder=HashEncoder())
    query = "listing kind:5 wanted"
    parts = oracle(index, HashEncoder().encode_texts([query])[0])
    stats = {}
    for part in ("image", "text"):
        values = np.array([s[part] for s in parts.values() if part in s])
        stats[part] = (values.mean(), max(values.std(), 0.05))
    weights = {"image": 0.3, "text": 0.7}
    fused = {i: sum(weights[p] * (s[p] - stats[p][0]) / stats[p][1] if p in s else 0.0 for p in ("image", "text"))
             for i, s in parts.items()}
    hits = index.search(mode="vector", text=query, target="product", k=COUNT)
    assert [h.row_id for h in hits] == ranking(fused)
    assert [h.score for h in hits] == pytest.approx([fused[h.row_id] for h in hits], abs=1e-6)


def test_product_hits_carry_photo_text_metadata_and_part_scores(catalogue):
    index = open_index(catalogue, encoder=HashEncoder())
    hit = index.search(mode="vector", text="listing kind:1", target="product", k=1)[0]
    item = index.item(hit.row_id)
    assert hit.modality == "product" and hit.path == item["path"] and hit.text == item["text"]
    assert set(hit.metadata) == {"sku", "photo", "price", "colour"} and set(hit.scores) <= {"image", "text"}


def test_the_candidate_path_for_large_catalogues_finds_the_exact_top(catalogue, monkeypatch):
    index = open_index(catalogue, encoder=HashEncoder())
    exact = index.search(mode="vector", text="listing kind:2", target="product", k=10)
    monkeypatch.setattr(engine, "EXACT_SUBSET", 20)
    monkeypatch.setattr(engine, "PROBE_DEPTH", 40)
    probed = open_index(catalogue, encoder=HashEncoder()).search(mode="vector", text="listing kind:2", target="product", k=10)
    assert len({h.row_id for h in probed} & {h.row_id for h in exact}) >= 9


def test_weights_are_checked(catalogue):
    index = open_index(catalogue, encoder=HashEncoder())
    for weights, message in (({"image": 0, "text": 0}, "sum to zero"), ({"photo": 1}, "unknown part 'photo'"),
                             ({"image": -1, "text": 2}, "at least 0")):
        with pytest.raises(InvalidInputError, match=message):
            index.search(text="x", target="product", weights=weights)


def test_the_red_car_listing_with_its_photo_comes_first(tmp_path):
    out = tmp_path / "shop"
    build_index(out, IndexConfig(texts=[CATALOG / "listings.csv"], text_column="description", image_column="image",
                                 workers=0), encoder=FakeEncoder())
    for query in ("I want to buy a red car", "我想买一辆红色汽车"):
        hits = open_index(out, encoder=FakeEncoder()).search(mode="vector", text=query, target="product", k=3)
        assert hits[0].metadata["title"] == "Red sports car" and hits[0].path.endswith("01-red-car.png")
        assert hits[0].scores["image"] > 0.9 and hits[0].scores["text"] > 0.9


def test_cli_product_search_with_weights(tmp_path):
    out = tmp_path / "shop"
    built = xmodal("index", "--texts", str(CATALOG / "listings.csv"), "--text-column", "description",
                   "--image-column", "image", "--out", str(out), "--model", "python:fakes:make_encoder")
    assert built.returncode == 0, built.stderr
    import json

    found = xmodal("search", str(out), "a red car", "--target", "product", "-k", "2", "--weights",
                   "image=1,text=0", "--json")
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)["hits"]
    assert hits[0]["metadata"]["title"] == "Red sports car" and set(hits[0]["scores"]) == {"image", "text", "vector", "words"}
    table = xmodal("search", str(out), "a red car", "--target", "product", "-k", "1")
    assert table.stdout.split()[2] == "product" and "Red sports car" in table.stdout
    bad = xmodal("search", str(out), "a red car", "--target", "product", "--weights", "image=0,text=0")
    assert bad.returncode == 2 and bad.stderr.startswith("error: the weights sum to zero")
