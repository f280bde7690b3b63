"""Recognising what a re-run need not touch, without loading the index.

A text corpus whose size and modification time (its fingerprint) and reading options (text
column, encoding, missing markers, column types) are as recorded is not read again: its
items are kept as they are. A re-run whose every source is unchanged (image files by path,
size and mtime against the stored rows, read as Arrow columns) commits nothing and only
records the run. So re-running over millions of unchanged items costs a directory walk, not a
reload of the index.
"""
from __future__ import annotations

import os

import numpy as np

from ..store import IndexDir, Manifest
from ..store.manifest import Source
from ..store.segments import SegmentReader
from ..store.tables import Failure, read_failures
from .sync import SourcePlan


def fingerprint(path: str) -> str | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def skip_unchanged_corpora(plan: SourcePlan, recorded: list[Source]) -> SourcePlan:
    """The plan without the plain text corpora that are as recorded: their items are kept, unread.

    Tables of products are always read: their photos may have changed while the table did not. A corpus
    recorded before columns were (by an xmodal that typed "N/A" as text) is read once more, to type it anew.
    """
    known = {s.key: s for s in recorded}

    def unchanged(source: Source) -> bool:
        before = known.get(source.key)
        return (source.kind == "texts" and before is not None and source.image_column is None
                and before.fingerprint is not None and before.fingerprint == fingerprint(source.path)
                and before.columns is not None
                and source.as_read == before.as_read)  # the same reading options: na_values, column_types, ...

    kept = {s.key for s in plan.synced if unchanged(s)}
    sources = [known[s.key] if s.key in kept else s for s in plan.sources]
    return SourcePlan(sources, [s for s in plan.synced if s.key not in kept], [s for s in plan.synced if s.key in kept])


def nothing_changed(index_dir: IndexDir, previous: Manifest, plan: SourcePlan, image_paths: list[str],
                    settings: dict, retry_failed: bool, hidden: list[Failure] = ()) -> bool:
    """Whether a run would commit nothing: same sources and settings, no corpus to read, no image changed,
    and the same things hidden in the folders (`hidden`: subfolders unlisted, broken links) as recorded."""
    if previous.is_legacy or settings != {k: previous.settings.get(k) for k in settings}:
        return False
    if [s.to_dict() for s in plan.sources] != [s.to_dict() for s in previous.sources]:
        return False
    if any(s.kind != "images" for s in plan.synced):
        return False
    recorded = [f for f in read_failures(index_dir.generation_path(previous.generation) / "failures.parquet")
                if f.modality == "image" and not f.source]
    if {(f.path, f.reason) for f in hidden} != {(f.path, f.reason) for f in recorded if f.size is None}:
        return False
    stored = _stored_images(index_dir, previous)
    failed = {} if retry_failed else {f.path: (f.size, f.mtime) for f in recorded}
    matched = 0
    for path in image_paths:
        try:
            stat = os.stat(path)
        except OSError:
            return False
        known = stored.get(path) or failed.get(path)
        if known != (stat.st_size, stat.st_mtime):
            return False
        matched += path in stored
    owned = sum(plan.owner("image", p) == "synced" for p in stored)
    return matched == owned


def _stored_images(index_dir: IndexDir, manifest: Manifest) -> dict[str, tuple[int, float]]:
    """path -> (size, mtime) of every stored image, from three Arrow columns."""
    found: dict[str, tuple[int, float]] = {}
    for ref in manifest.segments:
        items = SegmentReader(index_dir.root, ref).items(["row_id", "modality", "path", "size", "mtime"])
        images = np.asarray(items.column("modality").to_pylist()) == "image" if len(items) else np.zeros(0, bool)
        if images.any():
            chosen = items.filter(images)
            found.update(zip(chosen.column("path").to_pylist(),
                             zip(chosen.column("size").to_pylist(), chosen.column("mtime").to_pylist())))
    return found
