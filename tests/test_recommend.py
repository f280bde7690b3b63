"""Likes, dislikes and the query algebra, each against its formula computed with numpy."""
from __future__ import annotations

import json

import numpy as np
import pytest

import xmodal.search.engine as engine
from conftest import CATALOG
from fakes import FakeEncoder, HashEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.errors import InvalidInputError, ModelMismatchError
from xmodal.search import open_index
from xmodal.search.examples import parse_cli_term
from test_cli import xmodal

COUNT = 611


@pytest.fixture(scope="module")
def texts_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("reco")
    corpus = root / "items.jsonl"
    corpus.write_text("\n".join(json.dumps({"text": f"item {i} kind:{i % 6}", "price": i * 7 % 500})
                                for i in range(COUNT)) + "\n")
    out = root / "idx"
    build_index(out, IndexConfig(texts=[corpus]), encoder=HashEncoder())
    return out


def unit(v):
    return v / np.linalg.norm(v)


def squash(x):
    return 0.5 * (x / (1 + abs(x)) + 1)


def oracle(index, score, exclude=(), k=10, where=None):
    row_ids, vectors = index.embeddings("text")
    admitted = None
    if where:
        from xmodal.search.filters import parse_filter

        table = index._filter_table("text")
        admitted = set(table.column("row_id").to_numpy()[parse_filter(where).mask(table)].tolist())
    pairs = [(-float(s), int(r)) for r, s in zip(row_ids, score(vectors))
             if int(r) not in exclude and (admitted is None or int(r) in admitted)]
    return [r for _, r in sorted(pairs)[:k]]


def vector_of(index, row_id):
    row_ids, vectors = index.embeddings("text")
    return vectors[list(row_ids).index(row_id)]


LIKED, DISLIKED = [3, 17, 250], [9, 400]


@pytest.mark.parametrize("exact_subset", [20_000, 100])  # 100: candidates come from the ANN index
def test_each_strategy_against_its_formula(texts_index, exact_subset, monkeypatch):
    monkeypatch.setattr(engine, "EXACT_SUBSET", exact_subset)
    index = open_index(texts_index, encoder=HashEncoder())
    query = HashEncoder().encode_texts(["wanted kind:2"])[0]
    pos = np.stack([query] + [vector_of(index, r) for r in LIKED])
    neg = np.stack([vector_of(index, r) for r in DISLIKED])
    excluded = set(LIKED + DISLIKED)
    formulas = {
        "average_vector": lambda v: v @ unit(2 * pos.mean(0) - neg.mean(0)),
        "best_score": lambda v: np.where((v @ pos.T).max(1) > (v @ neg.T).max(1), squash((v @ pos.T).max(1)),
                                         -squash((v @ neg.T).max(1))),
        "sum_scores": lambda v: (v @ pos.T).sum(1) - (v @ neg.T).sum(1),
    }
    for strategy, formula in formulas.items():
        hits = index.search(mode="vector", text="wanted kind:2", target="text", like=LIKED, dislike=DISLIKED, strategy=strategy,
                            k=10)
        want = oracle(index, formula, excluded)
        got = [h.row_id for h in hits]
        if exact_subset > COUNT:
            assert got == want, strategy
            row_ids, vectors = index.embeddings("text")
            expected = dict(zip(row_ids.tolist(), formula(vectors).tolist()))
            assert [h.score for h in hits] == pytest.approx([expected[r] for r in got], abs=1e-5)
        else:
            assert len(set(got) & set(want)) >= 9, strategy
        assert not excluded & set(got)


def test_likes_alone_and_dislikes_alone(texts_index):
    index = open_index(texts_index, encoder=HashEncoder())
    pos = np.stack([vector_of(index, r) for r in LIKED])
    hits = index.search(target="text", like=LIKED, k=10)
    assert [h.row_id for h in hits] == oracle(index, lambda v: v @ unit(pos.mean(0)), set(LIKED))
    neg = np.stack([vector_of(index, r) for r in DISLIKED])
    away = index.search(target="text", dislike=DISLIKED, strategy="best_score", k=10)
    assert [h.row_id for h in away] == oracle(index, lambda v: -squash((v @ neg.T).max(1)), set(DISLIKED))
    with pytest.raises(InvalidInputError, match="best_score"):
        index.search(target="text", dislike=DISLIKED)


def test_likes_by_text_image_and_vector_with_a_filter(texts_index):
    index = open_index(texts_index, encoder=HashEncoder())
    like_text = "item 100 kind:4"
    vector = unit(np.ones(24, np.float32))
    hits = index.search(target="text", like=[like_text, vector], where="price < 250", k=10)
    want = oracle(index, lambda v: v @ unit(HashEncoder().encode_texts([like_text])[0] + vector), where="price < 250")
    assert [h.row_id for h in hits] == want


def test_the_query_algebra_against_its_formula(texts_index):
    index = open_index(texts_index, encoder=HashEncoder())
    enc = HashEncoder()
    q, plus, minus = (enc.encode_texts([t])[0] for t in ("wanted kind:1", "sunny kind:3", "rainy kind:5"))
    hits = index.search(mode="vector", text="wanted kind:1", target="text", add=[(2.0, "sunny kind:3"), 42],
                        subtract=[(0.5, "rainy kind:5")], k=10)
    combined = unit(q + 2 * plus + vector_of(index, 42) - 0.5 * minus)
    assert [h.row_id for h in hits] == oracle(index, lambda v: v @ combined, {42})


