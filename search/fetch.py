"""Query images by URL, as rclip and clip-retrieval take them: fetched by the indexer's fetching core
(indexer/fetch.py: http(s) only, bounded in time, size and redirects), then decoded as files are (the same
decoder, the same pixel limit).

Only the caller decides that a URL is to be fetched: `--image URL` and URL terms on the command line,
`image=` and `ImageURL` terms in the API, and in the service `image_url` only when it was started to
fetch (search/serve/app.py): a server that fetches whatever a client names can be made to read
addresses only it can reach (server-side request forgery). A query names its URL itself, so a private or
loopback address is fetched (an image on the intranet is a fair query), unlike a table's photos, which are
fetched unattended.
"""
from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from PIL import Image

from ..indexer.errors import ImageDecodeError, ImageURLError
from ..indexer.fetch import MAX_BYTES, MAX_REDIRECTS, TIMEOUT, FetchLimits, fetch, is_url
from ..indexer.imaging import DEFAULT_BACKGROUND, MAX_PIXELS, decode_image

__all__ = ["MAX_BYTES", "ImageURL", "fetch_bytes", "fetch_image", "is_url"]


@dataclass(frozen=True)
class ImageURL:
    """A query term: the image at this URL (as a Path is the image in a file; a plain string is a text)."""

    url: str

    def __str__(self) -> str:
        return self.url


def fetch_image(url: str, min_side: int | None = None, *, timeout: float = TIMEOUT, max_bytes: int = MAX_BYTES,
                max_redirects: int = MAX_REDIRECTS, max_pixels: int = MAX_PIXELS,
                background: str | None = DEFAULT_BACKGROUND) -> Image.Image:
    """The image at `url`, decoded as a query file is (`min_side`, `background`: see
    indexer.imaging.decode_picture)."""
    data, final = fetch_bytes(url, timeout=timeout, max_bytes=max_bytes, max_redirects=max_redirects)
    name = urllib.parse.urlsplit(final).path.rsplit("/", 1)[-1] or "image"
    try:
        return decode_image(data, name, max_pixels, min_side, background)
    except ImageDecodeError as exc:
        raise ImageURLError(f"query image {url} cannot be read ({exc}); link a JPEG, PNG or WebP file") from None


def fetch_bytes(url: str, *, timeout: float = TIMEOUT, max_bytes: int = MAX_BYTES,
                max_redirects: int = MAX_REDIRECTS) -> tuple[bytes, str]:
    """(the body at `url`, the URL it came from after redirects); ImageURLError says why not."""
    fetched = fetch(url, FetchLimits(timeout, max_bytes, max_redirects, allow_private=True))
    return fetched.body or b"", fetched.url
