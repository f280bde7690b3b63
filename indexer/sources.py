"""Reading sources: image files under folders, and text corpora (txt, csv, tsv, jsonl, parquet)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from .errors import InvalidInputError, NoImagesError, TextColumnError
from .imaging import supported_extensions

TEXT_FORMATS = (".txt", ".csv", ".tsv", ".jsonl", ".parquet")
DEFAULT_TEXT_COLUMN = "text"


@dataclass(frozen=True)
class TextRecord:
    text: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)


def find_images(roots: list[str | Path]) -> list[str]:
    """Every supported image under `roots`, sorted; hidden entries skipped, symlink loops safe."""
    extensions = supported_extensions()
    found: list[str] = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise InvalidInputError(f"image folder {root} does not exist; check the path")
        if root.is_file():
            raise InvalidInputError(f"{root} is a file; give the folder that holds the images")
        found.extend(_walk_images(root, extensions))
    if not found:
        names = ", ".join(str(r) for r in roots)
        raise NoImagesError(
            f"no images found in {names} (looked for {', '.join(sorted(extensions))}); "
            "point at a folder that holds images"
        )
    return sorted(set(found))


def _walk_images(root: Path, extensions: frozenset[str]) -> Iterator[str]:
    seen_dirs: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        stat = os.stat(dirpath)
        key = (stat.st_dev, stat.st_ino)
        if key in seen_dirs:  # a symlink loop, or a second link to a folder already read
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or os.path.splitext(name)[1].lower() not in extensions:
                continue
            path = os.path.join(os.path.abspath(dirpath), name)
            if os.path.isfile(path):
                yield path


def read_texts(path: str | Path, text_column: str | None = None) -> list[TextRecord]:
    """Texts of one corpus; in tables every column but the text column is kept as metadata."""
    path = Path(os.path.abspath(path))  # sources are recorded absolute, however they were typed
    if not path.is_file():
        raise InvalidInputError(f"text corpus {path} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return _read_lines(path)
    if suffix not in TEXT_FORMATS:
        raise InvalidInputError(
            f"{path.name}: unsupported text corpus type {suffix or '(none)'}; use {', '.join(TEXT_FORMATS)}"
        )
    table = _read_table(path, suffix)
    column = text_column or DEFAULT_TEXT_COLUMN
    if column not in table.column_names:
        raise TextColumnError(
            f"{path.name} has no column {column!r}; its columns are {', '.join(table.column_names)} "
            "(choose one with --text-column)"
        )
    return _records_from_table(table, column, path)


def _read_lines(path: Path) -> list[TextRecord]:
    records = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if text:
                records.append(TextRecord(text, f"{path}:{number}", {}))
    return records


def _read_table(path: Path, suffix: str):
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".jsonl":
            return pjson.read_json(path)
        delimiter = "\t" if suffix == ".tsv" else ","
        return pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter))
    except (pa.ArrowInvalid, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise InvalidInputError(f"cannot read {path.name}: {first_line}; check the file's format") from None


def _records_from_table(table, column: str, path: Path) -> list[TextRecord]:
    texts = table.column(column).to_pylist()
    extra = table.drop_columns([column]).to_pylist()
    records = []
    for number, (text, metadata) in enumerate(zip(texts, extra), start=1):
        if text is None or not str(text).strip():
            continue
        records.append(TextRecord(str(text).strip(), f"{path}:{number}", metadata))
    return records
