"""Query images by URL, as rclip and clip-retrieval take them: fetched over http(s) only, bounded in time,
size and redirects, then decoded as files are (the same decoder, the same pixel limit).

Only the caller decides that a URL is to be fetched: `--image URL` and URL terms on the command line,
`image=` and `ImageURL` terms in the API, and in the service `image_url` only when it was started to
fetch (search/serve/app.py): a server that fetches whatever a client names can be made to read
addresses only it can reach (server-side request forgery).
"""
from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException

from PIL import Image

from ..indexer.errors import ImageDecodeError, ImageURLError
from ..indexer.imaging import DEFAULT_BACKGROUND, MAX_PIXELS, decode_image

TIMEOUT = 10.0  # seconds: to connect, for each read, and for the whole body
MAX_BYTES = 20 << 20  # as an upload to the service
MAX_REDIRECTS = 5
SCHEMES = ("http", "https")
REDIRECTS = (301, 302, 303, 307, 308)
CHUNK = 64 << 10
# Object stores serve photos uploaded without a type as octet-stream (S3 says binary/octet-stream), and
# some servers send no type at all: those go to the decoder, which refuses what is not an image. A typed
# answer that is not image/* (an HTML page: the commonest wrong link) is refused before its body is read.
UNTYPED = ("application/octet-stream", "binary/octet-stream")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")  # any scheme: those not fetched are refused by name


@dataclass(frozen=True)
class ImageURL:
    """A query term: the image at this URL (as a Path is the image in a file; a plain string is a text)."""

    url: str

    def __str__(self) -> str:
        return self.url


def is_url(text: object) -> bool:
    """A string that names a scheme (http://, https://, file://, ...): a URL, not a path or a text."""
    return isinstance(text, str) and bool(_SCHEME.match(text.strip()))


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
    url = url.strip()
    deadline = time.monotonic() + timeout
    current = url
    for _ in range(max_redirects + 1):
        _check_scheme(url, current)
        try:
            with _OPENER.open(current, timeout=_left(url, deadline, timeout)) as answer:
                _check_type(url, answer.headers.get("Content-Type"))
                return _read(url, answer, max_bytes, deadline, timeout), current
        except urllib.error.HTTPError as refused:
            with refused:
                location = refused.headers.get("Location") if refused.code in REDIRECTS else None
                if location is None:
                    reason = f" ({refused.reason})" if refused.reason else ""
                    raise ImageURLError(f"query image {url} could not be fetched: the server returned HTTP "
                                        f"{refused.code}{reason}; check the URL") from None
            current = urllib.parse.urljoin(current, location)
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            raise _unreachable(url, exc, timeout) from None
    raise ImageURLError(f"query image {url} redirects more than {max_redirects} times (a redirect loop?); "
                        "link the image itself")


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects come back as answers: each is counted, and its scheme checked, before it is followed."""

    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def _check_scheme(url: str, current: str) -> None:
    scheme = urllib.parse.urlsplit(current).scheme.lower()
    if scheme in SCHEMES:
        return
    if current == url:
        raise ImageURLError(f"query image {url}: only http:// and https:// URLs are fetched, not {scheme or 'this'}"
                            "://; give a local image as a file path")
    raise ImageURLError(f"query image {url} redirects to {current}: only http:// and https:// are followed")


def _check_type(url: str, content_type: str | None) -> None:
    kind = (content_type or "").split(";")[0].strip().lower()
    if not kind or kind.startswith("image/") or kind in UNTYPED:
        return
    what = "a web page" if kind in ("text/html", "application/xhtml+xml") else "not an image"
    raise ImageURLError(f"query image {url} is {what} ({kind}); link the image file itself")


def _read(url: str, answer, max_bytes: int, deadline: float, timeout: float) -> bytes:
    """The body, refused as soon as it is known to be over `max_bytes`: from its length, else while reading."""
    declared = answer.headers.get("Content-Length")
    if declared and declared.strip().isdigit() and int(declared) > max_bytes:
        raise _too_large(url, max_bytes)
    parts, size = [], 0
    while True:
        try:
            part = answer.read1(CHUNK)
        except (OSError, HTTPException) as exc:
            raise _unreachable(url, exc, timeout) from None
        if not part:
            return b"".join(parts)
        size += len(part)
        if size > max_bytes:
            raise _too_large(url, max_bytes)
        parts.append(part)
        _left(url, deadline, timeout)  # a server that trickles its bytes is as slow as one that never answers


def _left(url: str, deadline: float, timeout: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _timed_out(url, timeout)
    return left


def _unreachable(url: str, exc: BaseException, timeout: float) -> ImageURLError:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return _timed_out(url, timeout)
    detail = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return ImageURLError(f"query image {url} could not be fetched: {detail}; check the URL and the network")


def _timed_out(url: str, timeout: float) -> ImageURLError:
    return ImageURLError(f"query image {url} could not be fetched: no answer within {timeout:g} s; try again, "
                         "or download it and give the file")


def _too_large(url: str, max_bytes: int) -> ImageURLError:
    return ImageURLError(f"query image {url} is over the {_size(max_bytes)} limit; link a smaller image")


def _size(count: int) -> str:
    if count >= 1 << 20:
        return f"{count / (1 << 20):g} MB"
    return f"{count / 1024:g} kB" if count >= 1024 else f"{count} bytes"
