"""Reduced JPEG decoding: photos decoded no larger than the model needs, and what that does to vectors."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import noise_image
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.build.edit import list_items
from xmodal.indexer.errors import InvalidInputError
from xmodal.indexer.imaging import decode_picture, jpeg_scale
from xmodal.indexer.models.base import image_input_side
from photos import sample_photo_paths
from xmodal.search.engine import open_index


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def _camera_sized(path: str, times: int = 3) -> Image.Image:
    photo = Image.open(path).convert("RGB")
    return photo.resize((photo.width * times, photo.height * times), Image.LANCZOS)


@pytest.mark.parametrize("size,min_side,scale", [
    ((4000, 3000), 224, 8),   # 3000/8 = 375 still covers 224
    ((1024, 768), 224, 2),    # 768/4 = 192 would not
    ((1024, 768), 64, 8),
    ((500, 400), 224, 1),     # too small to reduce
    ((448, 448), 224, 2),     # exactly twice
    ((447, 448), 224, 1),
    ((4000, 3000), None, 1),  # exact decoding
    ((12000, 9000), None, 2),  # 108 MP: reduced whatever the mode, to bound memory
])
def test_jpeg_scale_is_the_largest_that_keeps_the_model_input(size, min_side, scale):
    assert jpeg_scale(*size, min_side) == scale


def test_reduced_decode_keeps_the_shorter_side_and_the_photos_own_size():
    data = _jpeg(noise_image(1, size=(1000, 700)))
    exact, reduced = decode_picture(data, "x.jpg"), decode_picture(data, "x.jpg", min_side=160)
    assert exact.image.size == (1000, 700)
    assert reduced.image.size == (250, 175)  # 1/4: 700/8 = 87 would be under 160
    assert (reduced.width, reduced.height) == (exact.width, exact.height) == (1000, 700)


def test_reduced_decode_of_a_rotated_photo_keeps_its_upright_size():
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned a quarter
    reduced = decode_picture(_jpeg(noise_image(2, size=(800, 600)), exif=exif.tobytes()), "x.jpg", min_side=100)
    assert reduced.image.size == (150, 200)
    assert (reduced.width, reduced.height) == (600, 800)


def test_only_jpegs_are_reduced():
    buffer = io.BytesIO()
    noise_image(3, size=(800, 600)).save(buffer, "PNG")
    assert decode_picture(buffer.getvalue(), "x.png", min_side=64).image.size == (800, 600)


def test_reduced_decode_moves_embeddings_by_little_on_real_photos(tiny_encoder):
    """Real photos at camera size: the vectors of the two decodings agree to cosine 0.999."""
    side = image_input_side(tiny_encoder)
    assert side == 64
    for path in sample_photo_paths():
        data = _jpeg(_camera_sized(path))
        exact, reduced = decode_picture(data, path), decode_picture(data, path, min_side=side)
        assert min(reduced.image.size) >= side and reduced.image.size[0] < exact.image.size[0] // 4
        pixels = [tiny_encoder.preprocess_image(p.image) for p in (exact, reduced)]
        assert float(np.abs(pixels[0] - pixels[1]).mean()) < 0.1  # normalised units: about 6/255
        vectors = tiny_encoder.encode_preprocessed(pixels)
        assert float(vectors[0] @ vectors[1]) > 0.999, path


@pytest.fixture
def large_jpegs(tmp_path) -> Path:
    folder = tmp_path / "large"
    folder.mkdir()
    for i, path in enumerate(sample_photo_paths()[:3]):
        _camera_sized(path).save(folder / f"photo{i}.jpg", quality=90)
    return folder


def _manifest(index: Path) -> dict:
    return json.loads((index / "manifest.json").read_text())


def test_index_records_its_decoding_and_the_photos_own_sizes(tmp_path, large_jpegs, tiny_encoder):
    reduced, exact = tmp_path / "reduced", tmp_path / "exact"
    build_index(reduced, IndexConfig(images=[large_jpegs], workers=0), encoder=tiny_encoder)
    build_index(exact, IndexConfig(images=[large_jpegs], workers=0, image_decode="exact"), encoder=tiny_encoder)
    assert _manifest(reduced)["settings"]["image_decode"] == "reduced"
    assert _manifest(exact)["settings"]["image_decode"] == "exact"
    sizes = {Path(r.path).name: (r.width, r.height) for r in list_items(reduced)}
    for name, size in sizes.items():
        assert size == Image.open(large_jpegs / name).size
    assert sizes == {Path(r.path).name: (r.width, r.height) for r in list_items(exact)}


def test_an_index_keeps_its_decoding(tmp_path, large_jpegs, tiny_encoder):
    out = tmp_path / "index"
    build_index(out, IndexConfig(images=[large_jpegs], workers=0, image_decode="exact"), encoder=tiny_encoder)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(InvalidInputError, match="decodes images exact.*new out folder"):
        build_index(out, IndexConfig(images=[large_jpegs], workers=0, image_decode="reduced"), encoder=tiny_encoder)
    assert (out / "manifest.json").read_bytes() == before
    noise_image(9, size=(900, 700)).save(large_jpegs / "new.jpg", quality=90)
    build_index(out, IndexConfig(images=[large_jpegs], workers=0), encoder=tiny_encoder)  # as recorded
    assert _manifest(out)["settings"]["image_decode"] == "exact"


def test_unknown_decoding_is_refused_before_anything_is_written(tmp_path, large_jpegs, tiny_encoder):
    with pytest.raises(InvalidInputError, match="unknown image decoding 'fast'; use reduced or exact"):
        build_index(tmp_path / "index", IndexConfig(images=[large_jpegs], image_decode="fast"), encoder=tiny_encoder)
    assert not (tmp_path / "index").exists()


def test_an_index_from_before_the_choice_decodes_exactly(tmp_path, large_jpegs, tiny_encoder):
    out = tmp_path / "index"
    build_index(out, IndexConfig(images=[large_jpegs], workers=0, image_decode="exact"), encoder=tiny_encoder)
    manifest = _manifest(out)
    del manifest["settings"]["image_decode"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidInputError, match="decodes images exact"):
        build_index(out, IndexConfig(images=[large_jpegs], workers=0, image_decode="reduced"), encoder=tiny_encoder)
    assert open_index(out, encoder=tiny_encoder).query_min_side() is None


def test_a_stored_photo_queried_by_its_file_finds_its_own_vector(tmp_path, large_jpegs, tiny_encoder):
    """Query photos are decoded as the index decoded its photos: the same file scores 1.0."""
    out = tmp_path / "index"
    build_index(out, IndexConfig(images=[large_jpegs], workers=0), encoder=tiny_encoder)
    index = open_index(out, encoder=tiny_encoder)
    assert index.query_min_side() == 64
    path = large_jpegs / "photo0.jpg"  # the cat: cosine 0.9999 between its two decodings
    hit = index.search(image=path, target="image", k=1)[0]
    assert Path(hit.path) == path and hit.score == pytest.approx(1.0, abs=2e-6)
    stored = index.embed_image(path)
    assert np.allclose(stored, tiny_encoder.encode_preprocessed(
        [tiny_encoder.preprocess_image(decode_picture(path.read_bytes(), str(path), min_side=64).image)])[0],
        atol=1e-6)


def test_every_model_family_says_its_input_side(tiny_transformers_dir):
    from xmodal.indexer.models import load_encoder

    transformers = load_encoder(f"transformers:{tiny_transformers_dir}", device="cpu")
    assert image_input_side(transformers) == 32  # shortest_edge 32, crop 32x32
    assert image_input_side(load_encoder("offline", device="cpu")) == 256  # short side 256, then crop 224

    class YourOwn:  # an encoder of your own that does not say: every pixel is decoded
        pass

    assert image_input_side(YourOwn()) is None
