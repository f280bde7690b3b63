"""Photo cells that are URLs (a shop's export links its photos): fetched into the index's cache before
planning, so that the rest of a run reads a local file as it does for a photo on disk.

Each table's photos have their own folder in the cache (a URL's copy and its validators, ETag and
Last-Modified), so that a re-run asks conditionally and a photo unchanged at its URL (304) is the same
file, of the same size and mtime, and is planned as unchanged: not read, not encoded. A photo changed at
its URL is written anew and encoded anew; the product keeps its row id (it names the same URL). Each copy
is written once fetched (body, then validators), so a run that dies keeps what it had fetched.

A URL that cannot be fetched (HTTP 404, no answer in time, not an image, too large, a private address
not allowed) is that row's photo failure, as a missing file is. Where a copy is held and the server is
only unreachable for now (no answer, a 5xx), the copy is read: a shop's CDN down for a minute must not
strip its products of their photos.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from hashlib import blake2b
from pathlib import Path

from ...errors import ImageURLError
from ...fetch import FetchLimits, fetch, is_url
from .records import Corpus, TextRecord

THREADS = 8  # photos fetched at once: a CDN answers each in tens of ms, most of it waiting
_SUFFIX = re.compile(r"\.[a-z0-9]{1,5}$")


@dataclass(frozen=True)
class URLFetching:
    """How a run fetches photo URLs: into `cache` (a folder of the index), with these limits."""

    cache: Path
    allow_private: bool = False  # private, loopback and link-local addresses: refused unless allowed
    threads: int = THREADS
    limits: FetchLimits = FetchLimits()


@dataclass
class URLCounts:
    """What fetching a run's photo URLs came to: bodies fetched, copies held and unchanged (304, or standing
    in while their server is down), URLs that failed."""

    fetched: int = 0
    held: int = 0
    failed: int = 0

    def add(self, other: "URLCounts") -> None:
        self.fetched, self.held, self.failed = self.fetched + other.fetched, self.held + other.held, \
            self.failed + other.failed


@dataclass(frozen=True)
class _Got:
    file: str | None = None  # the local copy to read
    skipped: str | None = None  # why not: the row's photo failure
    fetched: bool = False  # its body came over the network this run (not a 304, not a held copy)


def fetch_photo_urls(corpus: Corpus, source: str, fetching: URLFetching) -> tuple[Corpus, URLCounts]:
    """The corpus with each URL photo fetched: a record's `photo_file` set, or its `photo_skipped`; and what
    that came to. Copies of URLs the table no longer names are dropped from the cache."""
    urls = sorted({r.image for r in corpus.records if r.image and r.photo_skipped is None and is_url(r.image)})
    folder = fetching.cache / _key(source)
    if not urls:
        _prune(folder, set())
        return corpus, URLCounts()
    folder.mkdir(parents=True, exist_ok=True)
    limits = replace(fetching.limits, allow_private=fetching.allow_private)
    with ThreadPoolExecutor(min(fetching.threads, len(urls))) as pool:
        got = dict(zip(urls, pool.map(lambda url: _fetched(folder, url, limits), urls)))
    _prune(folder, {_key(url) for url in urls})
    records = [_resolved(r, got[r.image]) if r.image in got else r for r in corpus.records]
    failed = sum(g.skipped is not None for g in got.values())
    fetched = sum(g.fetched for g in got.values())
    return replace(corpus, records=records), URLCounts(fetched, len(got) - fetched - failed, failed)


def drop_other_tables(cache: Path, tables: list[str]) -> None:
    """Drop the copies of tables the index no longer holds (removed, or replaced)."""
    kept = {_key(table) for table in tables}
    if cache.is_dir():
        for folder in cache.iterdir():
            if folder.name not in kept:
                shutil.rmtree(folder, ignore_errors=True)


def _resolved(record: TextRecord, got: _Got) -> TextRecord:
    if got.skipped is not None:
        return replace(record, photo_skipped=got.skipped)
    return replace(record, photo_file=got.file)


def _fetched(folder: Path, url: str, limits: FetchLimits) -> _Got:
    body_path, meta_path = _paths(folder, url)
    held = _held(body_path, meta_path, url)
    try:
        answer = fetch(url, limits, subject="photo", validators=held)
    except ImageURLError as exc:
        if held is not None and exc.transient:
            return _Got(str(body_path))
        return _Got(skipped=exc.reason)
    if answer.body is None:  # 304: the copy held is the photo
        return _Got(str(body_path))
    if held is None or not body_path.is_file() or body_path.read_bytes() != answer.body:
        _write(body_path, answer.body)  # an unchanged body keeps its mtime: planned as unchanged
    _write(meta_path, json.dumps({"url": url, "etag": answer.etag, "last_modified": answer.last_modified}).encode())
    return _Got(str(body_path), fetched=True)


def _held(body_path: Path, meta_path: Path, url: str) -> dict | None:
    """The validators of the copy held for `url`, or None (no copy, or one this run cannot trust)."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("url") == url and body_path.is_file() else None


def _paths(folder: Path, url: str) -> tuple[Path, Path]:
    key = _key(url)
    suffix = _SUFFIX.search(url.split("?", 1)[0].split("#", 1)[0].lower())  # HEIF is told by its suffix
    return folder / f"{key}{suffix.group(0) if suffix else ''}", folder / f"{key}.json"


def _key(text: str) -> str:
    return blake2b(text.encode("utf-8", "surrogateescape"), digest_size=16).hexdigest()


def _write(path: Path, data: bytes) -> None:
    """Whole or not at all: a run killed while writing leaves the previous copy, or none."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    os.replace(partial, path)


def _prune(folder: Path, kept: set[str]) -> None:
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name.split(".", 1)[0] not in kept or entry.name.startswith("."):
            entry.unlink(missing_ok=True)
