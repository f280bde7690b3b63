"""Decoding image files into RGB PIL images, safely: bad files raise ImageDecodeError with a reason."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageDecodeError

BASE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
HEIF_EXTENSIONS = frozenset({".heic", ".heif"})
# Pillow's own bomb threshold (about 89 M pixels); checked from the header, before decoding.
MAX_PIXELS = 89_478_485


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


def decode_image(data: bytes, name: str = "image", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode bytes to an RGB image with EXIF orientation applied (first frame of animations)."""
    if not data:
        raise ImageDecodeError("empty file")
    if Path(name).suffix.lower() in HEIF_EXTENSIONS and heif_available():
        _register_heif()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(
                    f"decompression bomb: {width}x{height} is over {max_pixels:,} pixels"
                )
            image.load()
            return ImageOps.exif_transpose(image).convert("RGB")
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        raise ImageDecodeError(f"corrupt or truncated: {reason}") from None


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Read and decode one file; a missing or unreadable file is an ImageDecodeError too."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_image(data, str(path), max_pixels)
