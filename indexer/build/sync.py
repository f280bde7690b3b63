"""Which sources a run reads, and which stored items belong to them.

Sources are additive: a run that names sources adds them to the ones the index
recorded and syncs only those (new, changed and deleted files inside them);
the others are kept as they are. A run that names none syncs them all.
Dropping a source is explicit (`drop`, or replacing the whole set).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError, command, option
from .sources import DEFAULT_ENCODING, DEFAULT_NA_VALUES, DEFAULT_TEXT_COLUMN, ColumnTyping
from ..store.manifest import Source
from ..store.tables import Failure, ItemRow


@dataclass
class SourcePlan:
    sources: list[Source]  # what the index holds after this run
    synced: list[Source]  # what this run reads
    unchanged: list[Source] = field(default_factory=list)  # corpora this run syncs, found as recorded: kept unread

    def owner(self, modality: str, location: str | None) -> str:
        """"synced", "kept" (another source holds it: leave it be) or "dropped" (no source holds it)."""
        if _owned(self.synced, modality, location):
            return "synced"
        return "kept" if _owned(self.sources, modality, location) else "dropped"

    def owner_of(self, item: ItemRow | Failure) -> str:
        """An image belongs to the folders above it; a text or a product, and their failures, to their corpus."""
        if isinstance(item, Failure):
            return self.owner("text", item.source) if item.source else self.owner(item.modality, item.path)
        return self.owner(item.modality, item.path if item.modality == "image" else item.source)


def named_sources(images: list[str | Path], texts: list[str | Path], text_column: str | None,
                  encoding: str | None, image_column: str | None = None, id_column: str | None = None,
                  typing: dict[str, Any] | None = None) -> list[Source]:
    """`typing`: na_values, column_types, delimiter and decimal for the corpora named (None each: as recorded)."""
    named = [Source("images", os.path.abspath(p)) for p in images]
    named += [Source("texts", os.path.abspath(p), text_column, encoding, image_column, id_column=id_column,
                     **(typing or {}))
              for p in texts]
    return list({s.key: s for s in named}.values())


def plan_sources(named: list[Source], recorded: list[Source], replace: bool = False) -> SourcePlan:
    """Sources named in this run update their recorded options; unnamed options come from the record."""
    recorded_by_key = {s.key: s for s in recorded}
    named = [_completed(s, recorded_by_key.get(s.key)) for s in named]
    if not named:
        return SourcePlan(list(recorded), list(recorded))
    if replace:
        return SourcePlan(named, named)
    merged = dict(recorded_by_key)
    merged.update({s.key: s for s in named})
    return SourcePlan(list(merged.values()), named)


def drop_sources(recorded: list[Source], paths: list[str | Path]) -> SourcePlan:
    """The plan of a run that removes `paths` from the sources and syncs nothing."""
    doomed = {os.path.abspath(p) for p in paths}
    unknown = sorted(doomed - {s.path for s in recorded})
    if unknown:
        known = ", ".join(s.path for s in recorded) or "none"
        raise InvalidInputError(f"{unknown[0]} is not a source of this index (its sources: {known}); "
                                f"{command('info')} lists them")
    return SourcePlan([s for s in recorded if s.path not in doomed], [])


def reading_options(source: Source) -> tuple[str, str, str | None]:
    """(text column, encoding, image column) of a text source (its id column is `source.id_column`)."""
    return source.text_column or DEFAULT_TEXT_COLUMN, source.encoding or DEFAULT_ENCODING, source.image_column


def column_typing(source: Source) -> ColumnTyping:
    """How a text source's cells are typed: its missing markers, the column types and decimal mark set for it."""
    na_values = DEFAULT_NA_VALUES if source.na_values is None else source.na_values
    return ColumnTyping(na_values, dict(source.column_types or {}), source.decimal)


def _completed(named: Source, recorded: Source | None) -> Source:
    if named.kind != "texts":
        return named
    text_column = named.text_column or (recorded.text_column if recorded else None)
    encoding = named.encoding or (recorded.encoding if recorded else None)
    image_column = named.image_column or (recorded.image_column if recorded else None)
    id_column = named.id_column or (recorded.id_column if recorded else None)
    return _with_recorded_typing(Source("texts", named.path, text_column, encoding, image_column, id_column=id_column),
                                 named, recorded)


def _with_recorded_typing(source: Source, named: Source, recorded: Source | None) -> Source:
    """Missing markers, column types, delimiter and decimal mark as named, else as recorded; naming no column
    types ({}) clears them."""
    def kept(name: str):
        value = getattr(named, name)
        return value if value is not None else (getattr(recorded, name) if recorded else None)

    return replace(source, na_values=kept("na_values"), column_types=kept("column_types") or None,
                   delimiter=kept("delimiter"), decimal=kept("decimal"))


def _owned(sources: list[Source], modality: str, location: str | None) -> bool:
    if location is None:
        return False
    for source in sources:
        if modality == "image" and source.kind == "images":
            if location == source.path or location.startswith(source.path.rstrip(os.sep) + os.sep):
                return True
        elif modality in ("text", "product") and source.kind == "texts" and location == source.path:
            return True
    return False


def check_replace(replace: bool, named: list[Source]) -> None:
    if replace and not named:
        raise InvalidInputError(f"{option('replace_sources')} needs the sources that replace the index's own; "
                                "name image folders or text corpora")
