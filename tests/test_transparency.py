"""Transparent photos (product cutouts): laid on the index's background before they are encoded, compared for
duplicates and shown as thumbnails. Real PNG, WebP, GIF, TIFF and AVIF files, made here with Pillow."""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import noise_image
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.build.edit import list_items
from xmodal.indexer.errors import InvalidInputError
from xmodal.indexer import imaging
from xmodal.indexer.imaging import decode_picture
from xmodal.indexer.models import load_encoder
from photos import skimage_data_dir
from xmodal.search import open_index
from server import Server
from test_cli import xmodal

SIZE = (320, 240)
DRAWN_AT = 4  # drawn 4x larger, then reduced: the edges are partly transparent, as a real cutout's are
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def _car(draw: ImageDraw.ImageDraw, ink) -> None:
    """A car's outline: body, roof line, door, two wheels."""
    def at(points):
        return [(x * DRAWN_AT, y * DRAWN_AT) for x, y in points]

    body = [(30, 150), (70, 150), (100, 100), (210, 100), (245, 150), (290, 150), (290, 185), (30, 185), (30, 150)]
    draw.line(at(body), fill=ink, width=6 * DRAWN_AT, joint="curve")
    draw.line(at([(155, 100), (155, 185)]), fill=ink, width=5 * DRAWN_AT)
    for left in (60, 210):
        draw.ellipse(at([(left, 165), (left + 50, 215)]), outline=ink, width=6 * DRAWN_AT)


def car_drawing(mode: str, background, ink) -> Image.Image:
    big = Image.new(mode, (SIZE[0] * DRAWN_AT, SIZE[1] * DRAWN_AT), background)
    _car(ImageDraw.Draw(big), ink)
    return big.resize(SIZE, Image.LANCZOS)


def car_cutout() -> Image.Image:
    """Black lines on a fully transparent background (whose hidden colour is black, as most editors leave it)."""
    return car_drawing("RGBA", (0, 0, 0, 0), (0, 0, 0, 255))


def car_on_white() -> Image.Image:
    return car_drawing("RGB", WHITE, BLACK)


def coffee() -> Image.Image:
    return Image.open(skimage_data_dir() / "coffee.png").convert("RGB")


