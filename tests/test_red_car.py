"""The red-car case from the README and docs/shop.md, on data/catalog, with the deterministic fake encoder."""
from __future__ import annotations

import pytest

from conftest import CATALOG
from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.search import open_index

QUERIES = ["I want to buy a red car", "我想买一辆红色汽车"]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    out = tmp_path_factory.mktemp("catalog") / "index"
    encoder = FakeEncoder()
    build_index(out, IndexConfig(images=[CATALOG / "images"], texts=[CATALOG / "listings.csv"],
                                 text_column="description", workers=0), encoder=encoder)
    return open_index(out, encoder=encoder)


@pytest.mark.parametrize("query", QUERIES)
def test_red_car_photo_ranks_first_then_red_things_and_cars(catalog, query):
    hits = catalog.search(text=query, target="image", k=12)
    names = [h.path.rsplit("/", 1)[1] for h in hits]
    assert names[0] == "01-red-car.png"
    # Next come the things that share one concept: the other cars and the other red things.
    assert {n.split("-", 1)[1] for n in names[1:6]} == {
        "blue-car.png", "green-car.png", "red-shoe.png", "red-mug.png", "red-apple.png"}
    assert hits[0].score > hits[1].score


@pytest.mark.parametrize("query", QUERIES)
def test_red_car_listing_ranks_first_with_its_metadata(catalog, query):
    top = catalog.search(text=query, target="text", k=3)[0]
    assert top.text.startswith("A red two-door sports car")
    assert top.metadata == {"id": 1, "title": "Red sports car", "colour": "red", "price": 18500,
                            "image": "images/01-red-car.png"}


def test_photo_finds_its_listing_and_similar_photos(catalog):
    photo = CATALOG / "images" / "02-blue-car.png"
    assert catalog.search(image=photo, target="text", k=1)[0].metadata["id"] == 2
    similar = catalog.search(image=photo, target="image", k=3)
    assert similar[0].path.endswith("02-blue-car.png")
    assert {h.path.rsplit("-", 1)[1] for h in similar[1:]} == {"car.png"}
