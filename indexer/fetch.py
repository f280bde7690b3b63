"""Fetching an image's bytes by URL, safely: the one core under query images (search/fetch.py) and the
photos a table links (build/sources/photo_urls.py).

Over http(s) only, bounded in time, size and redirects, each redirect checked before it is followed.
A typed answer that is not an image is refused before its body is read. With `allow_private` off, every
hop's host is resolved here and connected to only at a public address: a table from elsewhere, indexed
unattended, must not make xmodal read addresses only this machine can reach (a cloud's metadata service,
an intranet, localhost); checking the address connected to, not a name looked up before, leaves no gap
for a name that resolves differently the second time.
"""
from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException

from .errors import ImageURLError, option

TIMEOUT = 10.0  # seconds: to connect, for each read, and for the whole body
MAX_BYTES = 20 << 20  # as an upload to the service
MAX_REDIRECTS = 5
SCHEMES = ("http", "https")
REDIRECTS = (301, 302, 303, 307, 308)
NOT_MODIFIED = 304
CHUNK = 64 << 10
# Object stores serve photos uploaded without a type as octet-stream (S3 says binary/octet-stream), and
# some servers send no type at all: those go to the decoder, which refuses what is not an image. A typed
# answer that is not image/* (an HTML page: the commonest wrong link) is refused before its body is read.
UNTYPED = ("application/octet-stream", "binary/octet-stream")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")  # any scheme: those not fetched are refused by name


@dataclass(frozen=True)
class FetchLimits:
    timeout: float = TIMEOUT
    max_bytes: int = MAX_BYTES
    max_redirects: int = MAX_REDIRECTS
    allow_private: bool = True  # False: a host at a private, loopback or link-local address is refused


@dataclass(frozen=True)
class Fetched:
    """An answer: the body, or None where the server said it is unchanged (304 to a conditional request)."""

    body: bytes | None
    url: str  # where it came from, after redirects
    etag: str | None = None
    last_modified: str | None = None


def is_url(text: object) -> bool:
    """A string that names a scheme (http://, https://, file://, ...): a URL, not a path or a text."""
    return isinstance(text, str) and bool(_SCHEME.match(text.strip()))


def fetch(url: str, limits: FetchLimits = FetchLimits(), subject: str = "query image",
          validators: dict[str, str] | None = None) -> Fetched:
    """The body at `url`; ImageURLError says why not, its message naming the `subject` and the URL.
    `validators`: the ETag and Last-Modified of a copy held, sent as If-None-Match and If-Modified-Since."""
    url = url.strip()
    deadline = time.monotonic() + limits.timeout
    current, asked = url, _conditional(validators)
    for _ in range(limits.max_redirects + 1):
        _check_scheme(subject, url, current)
        request = urllib.request.Request(current, headers=asked)
        try:
            with _OPENERS[limits.allow_private].open(request, timeout=_left(subject, url, deadline, limits)) as answer:
                _check_type(subject, url, answer.headers.get("Content-Type"))
                return Fetched(_read(subject, url, answer, deadline, limits), current, *_validators(answer.headers))
        except urllib.error.HTTPError as refused:
            with refused:
                if refused.code == NOT_MODIFIED and asked:
                    return Fetched(None, current, *_validators(refused.headers))
                location = refused.headers.get("Location") if refused.code in REDIRECTS else None
                if location is None:
                    reason = f" ({refused.reason})" if refused.reason else ""
                    raise _error(subject, url, f"could not be fetched: the server returned HTTP {refused.code}"
                                 f"{reason}", "check the URL", transient=refused.code >= 500) from None
            current = urllib.parse.urljoin(current, location)
        except _PrivateAddress as private:
            where = private.host if private.host == private.address else f"{private.host} ({private.address})"
            raise _error(subject, url, f"is refused: {where} is {private.kind}, fetched only with "
                         f"{option('allow_private_urls')}", "allow it if you trust the table") from None
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            raise _unreachable(subject, url, exc, limits.timeout) from None
    raise _error(subject, url, f"redirects more than {limits.max_redirects} times (a redirect loop?)",
                 "link the image itself")


def _conditional(validators: dict[str, str] | None) -> dict[str, str]:
    held = validators or {}
    asked = {"If-None-Match": held.get("etag"), "If-Modified-Since": held.get("last_modified")}
    return {name: value for name, value in asked.items() if value}


def _validators(headers) -> tuple[str | None, str | None]:
    return headers.get("ETag"), headers.get("Last-Modified")


