"""Near-duplicates: made copies of real photos are grouped; different photos of one kind of thing are not."""
from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from conftest import CATALOG
from fakes import ColourBlindEncoder, FakeEncoder
from xmodal.indexer import IndexConfig, build_index
from photos import COLOURWAYS, skimage_data_dir, tshirt
from xmodal.search import open_index
from test_cli import xmodal

ORIGINALS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"]
SAME_KIND = ["motorcycle_left.png", "motorcycle_right.png", "brick.png", "grass.png", "gravel.png"]  # not copies


def copies(photo: Image.Image) -> dict[str, bytes]:
    w, h = photo.size
    made = {}
    for name, picture, quality in (("half", photo.resize((w // 2, h // 2)), 95), ("q60", photo, 60),
                                   ("crop", photo.crop((w // 20, h // 20, w - w // 20, h - h // 20)), 95)):
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=quality)
        made[name] = buffer.getvalue()
    return made


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    folder = tmp_path_factory.mktemp("library") / "photos"
    folder.mkdir()
    for name in ORIGINALS:
        photo = Image.open(skimage_data_dir() / name).convert("RGB")
        photo.save(folder / f"{name.split('.')[0]}.png")  # a PNG: the largest file of its group
        for kind, data in copies(photo).items():
            (folder / f"{name.split('.')[0]}-{kind}.jpg").write_bytes(data)
    for name in SAME_KIND:
        Image.open(skimage_data_dir() / name).convert("RGB").save(folder / name)
    notes = folder.parent / "notes.txt"
    notes.write_text("Warm wool pullover in grey, size M.\nWARM WOOL PULLOVER IN GREY - SIZE M!\n"
                     "Warm wool pullover in grey, size L.\nA red sports car.\n")
    out = folder.parent / "idx"
    build_index(out, IndexConfig(images=[folder], texts=[notes], workers=0), encoder=FakeEncoder())
    return out, folder


def names(index, row_ids) -> list[str]:
    return [index.item(r)["path"].rsplit("/", 1)[1] for r in row_ids]


def test_copies_group_with_their_original_kept(library):
    out, _ = library
    index = open_index(out, encoder=FakeEncoder())
    groups = index.duplicates("image")
    found = sorted(names(index, g.items) for g in groups)
    assert found == sorted([[f"{o.split('.')[0]}.png"] + sorted(f"{o.split('.')[0]}-{k}.jpg"
                                                               for k in ("crop", "half", "q60")) for o in ORIGINALS])
    assert all(index.item(g.keep)["path"].endswith(".png") for g in groups)  # the largest file
    assert all(0.5 <= g.min_score <= 1.0 for g in groups)


def test_the_model_alone_would_merge_different_photos(library):
    """The fake model sees a colour and a kind of thing: without the pixel check everything of a colour groups."""
    out, _ = library
    index = open_index(out, encoder=FakeEncoder())
    loose = index.duplicates("image", threshold=0.99, pixels=0)
    assert any({"motorcycle_left.png", "motorcycle_right.png"} <= set(names(index, g.items)) or len(g.items) > 4
               for g in loose)


def test_the_same_text_twice(library):
    out, _ = library
    index = open_index(out, encoder=FakeEncoder())
    groups = index.duplicates("text")
    assert [[index.item(r)["text"] for r in g.items] for g in groups] == [
        ["Warm wool pullover in grey, size M.", "WARM WOOL PULLOVER IN GREY - SIZE M!"]]


def test_dedup_returns_k_distinct_hits(library):
    out, _ = library
    index = open_index(out, encoder=FakeEncoder())
    plain = index.search(text="a photo", k=9)
    distinct = index.search(text="a photo", k=9, dedup=True)
    groups = {r: tuple(g.items) for g in index.duplicates("image") for r in g.items}
    assert len(distinct) == 9 and len({groups.get(h.row_id, h.row_id) for h in distinct}) == 9
    assert len({groups.get(h.row_id, h.row_id) for h in plain}) < 9
    everything = index.search(text="a photo", k=50, dedup=True)
    assert len(everything) == len(ORIGINALS) + len(SAME_KIND)  # all the distinct photos there are


def test_cli_duplicates_and_dedup(library):
    out, _ = library
    listed = xmodal("duplicates", str(out), "--json")
    assert listed.returncode == 0, listed.stderr
    groups = json.loads(listed.stdout)
    assert len(groups) == 4 and all(set(g) == {"keep", "items", "min_score"} and g["items"][0] == g["keep"]
                                    for g in groups)
    table = xmodal("duplicates", str(out))
    assert table.stdout.startswith("group 1: keep #") and "4 groups of near-duplicate images; 12 could go" in table.stderr
    found = xmodal("search", str(out), "a photo", "-k", "9", "--dedup", "--json")
    assert json.loads(found.stdout)["count"] == 9
    bad = xmodal("duplicates", str(out), "--modality", "video")
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown --modality 'video'")
    none = xmodal("duplicates", str(out), "--modality", "product")
    assert none.returncode == 2 and "holds no products" in none.stderr
    assert "use --modality image instead" in none.stderr and "--target" not in none.stderr  # its own option


def test_the_same_drawing_in_other_colours_is_another_product(tmp_path):
    """The demo shop's red, blue and green cars (one drawing, recoloured) are three listings, not copies; a
    recompressed copy of one of them still is one."""
    folder = tmp_path / "shop"
    folder.mkdir()
    for name in ("01-red-car.png", "02-blue-car.png", "03-green-car.png", "06-green-shirt.png",
                 "07-blue-shirt.png", "08-yellow-mug.png", "09-red-mug.png"):
        (folder / name).write_bytes((CATALOG / "images" / name).read_bytes())
    Image.open(folder / "01-red-car.png").convert("RGB").save(folder / "01-red-car-copy.jpg", quality=70)
    build_index(tmp_path / "idx", IndexConfig(images=[folder], workers=0), encoder=FakeEncoder())
    index = open_index(tmp_path / "idx", encoder=FakeEncoder())
    assert [sorted(names(index, g.items)) for g in index.duplicates("image")] == \
        [["01-red-car-copy.jpg", "01-red-car.png"]]


@pytest.fixture
def colourways(tmp_path):
    """The three colourways as JPEGs, and a true copy of the black one (re-encoded at another quality, resized),
    indexed by a model that sees no colour at all (every photo is one vector to it)."""
    folder = tmp_path / "shirts"
    folder.mkdir()
    for name, fill in COLOURWAYS.items():
        tshirt(fill).save(folder / f"tshirt-{name}.jpg", quality=90)
    tshirt(COLOURWAYS["black"]).resize((200, 220)).save(folder / "tshirt-black-small.jpg", quality=60)
    out = tmp_path / "shirts.idx"
    made = xmodal("index", str(folder), "--out", str(out), "--model", "python:fakes:make_colour_blind_encoder",
                  "--workers", "0")
    assert made.returncode == 0, made.stderr
    return out


def test_colourways_of_one_shape_are_not_copies(colourways):
    """A black, a grey and a near-white t-shirt of one shape correlate as one shape (0.9998 and more): the
    pixel check must see their colours, however alike the model finds them."""
    listed = xmodal("duplicates", str(colourways), "--json")
    assert listed.returncode == 0, listed.stderr
    index = open_index(colourways, encoder=ColourBlindEncoder())
    assert [sorted(names(index, g["items"])) for g in json.loads(listed.stdout)] == \
        [["tshirt-black-small.jpg", "tshirt-black.jpg"]]  # the true copy still is one
    loose = xmodal("duplicates", str(colourways), "--json", "--pixels", "0")  # the model alone merges them all
    assert [len(g["items"]) for g in json.loads(loose.stdout)] == [4]


def test_dedup_keeps_every_colourway(colourways):
    found = xmodal("search", str(colourways), "a t-shirt", "-k", "4", "--dedup", "--json")
    assert found.returncode == 0, found.stderr
    shown = sorted(h["path"].rsplit("/", 1)[1] for h in json.loads(found.stdout)["hits"])
    assert len(shown) == 3 and {"tshirt-grey.jpg", "tshirt-white.jpg"} <= set(shown)
    assert len({"tshirt-black.jpg", "tshirt-black-small.jpg"} & set(shown)) == 1
