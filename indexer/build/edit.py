"""Editing a committed index without re-indexing: removing items, compacting, listing what it holds."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .commit import RunStats, commit_state, start_delta
from ..errors import InvalidInputError, command, option
from ..store import IndexDir, ItemRow
from .stored import load_state, stored_rows
from ..store.lock import WriterLock
from .sync import SourcePlan, drop_sources


def list_items(index: str | Path, modality: str | None = None) -> list[ItemRow]:
    index_dir = IndexDir(Path(index))
    return [r for r in stored_rows(index_dir, index_dir.read_manifest()) if modality is None or r.modality == modality]


def remove_items(index: str | Path, paths: list[str | Path] = (), row_ids: list[int] = (),
                 sources: list[str | Path] = ()) -> list[ItemRow]:
    """Remove items by file path (or every file under a folder), by row id, or whole sources.

    Removing a path or id leaves the sources as they are: a removed file still in an
    indexed folder comes back on the next run. Removing a source drops it from the
    index's sources with every item and failure only it held.
    """
    started = time.perf_counter()
    index_dir = IndexDir(Path(index))
    index_dir.read_manifest()  # a clear error before taking the lock on a non-index
    with WriterLock(index_dir.root):
        manifest = index_dir.read_manifest()
        state = load_state(index_dir, manifest)
        rows = stored_rows(index_dir, manifest)
        source_plan = drop_sources(manifest.sources, list(sources)) if sources else None
        by_source = _dropped_by(source_plan, rows) if source_plan else set()
        doomed = by_source | (_select(rows, [os.path.abspath(p) for p in paths], set(row_ids))
                              if paths or row_ids or not sources else set())
        delta = start_delta(index_dir, manifest.model.dim, manifest.settings, sum(manifest.counts.values()))
        delta.gone = np.array(sorted(doomed), np.int64)
        delta.failures = [f for f in state.failures if not source_plan or source_plan.owner_of(f) != "dropped"]
        delta.sources = source_plan.sources if source_plan else manifest.sources
        delta.next_row_id = manifest.next_row_id
        delta.stats = RunStats(reused=len(rows) - len(doomed), removed=len(doomed),
                               seconds=round(time.perf_counter() - started, 3))
        commit_state(index_dir, manifest.model, manifest, state, delta)
    return [r for r in rows if r.row_id in doomed]


def _dropped_by(source_plan: SourcePlan, rows: list[ItemRow]) -> set[int]:
    return {r.row_id for r in rows if source_plan.owner_of(r) == "dropped"}


def _select(rows: list[ItemRow], paths: list[str], row_ids: set[int]) -> set[int]:
    known_ids = {r.row_id for r in rows}
    missing_ids = sorted(row_ids - known_ids)
    if missing_ids:
        raise InvalidInputError(f"no items with row id {', '.join(map(str, missing_ids))}; {command('list')} shows the ids")
    chosen = set(row_ids)
    for path in paths:
        prefix = path.rstrip(os.sep) + os.sep
        matched = {r.row_id for r in rows if r.path and (r.path == path or r.path.startswith(prefix))}
        if not matched:
            raise InvalidInputError(f"no indexed item at {path}; {command('list')} shows what the index holds")
        chosen |= matched
    if not chosen:
        raise InvalidInputError(f"name what to remove: {option('path', 'PATH')}, {option('id', 'ROW_ID')} "
                                f"or {option('source', 'PATH')}")
    return chosen


@dataclass(frozen=True)
class CompactReport:
    segments_before: int
    segments_after: int
    deleted_before: int  # rows the deletion records hid before; compaction drops them from disk
    deleted_after: int
    bytes_written: int
    seconds: float
    upgraded: bool  # a format-2 index was rewritten into segments


def compact_index(index: str | Path) -> CompactReport:
    """Rewrite segments with deleted rows and merge small ones; upgrades a format-2 index.

    Like any run, a killed compaction leaves the last commit as it was.
    """
    started = time.perf_counter()
    index_dir = IndexDir(Path(index))
    index_dir.read_manifest()
    with WriterLock(index_dir.root):
        manifest = index_dir.read_manifest()
        state = load_state(index_dir, manifest)
        delta = start_delta(index_dir, manifest.model.dim, manifest.settings, sum(manifest.counts.values()))
        delta.failures, delta.sources, delta.next_row_id = state.failures, manifest.sources, manifest.next_row_id
        delta.stats = RunStats(reused=sum(manifest.counts.values()))
        after, _ = commit_state(index_dir, manifest.model, manifest, state, delta, compact=True)
        stats = delta.stats
    return CompactReport(len(manifest.segments), len(after.segments), sum(s.deleted_count for s in manifest.segments),
                         sum(s.deleted_count for s in after.segments), stats.bytes_written,
                         round(time.perf_counter() - started, 3), manifest.is_legacy)
