"""The batched device JPEG decoder, run on CPU tensors: its pixels against Pillow's, EXIF turns, and every
file it cannot take going through the CPU decoder with the usual reasons."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import noise_image
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.build.decode import DecodedImage, DecodeFailure
from xmodal.indexer.build.encode_files import encode_image_files
from xmodal.indexer.build.gpu_decode import DeviceJpegDecoder, gpu_decoding_available
from xmodal.indexer.models import encode_images
from photos import sample_photo_paths


@pytest.fixture
def decoder(tiny_encoder):
    return DeviceJpegDecoder(tiny_encoder.recipe, "cpu")


def _save_jpeg(image: Image.Image, path, **kwargs):
    image.save(path, "JPEG", quality=92, **kwargs)
    return str(path)


def test_device_pixels_are_pillows_within_rounding_and_the_vectors_agree(tmp_path, decoder, tiny_encoder):
    paths = [_save_jpeg(Image.open(p).convert("RGB"), tmp_path / f"{i}.jpg") for i, p in enumerate(sample_photo_paths())]
    decoded = list(decoder.decode(paths))
    assert all(isinstance(d, DecodedImage) for d in decoded)
    for item, path in zip(decoded, paths):
        pillow = tiny_encoder.recipe(Image.open(path).convert("RGB"))
        ours = item.pixels.numpy()
        assert ours.shape == pillow.shape
        assert np.abs(ours - pillow).mean() < 0.03  # normalised units: under 2/255 on average
        assert (item.width, item.height) == Image.open(path).size
        vectors = tiny_encoder.encode_preprocessed([item.pixels, pillow])
        assert float(vectors[0] @ vectors[1]) > 0.999


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_turns_match_pillows(tmp_path, decoder, tiny_encoder, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    photo = Image.open(sample_photo_paths()[0]).convert("RGB")  # the cat: not symmetric
    path = _save_jpeg(photo, tmp_path / "turned.jpg", exif=exif.tobytes())
    item = next(iter(decoder.decode([path])))
    upright = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    assert (item.width, item.height) == upright.size
    assert np.abs(item.pixels.numpy() - tiny_encoder.recipe(upright)).mean() < 0.03


def test_what_the_device_cannot_decode_goes_to_the_cpu_with_its_reason(tmp_path, decoder):
    good = _save_jpeg(noise_image(1, size=(200, 150)), tmp_path / "good.jpg")
    png = tmp_path / "image.png"
    noise_image(2, size=(200, 150)).save(png)
    data = open(good, "rb").read()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    cmyk = tmp_path / "cmyk.jpg"
    noise_image(3, size=(120, 100)).convert("CMYK").save(cmyk, "JPEG")
    bomb = io.BytesIO()
    Image.new("RGB", (4000, 3000)).save(bomb, "JPEG")
    (tmp_path / "bomb.jpg").write_bytes(bomb.getvalue())
    paths = [good, str(png), str(tmp_path / "cut.jpg"), str(cmyk), str(tmp_path / "bomb.jpg"), str(tmp_path / "gone.jpg")]
    small = DeviceJpegDecoder(decoder.recipe, "cpu", max_pixels=1_000_000)
    items = list(small.decode(paths))
    assert [type(i).__name__ for i in items] == ["DecodedImage", "DecodedImage", "DecodeFailure", "DecodedImage",
                                                 "DecodeFailure", "DecodeFailure"]
    assert isinstance(items[1].pixels, np.ndarray)  # the PNG was decoded by Pillow, on the CPU
    assert hasattr(items[0].pixels, "device")  # the JPEG on the device
    assert "corrupt or truncated" in items[2].reason
    assert "decompression bomb" in items[4].reason
    assert items[5].reason.startswith("unreadable")
    assert all(isinstance(i, DecodeFailure) == (i.path in paths[2:3] + paths[4:]) for i in items)


def test_a_transparent_png_beside_the_device_jpegs_is_laid_on_the_index_background(tmp_path, decoder, tiny_encoder):
    """JPEGs have no alpha; a cutout among them goes to the CPU decoder, which lays it on the background asked
    for (before, its alpha was dropped there: the hidden red showed)."""
    cutout = Image.new("RGBA", (120, 90), (255, 0, 0, 0))
    cutout.paste((0, 0, 0, 255), (30, 20, 90, 70))
    png = tmp_path / "cutout.png"
    cutout.save(png)
    paths = [_save_jpeg(noise_image(1, size=(200, 150)), tmp_path / "photo.jpg"), str(png)]
    for background, expected in ((None, (255, 255, 255)), ("#000000", (0, 0, 0))):
        chosen = {} if background is None else {"background": background}
        decoded = encode_image_files(tiny_encoder, paths, workers=0, decode_device="cpu", **chosen)
        laid = Image.new("RGB", cutout.size, expected)
        laid.paste((0, 0, 0), (30, 20, 90, 70))
        assert np.allclose(encode_images(tiny_encoder, [laid])[0], decoded.vectors[1], atol=1e-5), background
    assert hasattr(next(iter(decoder.decode(paths))).pixels, "device")  # the JPEG still decoded on the device


def test_an_index_built_through_the_device_decoder_matches_one_built_on_the_cpu(tmp_path, tiny_encoder):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, path in enumerate(sample_photo_paths()):
        _save_jpeg(Image.open(path).convert("RGB"), folder / f"{i}.jpg")
    paths = sorted(str(p) for p in folder.iterdir())
    on_device = encode_image_files(tiny_encoder, paths, workers=0, decode_device="cpu")
    on_cpu = encode_image_files(tiny_encoder, paths, workers=0, decode="exact")  # the device decodes every pixel
    mixed = tiny_encoder.encode_preprocessed([on_device_pixels(tiny_encoder, paths[0]), np.zeros((3, 64, 64), np.float32)])
    assert mixed.shape == (2, 32)  # a batch may hold device tensors and CPU arrays (a PNG among JPEGs)
    assert [d.path for d in on_device.images] == [d.path for d in on_cpu.images] == paths
    assert np.all(np.sum(on_device.vectors * on_cpu.vectors, axis=1) > 0.999)
    assert [d.content_hash for d in on_device.images] == [d.content_hash for d in on_cpu.images]
    report = build_index(tmp_path / "index", IndexConfig(images=[folder], workers=0), encoder=tiny_encoder)
    assert report.counts["image"] == len(paths)


def on_device_pixels(encoder, path):
    return next(iter(DeviceJpegDecoder(encoder.recipe, "cpu").decode([path]))).pixels


def test_the_device_decoder_is_chosen_only_for_a_cuda_model():
    assert not gpu_decoding_available("cpu") and not gpu_decoding_available("mps")
    assert gpu_decoding_available("cuda:0")  # torchvision is installed: nvJPEG where CUDA is