def _error(subject: str, url: str, reason: str, fix: str, sep: str = " ", transient: bool = False) -> ImageURLError:
    return ImageURLError(f"{subject} {url}{sep}{reason}; {fix}", reason, transient)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects come back as answers: each is counted, and its scheme checked, before it is followed."""

    def redirect_request(self, *args, **kwargs):
        return None


class _PrivateAddress(Exception):
    """Not an OSError: urllib passes it through as raised, where it would wrap a refused connection."""

    def __init__(self, host: str, address: str, kind: str):
        super().__init__(host)
        self.host, self.address, self.kind = host, address, kind


def _kind_of(address: str) -> str | None:
    """What makes an address one not to fetch from unattended; None: a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private address"
    return None if ip.is_global else "not a public address"


def _public_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, *args, **kwargs):
    """socket.create_connection, to the host's public addresses only."""
    host, port = address
    refused, failed = None, None
    for family, kind, proto, _, sockaddr in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        why = _kind_of(sockaddr[0])
        if why is not None:
            refused = refused or _PrivateAddress(host, sockaddr[0], why)
            continue
        try:
            return socket.create_connection((sockaddr[0], port), timeout, source_address)
        except OSError as exc:
            failed = exc
    if failed is not None:
        raise failed
    raise refused or OSError(f"{host} has no address")


class _PublicHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _public_connection


class _PublicHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _public_connection  # TLS is laid over it, still checked by the host's name


class _PublicHTTP(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_PublicHTTPConnection, req)


class _PublicHTTPS(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_PublicHTTPSConnection, req, context=self._context)


_OPENERS = {True: urllib.request.build_opener(_NoRedirects()),
            False: urllib.request.build_opener(_NoRedirects(), _PublicHTTP(), _PublicHTTPS())}


def _check_scheme(subject: str, url: str, current: str) -> None:
    scheme = urllib.parse.urlsplit(current).scheme.lower()
    if scheme in SCHEMES:
        return
    if current == url:
        raise _error(subject, url, f"only http:// and https:// URLs are fetched, not {scheme or 'this'}://",
                     "give a local image as a file path", sep=": ")
    raise _error(subject, url, f"redirects to {current}: only http:// and https:// are followed",
                 "link the image itself")


def _check_type(subject: str, url: str, content_type: str | None) -> None:
    kind = (content_type or "").split(";")[0].strip().lower()
    if not kind or kind.startswith("image/") or kind in UNTYPED:
        return
    what = "a web page" if kind in ("text/html", "application/xhtml+xml") else "not an image"
    raise _error(subject, url, f"is {what} ({kind})", "link the image file itself")


def _read(subject: str, url: str, answer, deadline: float, limits: FetchLimits) -> bytes:
    """The body, refused as soon as it is known to be over the size cap: from its length, else while reading."""
    declared = answer.headers.get("Content-Length")
    if declared and declared.strip().isdigit() and int(declared) > limits.max_bytes:
        raise _too_large(subject, url, limits.max_bytes)
    parts, size = [], 0
    while True:
        try:
            part = answer.read1(CHUNK)
        except (OSError, HTTPException) as exc:
            raise _unreachable(subject, url, exc, limits.timeout) from None
        if not part:
            return b"".join(parts)
        size += len(part)
        if size > limits.max_bytes:
            raise _too_large(subject, url, limits.max_bytes)
        parts.append(part)
        _left(subject, url, deadline, limits)  # a server that trickles its bytes is as slow as one that never answers


def _left(subject: str, url: str, deadline: float, limits: FetchLimits) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _timed_out(subject, url, limits.timeout)
    return left


def _unreachable(subject: str, url: str, exc: BaseException, timeout: float) -> ImageURLError:
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return _timed_out(subject, url, timeout)
    detail = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
    return _error(subject, url, f"could not be fetched: {detail}", "check the URL and the network", transient=True)


def _timed_out(subject: str, url: str, timeout: float) -> ImageURLError:
    return _error(subject, url, f"could not be fetched: no answer within {timeout:g} s",
                  "try again, or download it and give the file", transient=True)


def _too_large(subject: str, url: str, max_bytes: int) -> ImageURLError:
    return _error(subject, url, f"is over the {_size(max_bytes)} limit", "link a smaller image")


def _size(count: int) -> str:
    if count >= 1 << 20:
        return f"{count / (1 << 20):g} MB"
    return f"{count / 1024:g} kB" if count >= 1024 else f"{count} bytes"
