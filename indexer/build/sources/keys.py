"""Keys: an id column names each row, whatever line it is on; each indexed row needs one, and no two the same."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import KeyColumnError, option

if TYPE_CHECKING:
    import pyarrow as pa


def key_text(value: Any) -> str | None:
    """A key cell as text (a whole number written 42 or 42.0 is "42"); None where it is empty."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


class KeyCheck:
    """Keys seen on the first pass: each row that will be indexed needs one, and no two the same."""

    def __init__(self, path: Path, column: str):
        self.path, self.column = path, column
        self.first_line: dict[str, int] = {}
        self.repeated: list[tuple[str, int, int]] = []  # (key, first line, repeating line)
        self.empty: list[int] = []

    def see(self, line: int, value: Any, indexed: bool) -> None:
        key = key_text(value)
        if key is None:
            if indexed:  # a row skipped for its empty text needs no key
                self.empty.append(line)
            return
        first = self.first_line.setdefault(key, line)
        if first != line:
            self.repeated.append((key, first, line))

    def check(self) -> None:
        fix = f"fix the table, or leave {option('id_column')} out"
        if self.empty:
            more = f" (and {len(self.empty) - 1} more)" if len(self.empty) > 1 else ""
            raise KeyColumnError(f"{self.path.name}: id column {self.column!r} is empty on line {self.empty[0]}{more}; "
                                 f"every row needs a key: {fix}")
        if self.repeated:
            key, first, again = self.repeated[0]
            more = f" (and {len(self.repeated) - 1} more repeats)" if len(self.repeated) > 1 else ""
            raise KeyColumnError(f"{self.path.name}: id column {self.column!r} repeats {key!r} on lines {first} and "
                                 f"{again}{more}; each row needs a key of its own: {fix}")


def key_texts(column) -> pa.Array:
    """A Parquet key column as text, as key_text writes a cell."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_floating(column.type):
        whole = pc.equal(column, pc.floor(column))
        column = pc.if_else(whole, column.cast(pa.int64(), safe=False).cast(pa.string()), column.cast(pa.string()))
    texts = pc.utf8_trim_whitespace(column.cast(pa.string()))
    return pc.if_else(pc.equal(pc.utf8_length(texts), 0), pa.scalar(None, pa.string()), texts)