def test_cli_terms_parse_weights_row_ids_files_and_texts(tmp_path):
    photo = tmp_path / "blurry.jpg"
    photo.write_bytes(b"x")
    assert parse_cli_term("2:sunset") == (2.0, "sunset")
    assert parse_cli_term(f"0.5:{photo}") == (0.5, photo)
    assert parse_cli_term("42") == (1.0, 42)
    assert parse_cli_term("a red car") == (1.0, "a red car")


@pytest.mark.parametrize("raw", ["2:", "2: ", "0.5:\t"])
def test_a_weight_with_no_term_is_refused(raw):
    """'--add 2:' was searched as the text '2:'."""
    with pytest.raises(InvalidInputError) as caught:
        parse_cli_term(raw)
    assert str(caught.value) == f"the term {raw!r} has a weight but nothing to weigh; write WEIGHT:TERM, e.g. 2:sunset"


def test_cli_refuses_a_weight_with_no_term_in_one_line(texts_index):
    for option, raw in (("--add", "2:"), ("--sub", "2: ")):
        done = xmodal("search", str(texts_index), "item", "--target", "text", option, raw)
        assert done.returncode == 2
        assert done.stderr == (f"error: the term {raw!r} has a weight but nothing to weigh; write WEIGHT:TERM, "
                               "e.g. 2:sunset\n")


def test_an_api_weighted_term_with_no_text_is_refused(texts_index):
    index = open_index(texts_index, encoder=HashEncoder())
    for weighted in ((2.0, ""), (2.0, "  ")):
        with pytest.raises(InvalidInputError, match="a text term is empty"):
            index.search(text="item", target="text", add=[weighted])


def test_bad_examples_are_refused_in_one_line(texts_index):
    index = open_index(texts_index, encoder=HashEncoder())
    with pytest.raises(InvalidInputError, match="no item with row id 99999"):
        index.search(target="text", like=[99999])
    with pytest.raises(ModelMismatchError, match="a query vector has 7 dimensions, the index 24"):
        index.search(target="text", like=[np.ones(7, np.float32)])
    with pytest.raises(InvalidInputError, match="cancel out"):
        index.search(text="wanted kind:1", target="text", subtract=["wanted kind:1"])
    with pytest.raises(InvalidInputError, match="cannot be negative"):
        index.search(text="x", target="text", add=[(-1.0, "y")])


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    out = tmp_path_factory.mktemp("shop") / "idx"
    build_index(out, IndexConfig(images=[CATALOG / "images"], texts=[CATALOG / "listings.csv"],
                                 text_column="description", image_column="image", workers=0), encoder=FakeEncoder())
    return out


def test_the_red_car_loop_on_products(shop):
    index = open_index(shop, encoder=FakeEncoder())
    first = index.search(text="I want to buy a red car", target="product", k=4)
    assert first[0].metadata["title"] == "Red sports car"
    red_car = first[0].row_id
    blue = next(h.row_id for h in index.search(text="a blue car", target="product", k=3)
                if h.metadata["title"] == "Blue family hatchback")
    for mode in ("vector", "hybrid"):
        again = index.search(text="I want to buy a red car", target="product", like=[red_car], dislike=[blue], k=5,
                             mode=mode)
        titles = [h.metadata["title"] for h in again]
        assert "Red sports car" not in titles and "Blue family hatchback" not in titles
    again = index.search(text="I want to buy a red car", target="product", like=[red_car], dislike=[blue], k=5,
                         mode="vector")
    assert again[0].metadata["colour"] == "red"  # by meaning, disliking a blue car weighs "red" over "car"
    image_hits = index.search(target="image", like=[red_car], k=2)
    assert image_hits[0].path.endswith("01-red-car.png")  # a product's photo, liked, finds the same photo


def test_cli_likes_dislikes_and_terms(shop, tmp_path):
    out = str(shop)
    first = json.loads(xmodal("search", out, "I want to buy a red car", "--target", "product", "-k", "1",
                              "--json").stdout)["hits"][0]
    again = xmodal("search", out, "I want to buy a red car", "--target", "product", "--like", str(first["row_id"]),
                   "--dislike", "a blue car", "--json", "-k", "3")
    assert again.returncode == 0, again.stderr
    assert first["row_id"] not in [h["row_id"] for h in json.loads(again.stdout)["hits"]]
    added = xmodal("search", out, "a car", "--add", "2:red", "--sub", "0.5:blue", "-k", "1", "--target", "image")
    assert added.returncode == 0 and "01-red-car.png" in added.stdout, added.stderr
    by_image = xmodal("search", out, "--like", str(CATALOG / "images" / "09-red-mug.png"), "-k", "2", "-t", "image")
    assert by_image.returncode == 0 and "09-red-mug.png" in by_image.stdout.splitlines()[0]
    for args, message in ((["--like", "99999"], "error: no item with row id 99999"),
                          (["--like", "3", "--dislike", "3"], "error: row 3 is both liked and disliked"),
                          (["--strategy", "magic", "--like", "1"], "error: unknown strategy 'magic'")):
        bad = xmodal("search", out, *args)
        assert bad.returncode == 2 and bad.stderr.startswith(message) and bad.stderr.count("\n") == 1, bad.stderr
