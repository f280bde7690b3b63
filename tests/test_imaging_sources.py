"""Decoding real good and bad files; discovering images; reading text corpora."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import env_with_tests_path, noise_image
from xmodal.indexer.errors import ImageDecodeError, InvalidInputError, NoImagesError, TextColumnError
from xmodal.indexer.imaging import decode_image, decode_picture, heif_available, load_image
from xmodal.indexer.build.sources import find_images, read_texts


def _jpeg_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, **kwargs)
    return buffer.getvalue()


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = decode_image(_jpeg_bytes(noise_image(1, size=(80, 40)), exif=exif.tobytes()), "x.jpg")
    assert decoded.size == (40, 80)


def test_gif_gives_first_frame_as_rgb():
    frames = [Image.new("P", (20, 20), i) for i in (5, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(buffer.getvalue(), "x.gif")
    assert decoded.mode == "RGB" and decoded.size == (20, 20)
    first = frames[0].convert("RGB").getpixel((0, 0))
    assert decoded.getpixel((0, 0)) == first


@pytest.mark.parametrize("name,data,reason", [
    ("empty.jpg", b"", "empty file"),
    ("garbage.png", b"this is not an image at all", "not a recognised image format"),
])
def test_bad_bytes_are_decode_errors(name, data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(data, name)


def test_truncated_jpeg_is_a_decode_error():
    data = _jpeg_bytes(noise_image(2, size=(200, 200)))
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[: len(data) // 2], "cut.jpg")


def test_decompression_bomb_is_refused_before_decoding_in_our_words(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (20_000, 20_000)).save(path)  # 400 M pixels, a few kB on disk
    assert path.stat().st_size < 200_000
    with pytest.raises(ImageDecodeError) as caught:
        load_image(path)
    assert str(caught.value) == ("decompression bomb: 20000x20000 is 400 megapixels, over the limit of 300; "
                                 "if it is a real photo, raise the limit (max_pixels)")
    assert caught.value.for_cli().endswith("raise the limit (--max-pixels)")
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's own global is left as it was


def test_a_photo_over_pillows_limit_decodes_reduced_with_its_own_size(tmp_path):
    """A 120-megapixel JPEG (Pillow's default refuses it) decodes, reduced in the decoder, in bounded memory."""
    path = tmp_path / "medium-format.jpg"
    gradient = np.linspace(0, 255, 12_000, dtype=np.uint8)
    Image.fromarray(np.broadcast_to(gradient, (10_000, 12_000))).convert("RGB").save(path, quality=60)
    # VmHWM, not ru_maxrss: the latter survives exec and would count this test process's own peak.
    code = ("from xmodal.indexer.imaging import decode_picture\n"
            f"p = decode_picture(open({str(path)!r}, 'rb').read(), 'x.jpg')\n"
            "hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
            "print(p.width, p.height, p.image.size[0], p.image.size[1], hwm // 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=env_with_tests_path())
    width, height, decoded_w, decoded_h, peak_mb = map(int, out.stdout.split())
    assert (width, height) == (12_000, 10_000) and decoded_w * decoded_h < 50_000_000
    assert peak_mb < 250, f"peak RSS {peak_mb} MB; a full decode alone is 360 MB"


def test_exif_rotated_photo_reports_its_upright_size():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    picture = decode_picture(_jpeg_bytes(noise_image(1, size=(80, 40)), exif=exif.tobytes()), "x.jpg")
    assert picture.image.size == (40, 80) and (picture.width, picture.height) == (40, 80)


def test_the_pixel_limit_is_an_index_option(tmp_path, image_folder):
    from fakes import FakeEncoder
    from xmodal.indexer import IndexConfig, build_index

    report = build_index(tmp_path / "idx", IndexConfig(images=[image_folder], workers=0, max_pixels=4000),
                         encoder=FakeEncoder())
    assert report.counts["image"] == 0 and len(report.failures) == 11
    assert all(f.reason.startswith("decompression bomb: 72x56") for f in report.failures)


@pytest.mark.skipif(not heif_available(), reason="pillow-heif is not installed")
def test_heic_decodes_when_pillow_heif_is_installed(tmp_path):
    import pillow_heif

    pillow_heif.register_heif_opener()
    path = tmp_path / "phone.heic"
    Image.new("RGB", (64, 48), (0, 200, 0)).save(path, "HEIF")
    assert load_image(path).size == (64, 48)


def test_find_images_recurses_skips_hidden_and_survives_symlink_loops(tmp_path):
    root = tmp_path / "pics"
    (root / "deep" / "deeper").mkdir(parents=True)
    (root / ".hidden_dir").mkdir()
    for rel in ["a.JPG", "deep/b.png", "deep/deeper/c.webp", ".hidden.png", ".hidden_dir/d.png", "notes.txt"]:
        (root / rel).write_bytes(b"x")
    os.symlink(root, root / "deep" / "loop")  # a cycle back to the top
    found = find_images([root])
    assert [os.path.relpath(p, root) for p in found] == ["a.JPG", "deep/b.png", "deep/deeper/c.webp"]


def test_find_images_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="does not exist"):
        find_images([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no pictures here")
    with pytest.raises(NoImagesError, match="no images found"):
        find_images([tmp_path / "empty"])


def test_txt_corpus_is_one_text_per_nonblank_line(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("first line\n\n  second line  \n我想买一辆红色汽车\n", encoding="utf-8")
    records = read_texts(path)
    assert [r.text for r in records] == ["first line", "second line", "我想买一辆红色汽车"]
    assert records[1].source == str(path) and records[1].line == 3


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_tables_keep_every_other_column_as_metadata(tmp_path, suffix):
    rows = [{"sku": "A1", "title": "Red car", "price": 18500.0}, {"sku": "B2", "title": "Blue shoe", "price": 45.5}]
    path = tmp_path / f"catalog{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif suffix == ".jsonl":
        import json
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        sep = "\t" if suffix == ".tsv" else ","
        path.write_text("\n".join([sep.join(rows[0])] + [sep.join(str(v) for v in r.values()) for r in rows]) + "\n")
    records = read_texts(path, text_column="title")
    assert [r.text for r in records] == ["Red car", "Blue shoe"]
    assert records[0].metadata == {"sku": "A1", "price": 18500.0}


def test_missing_text_column_names_the_columns_there(texts_csv):
    with pytest.raises(TextColumnError, match="no column 'caption'.*sku, text, price"):
        read_texts(texts_csv, text_column="caption")


def test_unsupported_or_missing_corpus(tmp_path):
    (tmp_path / "x.docx").write_text("x")
    with pytest.raises(InvalidInputError, match="unsupported text corpus"):
        read_texts(tmp_path / "x.docx")
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_texts(tmp_path / "nope.csv")


def test_a_broken_link_in_a_photo_folder_is_named_and_recorded(tmp_path):
    """A dangling symlink in a photo folder was passed over without a word."""
    photos = tmp_path / "photos"
    photos.mkdir()
    noise_image(1).save(photos / "good.png")
    os.symlink(tmp_path / "moved-away.jpg", photos / "summer.jpg")
    os.symlink(tmp_path / "old-drive", photos / "archive")  # was a folder of photos
    out = tmp_path / "idx"
    command = [sys.executable, "-c", "from xmodal import cli; cli.run()", "index", str(photos), "--out", str(out),
               "--model", "python:fakes:make_encoder", "--workers", "0"]
    for _ in range(2):  # the second run commits nothing, and still says so (from the failures recorded)
        run = subprocess.run(command, capture_output=True, text=True, env=env_with_tests_path(), timeout=300)
        assert run.returncode == 0, run.stderr
        assert f"skipped {photos / 'summer.jpg'}: a broken link (to {tmp_path / 'moved-away.jpg'}): " \
               "No such file or directory" in run.stderr
        assert f"skipped {photos / 'archive'}: a broken link" in run.stderr
        assert "indexed 1 image, 0 texts; skipped 2 (2 images)" in run.stdout
    listed = subprocess.run(command[:3] + ["info", str(out), "--failures"], capture_output=True, text=True,
                            env=env_with_tests_path(), timeout=300)
    assert str(photos / "summer.jpg") in listed.stdout and str(photos / "archive") in listed.stdout
    (photos / "summer.jpg").unlink()
    again = subprocess.run(command, capture_output=True, text=True, env=env_with_tests_path(), timeout=300)
    assert "summer.jpg" not in again.stderr and "skipped 1 (1 image)" in again.stdout


def test_a_subfolder_that_cannot_be_listed_is_named_and_recorded(tmp_path, monkeypatch):
    """os.walk passed over a folder it could not list (no permission, gone mid-walk) without a word. Tests run as
    root, for whom no permission is missing: the folder's listing fails as it would for another user."""
    from fakes import FakeEncoder
    from xmodal.indexer import IndexConfig, build_index
    from xmodal.indexer.store import IndexDir, read_failures

    photos = tmp_path / "photos"
    (photos / "locked").mkdir(parents=True)
    noise_image(1).save(photos / "good.png")
    noise_image(2).save(photos / "locked" / "hidden.png")
    listing = os.scandir

    def scandir(path="."):
        if isinstance(path, (str, os.PathLike)) and os.fspath(path) == str(photos / "locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return listing(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = build_index(tmp_path / "idx", IndexConfig(images=[photos], workers=0), encoder=FakeEncoder())
    assert report.counts["image"] == 1
    assert [(f.path, f.reason) for f in report.failures] == \
        [(str(photos / "locked"), "unreadable folder: Permission denied")]
    index = IndexDir(tmp_path / "idx")
    stored = read_failures(index.generation_path(index.read_manifest().generation) / "failures.parquet")
    assert [(f.path, f.reason) for f in stored] == [(str(photos / "locked"), "unreadable folder: Permission denied")]
