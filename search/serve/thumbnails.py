"""Thumbnails of indexed photos, served by row id: nothing else on disk can be reached.

A request names a row id, never a path. The photo is read only if it is the file
that was indexed (same size and mtime) and, once symlinks are resolved, lies
inside its source: an image inside its folder, a product's photo inside its
table's folder or exactly where the table said. Only a re-encoded JPEG
thumbnail leaves the server, never the file's bytes.
"""
from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

from ...indexer.errors import ImageDecodeError

from ..engine import SearchIndex

SIDE = 320
CACHE_BYTES = 64 << 20


class NotServed(Exception):
    """No thumbnail for this row id; the message says why, for the client."""


@dataclass(frozen=True)
class Thumbnail:
    jpeg: bytes
    etag: str


class Thumbnails:
    def __init__(self, side: int = SIDE, cache_bytes: int = CACHE_BYTES):
        self.side, self.cache_bytes = side, cache_bytes
        self._cache: OrderedDict[tuple, Thumbnail] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def get(self, index: SearchIndex, row_id: int) -> Thumbnail:
        try:
            item = index.item(row_id)
        except KeyError:
            raise NotServed(f"no item with row id {row_id}") from None
        if item["modality"] == "text" or not item.get("path"):
            raise NotServed(f"item {row_id} has no photo")
        key = (str(index.path), item["path"], item.get("image_hash") or item.get("content_hash"), self.side)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        thumbnail = Thumbnail(self._render(index, item), f'"{key[2]}-{self.side}"')
        with self._lock:
            self._cache[key] = thumbnail
            self._held += len(thumbnail.jpeg)
            while self._held > self.cache_bytes and self._cache:
                _, dropped = self._cache.popitem(last=False)
                self._held -= len(dropped.jpeg)
        return thumbnail

    def _render(self, index: SearchIndex, item: dict) -> bytes:
        from PIL import Image

        from ...indexer.imaging import load_image

        path = served_path(index, item)
        try:
            picture = load_image(path, background=index.shown_background)  # a cutout as the index shows it
        except ImageDecodeError as exc:
            raise NotServed(f"the photo of item {item['row_id']} cannot be read ({exc})") from None
        picture.thumbnail((self.side, self.side), Image.LANCZOS)
        buffer = io.BytesIO()
        picture.save(buffer, "JPEG", quality=85)
        return buffer.getvalue()


def served_path(index: SearchIndex, item: dict) -> str:
    """The item's file, if it may be read: the indexed file, inside its source."""
    path = item["path"]
    try:
        stat = os.stat(path)
    except OSError:
        raise NotServed(f"the photo of item {item['row_id']} is gone") from None
    if (stat.st_size, stat.st_mtime) != (item.get("size"), item.get("mtime")):
        raise NotServed(f"the photo of item {item['row_id']} changed since it was indexed; index again")
    real = os.path.realpath(path)
    if item["modality"] == "image":
        roots = [s.path for s in index.manifest.sources if s.kind == "images"]
    else:
        roots = [os.path.dirname(item["source"])] if item.get("source") else []
        if real == os.path.normpath(os.path.abspath(path)):
            return real  # exactly where the table said, no link on the way
    if any(_inside(real, os.path.realpath(root)) for root in roots):
        return real
    raise NotServed(f"the photo of item {item['row_id']} lies outside its source folder (a link); not served")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
