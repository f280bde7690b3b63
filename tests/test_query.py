"""One query type: the API takes a Query (or its fields), the CLI builds one from its options, and the
service's JSON body is generated from its fields. A field added to Query reaches all three."""
from __future__ import annotations

import dataclasses

import pytest

import xmodal
from conftest import CATALOG
from fakes import HashEncoder
from xmodal.search.serve.app import SearchRequest


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    out = tmp_path_factory.mktemp("query") / "shop.idx"
    xmodal.build_index(out, xmodal.IndexConfig(texts=[CATALOG / "listings.csv"], text_column="description",
                                               image_column="image", workers=0), encoder=HashEncoder())
    return xmodal.open_index(out, encoder=HashEncoder())


def ids(hits):
    return [(h.row_id, round(h.score, 6)) for h in hits]


def test_a_query_and_its_fields_as_keywords_find_the_same(shop):
    asked = dict(text="a red car", target="product", k=4, where="price < 20000", like=["a car"], dislike=[0],
                 add=[(2.0, "red")], weights={"image": 0.5, "text": 0.5}, fusion="rrf", strategy="best_score")
    by_query = shop.search(xmodal.Query(**asked))
    assert ids(by_query) == ids(shop.search(**asked)) and len(by_query) == 4
    assert ids(shop.search(xmodal.Query(text="a red car"))) == ids(shop.search("a red car"))


def test_a_query_is_checked_in_one_place_before_the_model_loads(shop):
    for fields, words in ((dict(k=0), "k must be a whole number of at least 1"), (dict(target="video"), "unknown target"),
                          (dict(fusion="max"), "unknown fusion"), (dict(strategy="vote"), "unknown strategy"),
                          (dict(target="product", weights={"image": 0, "text": 0}), "the weights sum to zero"),
                          (dict(weights={"colour": 1}), "unknown part 'colour'")):
        with pytest.raises(xmodal.InvalidInputError, match=words):
            xmodal.Query(text="car", **fields).checked()
        with pytest.raises(xmodal.InvalidInputError, match=words):
            shop.search(xmodal.Query(text="car", **fields))


def test_a_query_and_more_keywords_is_refused(shop):
    with pytest.raises(xmodal.InvalidInputError, match="a Query, or its fields as keywords, not both"):
        shop.search(xmodal.Query(text="car"), k=3)
    with pytest.raises(xmodal.InvalidInputError, match="text is given twice"):
        shop.search("car", text="bicycle")


def test_the_services_request_is_the_query_in_json():
    query_fields = [f.name for f in dataclasses.fields(xmodal.Query)]
    json_fields = list(SearchRequest.model_fields)
    assert json_fields == [*query_fields[:2], "image_url", *query_fields[2:], "index"]  # audio: base64
    docs = xmodal.Query.field_docs()
    for name in ("text", "where", "target", "k", "fusion", "strategy", "dedup", "weights"):
        field = SearchRequest.model_fields[name]
        assert field.description == docs[name] and field.default == getattr(xmodal.Query(), name)
    schema = SearchRequest.model_json_schema()
    assert schema["additionalProperties"] is False and schema["properties"]["k"]["default"] == 10
