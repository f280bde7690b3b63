"""Editing a committed index without re-indexing: removing items, listing what it holds."""
from __future__ import annotations

import os
import time
from pathlib import Path

from .errors import InvalidInputError
from .pipeline import IndexConfig, RunStats, commit_state, load_state
from .store import IndexDir, ItemRow
from .store.lock import WriterLock


def list_items(index: str | Path, modality: str | None = None) -> list[ItemRow]:
    index_dir = IndexDir(Path(index))
    rows = load_state(index_dir, index_dir.read_manifest()).rows
    return sorted((r for r in rows if modality is None or r.modality == modality), key=lambda r: r.row_id)


def remove_items(index: str | Path, paths: list[str | Path] = (), row_ids: list[int] = ()) -> list[ItemRow]:
    """Remove items by file path (or every file under a folder) and by row id; returns what was removed.

    Sources are not touched: a removed file still in an indexed folder comes back on the next `xmodal index`.
    """
    started = time.perf_counter()
    index_dir = IndexDir(Path(index))
    index_dir.read_manifest()  # a clear error before taking the lock on a non-index
    with WriterLock(index_dir.root):
        manifest = index_dir.read_manifest()
        state = load_state(index_dir, manifest)
        doomed = _select(state.rows, [os.path.abspath(p) for p in paths], set(row_ids))
        keep = [r for r in state.rows if r.row_id not in doomed]
        config = IndexConfig(images=[Path(p) for p in manifest.sources.get("images", [])],
                             texts=[Path(p) for p in manifest.sources.get("texts", [])],
                             text_column=manifest.settings.get("text_column"),
                             index_type=manifest.settings.get("index_type", "auto"))
        stats = RunStats(reused=len(keep), removed=len(doomed), seconds=round(time.perf_counter() - started, 3))
        commit_state(index_dir, manifest.model, manifest, state, keep, [state.vectors[r.row_id] for r in keep],
                     state.failures, config, manifest.next_row_id, stats)
    return [r for r in state.rows if r.row_id in doomed]


def _select(rows: list[ItemRow], paths: list[str], row_ids: set[int]) -> set[int]:
    known_ids = {r.row_id for r in rows}
    missing_ids = sorted(row_ids - known_ids)
    if missing_ids:
        raise InvalidInputError(f"no items with row id {', '.join(map(str, missing_ids))}; `xmodal list` shows the ids")
    chosen = set(row_ids)
    for path in paths:
        prefix = path.rstrip(os.sep) + os.sep
        matched = {r.row_id for r in rows if r.path and (r.path == path or r.path.startswith(prefix))}
        if not matched:
            raise InvalidInputError(f"no indexed item at {path}; `xmodal list` shows what the index holds")
        chosen |= matched
    if not chosen:
        raise InvalidInputError("name what to remove: --path PATH or --id ROW_ID")
    return chosen
