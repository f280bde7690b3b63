"""Decoding image files into RGB PIL images, safely: bad files raise ImageDecodeError with a reason.

Transparent images (product cutouts: RGBA, LA, palette or colour-keyed PNGs, WebP, GIF, TIFF, HEIF) are laid
on a background colour, as a shop shows them: dropping their alpha would keep whatever colour the transparent
pixels happen to hold (a black drawing on transparent black is all black).
"""
from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import ExifTags, Image, ImageColor, ImageOps, UnidentifiedImageError

from .errors import ImageDecodeError, InvalidInputError, option

BASE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
# Medium-format cameras reach 150 MP and stitched panoramas more; a declared size above this is a
# decompression bomb, refused from the header before any pixel is decoded.
MAX_PIXELS = 300_000_000
# JPEGs larger than this are decoded reduced, in the decoder (DCT scaling): memory stays bounded.
REDUCE_JPEG_ABOVE = 50_000_000
DCT_SCALES = (1, 2, 4, 8)  # what a JPEG decoder can scale by while decoding
DECODE_MODES = ("reduced", "exact")
DEFAULT_BACKGROUND = "#ffffff"  # what shops show behind a cutout
_NAMED = {"#ffffff": "white", "#000000": "black"}
_PILLOW_LIMIT = threading.Lock()


@dataclass
class Picture:
    """A decoded RGB image, and the size of the photo itself (the image may have been decoded reduced)."""

    image: Image.Image
    width: int
    height: int


def heif_available() -> bool:
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return False
    return True


def supported_extensions() -> frozenset[str]:
    return BASE_EXTENSIONS | HEIF_EXTENSIONS if heif_available() else BASE_EXTENSIONS


def _register_heif() -> None:
    # Registered on first use, not at import: importing xmodal has no side effects.
    import pillow_heif

    pillow_heif.register_heif_opener()


def decode_picture(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS,
                   min_side: int | None = None, background: str | None = DEFAULT_BACKGROUND) -> Picture:
    """Decode bytes to RGB with EXIF orientation applied (first frame of animations); bad files raise.

    `min_side`: the shorter side the image must keep (a model's input side). A JPEG at least twice as large
    is decoded reduced by the decoder (1/2, 1/4 or 1/8: DCT scaling), several times faster than decoding
    every pixel and resizing them; None decodes every pixel.
    `background`: see flatten.
    """
    if not data:
        raise ImageDecodeError("empty file")
    if Path(name).suffix.lower() in HEIF_EXTENSIONS and heif_available():
        _register_heif()
    try:
        image = open_header(data, max_pixels)
        width, height = image.size
        if image.format == "JPEG":
            scale = jpeg_scale(width, height, min_side)
            if scale > 1:
                image.draft("RGB", (width // scale, height // scale))
        image.load()
        image, width, height = _upright(image, width, height)
        return Picture(flatten(image, background), width, height)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        raise ImageDecodeError(f"corrupt or truncated: {reason}") from None


def check_decode_mode(mode: str | None) -> None:
    if mode is not None and mode not in DECODE_MODES:
        raise InvalidInputError(f"unknown image decoding {mode!r}; use {' or '.join(DECODE_MODES)}")


def jpeg_scale(width: int, height: int, min_side: int | None) -> int:
    """How much a JPEG is reduced while decoding: as much as `min_side` allows, and at least enough to bring
    a huge photo under REDUCE_JPEG_ABOVE (memory stays bounded)."""
    bounded = 1
    if width * height > REDUCE_JPEG_ABOVE:
        bounded = min(8, 2 ** math.ceil(math.log2(math.sqrt(width * height / REDUCE_JPEG_ABOVE))))
    allowed = 1
    if min_side:
        allowed = max(s for s in DCT_SCALES if min(width, height) // s >= min_side or s == 1)
    return max(bounded, allowed)


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS,
                 min_side: int | None = None, background: str | None = DEFAULT_BACKGROUND) -> Image.Image:
    return decode_picture(data, name, max_pixels, min_side, background).image


def flatten(image: Image.Image, background: str | None) -> Image.Image:
    """The RGB pixels a viewer shows: transparent parts laid on `background` ("#rrggbb", see parse_background).

    None drops the alpha and keeps the colours hidden under transparent pixels, as indexes from before
    backgrounds were recorded did (their vectors came from those pixels). An opaque RGB image is returned
    as it is. The image's metadata (`info`) is kept: an encoder of your own may read it.
    """
    if background is None or not has_alpha(image):
        return image if image.mode == "RGB" else image.convert("RGB")
    # Straight alpha throughout: a palette's transparent index, LA and premultiplied RGBa all become RGBA.
    laid = Image.new("RGBA", image.size, background_rgb(background) + (255,))
    laid.alpha_composite(image if image.mode == "RGBA" else image.convert("RGBA"))
    flat = laid.convert("RGB")
    flat.info = {k: v for k, v in image.info.items() if k != "transparency"}
    return flat


def has_alpha(image: Image.Image) -> bool:
    """An alpha channel, or a transparent palette index or colour key (PNG tRNS, GIF)."""
    return image.mode in ("RGBA", "RGBa", "LA", "PA") or "transparency" in image.info


def parse_background(text: str) -> str:
    """A colour as Pillow reads it (white, black, any CSS name, #RGB, #RRGGBB, rgb(...)) -> "#rrggbb"."""
    try:
        rgb = ImageColor.getrgb(text.strip())
    except ValueError:
        raise InvalidInputError(f"unknown background colour {text!r}; use white, black, a colour name or #RRGGBB "
                                f"({option('background')})") from None
    if len(rgb) == 4 and rgb[3] != 255:
        raise InvalidInputError(f"{option('background', text)} is partly transparent; a background must be "
                                "opaque: give #RRGGBB")
    return "#{:02x}{:02x}{:02x}".format(*rgb[:3])


def background_rgb(background: str) -> tuple[int, int, int]:
    return ImageColor.getrgb(background)[:3]


def describe_background(background: str | None) -> str:
    """How `xmodal info` says it: "on white", "on #3366cc"; "ignored" for an index from before backgrounds."""
    return f"on {_NAMED.get(background, background)}" if background is not None else "ignored"


def open_header(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) and refuse a bomb in our words; Pillow's own global limit is ours to set."""
    with _PILLOW_LIMIT:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            image = Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    width, height = image.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"decompression bomb: {width}x{height} is {width * height / 1e6:.0f} megapixels, over the limit of "
            f"{max_pixels / 1e6:g}; if it is a real photo, raise the limit ({option('max_pixels')})"
        )
    return image


def _upright(image: Image.Image, width: int, height: int) -> tuple[Image.Image, int, int]:
    """Apply EXIF orientation, copying only when a photo is really rotated or flipped."""
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation in (1, None):
        return image, width, height
    turned = ImageOps.exif_transpose(image)
    if orientation in (5, 6, 7, 8):  # a quarter turn swaps the photo's sides
        width, height = height, width
    return turned, width, height


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS, min_side: int | None = None,
               background: str | None = DEFAULT_BACKGROUND) -> Image.Image:
    """Read and decode one file; a missing or unreadable file is an ImageDecodeError too."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_image(data, str(path), max_pixels, min_side, background)