def half_transparent(photo: Image.Image) -> Image.Image:
    """The photo with its right half fully transparent: the hidden half still holds the photo's colours."""
    alpha = Image.new("L", photo.size, 255)
    alpha.paste(0, (photo.width // 2, 0, photo.width, photo.height))
    cut = photo.convert("RGBA")
    cut.putalpha(alpha)
    return cut


def _bytes(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


# ---- each kind of transparency, decoded ----------------------------------------------------------------------

def _gif_with_transparent_index() -> bytes:
    """A palette image: index 0 red and transparent, index 1 black (the lines)."""
    picture = Image.new("P", SIZE, 0)
    picture.putpalette([255, 0, 0, 0, 0, 0] + [0] * 762)
    picture.paste(1, mask=_lines_mask())
    return _bytes(picture, "GIF", transparency=0)


def _lines_mask() -> Image.Image:
    return car_cutout().getchannel("A").point(lambda a: 255 if a >= 128 else 0)


def _la_png() -> bytes:
    """Grey and alpha: grey 128 under the transparent background, black lines."""
    alpha = car_cutout().getchannel("A")
    grey = Image.new("L", SIZE, 128)
    grey.paste(0, mask=alpha)
    return _bytes(Image.merge("LA", (grey, alpha)), "PNG")


def _rgba_with_hidden(colour) -> Image.Image:
    cutout = car_cutout()
    hidden = Image.new("RGBA", SIZE, colour + (0,))
    hidden.paste(cutout, mask=cutout.getchannel("A"))
    return hidden


def _colour_keyed_png() -> bytes:
    """RGB with a tRNS colour key: every green pixel is transparent."""
    keyed = Image.new("RGB", SIZE, (0, 255, 0))
    keyed.paste(BLACK, mask=_lines_mask())
    return _bytes(keyed, "PNG", transparency=(0, 255, 0))


def _exif_turned_png() -> bytes:
    """A cutout whose EXIF orientation says to turn it a quarter (6): decoded upright, then laid on white."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _bytes(_rgba_with_hidden((0, 0, 255)), "PNG", exif=exif)


TRANSPARENT_FILES = {
    "png": lambda: _bytes(car_cutout(), "PNG"),
    "png-hidden-red": lambda: _bytes(_rgba_with_hidden((255, 0, 0)), "PNG"),
    "webp-lossless": lambda: _bytes(_rgba_with_hidden((255, 0, 0)), "WEBP", lossless=True, exact=True),
    "gif-transparent-index": _gif_with_transparent_index,
    "png-palette": lambda: _bytes(Image.open(io.BytesIO(_gif_with_transparent_index())), "PNG"),
    "png-grey-alpha": _la_png,
    "png-colour-key": _colour_keyed_png,
    "tiff": lambda: _bytes(_rgba_with_hidden((0, 0, 255)), "TIFF"),
    "avif": lambda: _bytes(_rgba_with_hidden((255, 0, 0)), "AVIF", quality=90),
    "png-exif-turned": _exif_turned_png,
}


@pytest.mark.parametrize("kind", TRANSPARENT_FILES)
def test_transparent_pixels_are_laid_on_white(kind):
    """What a shop shows: the old decoding kept the colour hidden under them (black, red, grey, green, blue)."""
    data = TRANSPARENT_FILES[kind]()
    picture = decode_picture(data, f"cutout.{kind.split('-')[0]}")
    image = np.asarray(picture.image, dtype=np.int16)
    assert picture.image.mode == "RGB"
    upright = (SIZE[1], SIZE[0]) if kind == "png-exif-turned" else SIZE  # turned first, then laid on white
    assert picture.image.size == (picture.width, picture.height) == upright
    for corner in (image[0, 0], image[0, -1], image[-1, 0], image[-1, -1]):
        assert np.abs(corner - 255).max() <= 4, (kind, corner)  # AVIF is lossy, its alpha too
    assert image.min() <= 8, kind  # the black lines are still there


@pytest.mark.parametrize("kind", ["png", "gif-transparent-index", "png-grey-alpha", "tiff"])
def test_another_background_is_used_where_asked(kind):
    image = np.asarray(decode_picture(TRANSPARENT_FILES[kind](), "cutout", background="#3366cc").image)
    assert tuple(image[0, 0]) == (0x33, 0x66, 0xCC), kind


def test_flatten_composites_straight_alpha_and_leaves_opaque_images_alone():
    """Half-transparent red on white is pink; an RGB photo passes through as it is (no copy)."""
    half_red = Image.new("RGBA", (2, 2), (255, 0, 0, 128))
    assert imaging.flatten(half_red, "#ffffff").getpixel((0, 0)) == (255, 127, 127)
    assert imaging.flatten(half_red, None).getpixel((0, 0)) == (255, 0, 0)  # an index from before: alpha dropped
    photo = noise_image(1)
    assert imaging.flatten(photo, "#ffffff") is photo


@pytest.mark.parametrize("text, expected", [("white", "#ffffff"), ("BLACK", "#000000"), ("#fff", "#ffffff"),
                                            ("#3366CC", "#3366cc"), ("lightgrey", "#d3d3d3"),
                                            ("rgb(10, 20, 30)", "#0a141e")])
def test_background_colours_are_read_as_pillow_reads_them(text, expected):
    assert imaging.parse_background(text) == expected


@pytest.mark.parametrize("text, message", [("whiet", "unknown background colour 'whiet'; use white, black"),
                                           ("#12345", "unknown background colour '#12345'"),
                                           ("#ffffff80", "must be opaque")])
def test_a_bad_background_says_what_to_use(text, message):
    with pytest.raises(InvalidInputError, match=message):
        imaging.parse_background(text)


# ---- with the real offline model ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def offline():
    return load_encoder("offline", device="cpu")


@pytest.fixture(scope="module")
def cars(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cars")
    car_cutout().save(folder / "cutout.png")
    car_cutout().save(folder / "cutout.webp", lossless=True)
    car_on_white().save(folder / "on-white.png")
    Image.new("RGB", SIZE, BLACK).save(folder / "black.png")
    return folder


def _vectors(index) -> dict[str, np.ndarray]:
    row_ids, vectors = index.embeddings("image")
    return {Path(index.item(int(r))["path"]).name: v for r, v in zip(row_ids, vectors)}


def test_a_cutout_encodes_like_the_same_drawing_on_white(tmp_path, cars, offline):
    """Measured with the offline model: cutout.png and cutout.webp against on-white.png 1.0000, against all black
    0.8851 (this model puts unrelated photos at 0.36-0.65, all black against the sample photos at 0.57-0.65).
    Before, a cutout was encoded as all black: 1.0000 to black.png, 0.8851 to on-white.png."""
    build_index(tmp_path / "index", IndexConfig(images=[cars], workers=2), encoder=offline)
    index = open_index(tmp_path / "index", encoder=offline)
    vectors = _vectors(index)
    for cutout in ("cutout.png", "cutout.webp"):
        assert float(vectors[cutout] @ vectors["on-white.png"]) >= 0.99, cutout
        assert float(vectors[cutout] @ vectors["black.png"]) <= 0.95, cutout
    hit = index.search(image=cars / "cutout.png", target="image", k=1)[0]
    assert hit.score == pytest.approx(1.0, abs=1e-5)
    assert float(index.embed_image(Image.open(cars / "cutout.webp")) @ vectors["cutout.webp"]) == \
        pytest.approx(1.0, abs=1e-5)  # a picture handed to the API is laid on the index's background too


@pytest.fixture(scope="module")
def coffees(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("coffees")
    coffee().save(folder / "coffee.png")
    half_transparent(coffee()).save(folder / "coffee-half.png")
    small = coffee().resize((480, 320), Image.LANCZOS)
    small.save(folder / "coffee-small.png")
    return folder


def test_a_half_transparent_photo_is_not_a_duplicate_of_its_opaque_original(tmp_path, coffees):
    """Before, the hidden half was compared (and encoded): coffee-half.png was offered as a copy of coffee.png.
    A real copy (resized) is still grouped, and so are a cutout and the same drawing on white."""
    photos = tmp_path / "photos"
    shutil.copytree(coffees, photos)
    car_cutout().save(photos / "cutout.png")
    car_on_white().save(photos / "on-white.png")
    out = tmp_path / "photos.idx"
    built = xmodal("index", str(photos), "--out", str(out), "--model", "offline")
    assert built.returncode == 0, built.stderr
    paths = {row["row_id"]: Path(row["path"]).name for row in json.loads(xmodal("list", str(out), "--json").stdout)}
    found = xmodal("duplicates", str(out), "--json")
    assert found.returncode == 0, found.stderr
    groups = sorted(sorted(paths[i] for i in group["items"]) for group in json.loads(found.stdout))
    assert groups == [["coffee-small.png", "coffee.png"], ["cutout.png", "on-white.png"]]


# ---- the background an index records -----------------------------------------------------------------------

def test_the_background_is_recorded_and_another_is_refused(tmp_path, coffees):
    out = tmp_path / "black.idx"
    built = xmodal("index", str(coffees), "--out", str(out), "--model", "offline", "--background", "black")
    assert built.returncode == 0, built.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["background"] == "#000000"
    assert "transparency on black" in xmodal("info", str(out)).stdout
    info = json.loads(xmodal("info", str(out), "--json").stdout)
    assert info["preprocessing"] == {"image_decode": "reduced", "background": "#000000"}

    before = (out / "manifest.json").read_bytes()
    refused = xmodal("index", str(coffees), "--out", str(out), "--background", "white")
    assert refused.returncode == 2 and refused.stdout == ""
    assert refused.stderr.strip().splitlines() == [
        "error: this index lays transparent pixels on black (recorded when it was built); --background white applies "
        "to a new index: index into a new --out folder, or leave --background out"]
    assert (out / "manifest.json").read_bytes() == before

    same = xmodal("index", str(coffees), "--out", str(out), "--background", "#000")  # the same colour, spelt otherwise
    assert same.returncode == 0 and "(nothing changed)" in same.stdout, same.stderr
    # A query photo is laid on the index's background: the stored half-transparent photo finds itself at 1.0.
    hits = json.loads(xmodal("search", str(out), "--image", str(coffees / "coffee-half.png"), "-k", "1",
                             "--json").stdout)["hits"]
    assert Path(hits[0]["path"]).name == "coffee-half.png" and hits[0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_a_bad_background_is_one_line_and_nothing_is_written(tmp_path, coffees):
    out = tmp_path / "index"
    refused = xmodal("index", str(coffees), "--out", str(out), "--model", "offline", "--background", "whiet")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: unknown background colour 'whiet'; use white, black, a colour name or #RRGGBB (--background)"]
    assert not out.exists()


def test_an_index_from_before_backgrounds_keeps_dropping_alpha(tmp_path, cars, offline):
    """Its vectors were encoded from the colours under transparent pixels: its later photos and its queries
    are decoded the same way, so that they stay comparable; a background is refused until it is rebuilt."""
    photos, out = tmp_path / "cars", tmp_path / "index"
    shutil.copytree(cars, photos)
    build_index(out, IndexConfig(images=[photos], workers=0), encoder=offline)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["settings"]["background"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInputError, match=r"this index ignores transparency \(built before backgrounds were "
                                                r"recorded\); background='white' applies to a new index"):
        build_index(out, IndexConfig(images=[photos], workers=0, background="white"), encoder=offline)
    car_cutout().save(photos / "cutout-again.png", compress_level=1)  # other bytes: not a copy, whose vector is kept
    build_index(out, IndexConfig(images=[photos], workers=0), encoder=offline)
    index = open_index(out, encoder=offline)
    vectors = _vectors(index)
    assert float(vectors["cutout-again.png"] @ vectors["black.png"]) == pytest.approx(1.0, abs=1e-5)
    assert float(index.embed_image(photos / "cutout.png") @ vectors["black.png"]) == pytest.approx(1.0, abs=1e-5)
    assert json.loads((out / "manifest.json").read_text())["settings"].get("background") is None
    info = json.loads(xmodal("info", str(out), "--json").stdout)
    assert info["preprocessing"] == {"image_decode": "reduced", "background": None}
    assert "transparency ignored" in xmodal("info", str(out)).stdout


# ---- served -------------------------------------------------------------------------------------------------

def test_the_served_thumbnail_of_a_cutout_has_a_white_background(tmp_path, cars, offline):
    out = tmp_path / "cars.idx"
    build_index(out, IndexConfig(images=[cars], workers=0), encoder=offline)
    cutout = next(item.row_id for item in list_items(out) if item.path.endswith("cutout.png"))
    with Server(str(out)) as server:
        status, _, jpeg = server.call("GET", f"/thumbnails/{cutout}")
    assert status == 200
    thumbnail = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=np.int16)
    for corner in (thumbnail[0, 0], thumbnail[0, -1], thumbnail[-1, 0], thumbnail[-1, -1]):
        assert corner.min() >= 250, corner  # was black: the colour hidden under the transparent pixels
    assert thumbnail.min() <= 16  # the lines


def test_an_index_on_black_shows_and_is_queried_on_black(tmp_path, coffees, offline):
    """Its thumbnails show what its model saw, and an uploaded photo is laid on black as the stored one was:
    the stored half-transparent photo, uploaded, finds itself at 1.0."""
    out = tmp_path / "black.idx"
    build_index(out, IndexConfig(images=[coffees], workers=0, background="black"), encoder=offline)
    half = next(item.row_id for item in list_items(out) if item.path.endswith("coffee-half.png"))
    with Server(str(out)) as server:
        _, _, jpeg = server.call("GET", f"/thumbnails/{half}")
        status, found = server.json("POST", "/search", {"image": _b64(coffees / "coffee-half.png"), "k": 1})
    right = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))[:, -40:]
    assert right.max() <= 16, right.max()
    assert status == 200, found
    assert found["hits"][0]["row_id"] == half and found["hits"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def _b64(path: Path) -> str:
    import base64

    return base64.b64encode(path.read_bytes()).decode()
