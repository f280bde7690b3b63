"""A row's photo cell: what a table's image column holds, resolved to the photo a product is indexed with.

A new kind of photo cell is resolved here, in `resolve_photo`: whatever it is, it ends as a local file or
as no photo.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .columns import ColumnTyping


def resolve_photo(table: Path, cell: Any, typing: ColumnTyping) -> str | None:
    """The row's photo, absolute (a path relative to the table's folder, or absolute); None: the cell is empty
    or a missing marker, and the row has no photo."""
    if typing.missing(cell) or not str(cell).strip():
        return None
    return os.path.normpath(os.path.join(table.parent, os.path.expanduser(str(cell).strip())))
