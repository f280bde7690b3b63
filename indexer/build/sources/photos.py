"""A row's photo cell: what a table's image column holds, resolved to the photo a product is indexed with.

A new kind of photo cell is resolved here, in `resolve_photo`: whatever it is, it ends as a local file to
read, as no photo (an empty cell), or as a photo skipped with its reason, which the run records as that
row's photo failure (the product is indexed with its text alone). A URL (any scheme://) is named as it is,
and fetched into a local copy before planning (photo_urls.py: the builder has the cache and the network).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...fetch import is_url
from .columns import ColumnTyping


@dataclass(frozen=True)
class PhotoCell:
    """What a photo cell resolved to."""

    path: str | None = None  # the photo, absolute, or its URL: read unless skipped, named either way; None: none
    skipped: str | None = None  # why the photo is not read (as a failure reads: "is a folder, not an image")


NO_PHOTO = PhotoCell()


def resolve_photo(table: Path, cell: Any, typing: ColumnTyping) -> PhotoCell:
    """The row's photo: a path relative to the table's folder, or absolute. An empty cell or a missing marker
    is no photo; a path that names a folder is skipped here, so that it is recorded as a missing file is."""
    if typing.missing(cell) or not str(cell).strip():
        return NO_PHOTO
    if is_url(str(cell)):
        return PhotoCell(str(cell).strip())
    path = os.path.normpath(os.path.join(table.parent, os.path.expanduser(str(cell).strip())))
    if os.path.isdir(path):
        return PhotoCell(path, "is a folder, not an image")
    return PhotoCell(path)
