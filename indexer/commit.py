"""Committing an index's state: only what changed is written, then the manifest swaps atomically.

A commit compares the new rows with the stored ones: rows added or changed go into
one new segment, rows removed or replaced become deletion records of the segments
that held them, and segments that are mostly deleted, or small and many, are merged
into the new segment on the way (compaction). Readers see the previous commit until
the manifest is replaced (store/layout.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexWriteError
from .models import ModelIdentity
from .plan import StoredState
from .store import MODALITIES, SETS_OF, VECTOR_SETS, Failure, IndexDir, ItemRow, Manifest
from .store.manifest import AnnSpec, SegmentRef, Source
from .store.segments import SegmentReader, segment_folder, write_deletions, write_segment
from .store.tables import item_rows, read_failures, write_failures

COMPACT_DELETED_SHARE = 0.2  # a segment with this share of its rows deleted is rewritten (as Qdrant and Milvus do)
SMALL_SEGMENT_SHARE = 0.1  # a segment holding less than this share of the live items is small...
MAX_SMALL_SEGMENTS = 8  # ...and more small segments than this are merged into one


@dataclass
class RunStats:
    encoded: int = 0
    reused: int = 0
    resumed: int = 0
    removed: int = 0
    failed: int = 0
    seconds: float = 0.0
    bytes_written: int = 0
    compacted: int = 0  # segments merged or rewritten by this commit

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class NewState:
    """What a run wants committed: rows, and their vectors by vector set and row id."""

    rows: list[ItemRow]
    vectors: dict[str, dict[int, np.ndarray]]
    failures: list[Failure]
    sources: list[Source]
    next_row_id: int
    stats: RunStats
    settings: dict[str, Any] = field(default_factory=dict)


def load_state(index_dir: IndexDir, manifest: Manifest | None) -> StoredState:
    """Rows, vectors (memory-mapped where stored raw) and failures of the last commit; empty for a new index."""
    if manifest is None:
        return StoredState()
    state = StoredState(next_row_id=manifest.next_row_id)
    state.vectors = {vector_set: {} for vector_set in VECTOR_SETS}
    for ref in manifest.segments:
        reader = SegmentReader(index_dir.root, ref)
        items = reader.items()
        live = items.column("row_id").to_numpy()
        state.rows.extend(item_rows(items))
        state.segments[ref.name] = live
        for vector_set in VECTOR_SETS:
            row_ids, matrix = reader.vectors(vector_set)
            matrix = np.asarray(matrix)  # rows as plain views of the map: cheaper than a million memmap objects
            keep = np.flatnonzero(np.isin(row_ids, live))
            state.vectors[vector_set].update(zip(row_ids[keep].tolist(), (matrix[i] for i in keep)))
    state.reusable = state.rows
    state.failures = read_failures(index_dir.generation_path(manifest.generation) / "failures.parquet")
    return state


def vectors_of(state: StoredState, rows: list[ItemRow]) -> dict[str, dict[int, np.ndarray]]:
    """The stored vectors of `rows`, by vector set."""
    out: dict[str, dict[int, np.ndarray]] = {}
    for row in rows:
        for vector_set in SETS_OF[row.modality]:
            vector = state.vectors.get(vector_set, {}).get(row.row_id)
            if vector is not None:
                out.setdefault(vector_set, {})[row.row_id] = vector
    return out


@dataclass
class _Change:
    """What a commit does to the stored segments."""

    fresh: list[ItemRow]  # rows added or changed: written anew
    gone: np.ndarray  # row ids removed or replaced: deleted from the segments holding them
    rewrite: set[str]  # segments whose live rows move into the new segment (legacy, mostly deleted, small)

    @property
    def empty(self) -> bool:
        return not self.fresh and not len(self.gone) and not self.rewrite


def commit_state(index_dir: IndexDir, identity: ModelIdentity, previous: Manifest | None, state: StoredState,
                 new: NewState, compact: bool = False) -> tuple[Manifest, bool]:
    """Make `new` the committed state; returns (manifest, whether a generation was written).

    `compact` rewrites every segment with deletions and merges the small ones, whatever the thresholds.
    """
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = sorted(new.rows, key=lambda r: r.row_id)
    failures = sorted(new.failures, key=lambda f: (f.path, f.line or 0, f.modality))
    change = _change(previous, state, rows, compact)
    try:
        if previous is not None and change.empty and failures == state.failures:
            manifest = _manifest(previous.generation, identity, rows, failures, previous.segments, new, previous, now)
            index_dir.write_manifest(manifest)
            return manifest, False
        generation, staging = index_dir.new_staging()
        segments = _write_segments(index_dir, generation, previous, state, change, rows, new, identity.dim)
        write_failures(staging / "failures.parquet", failures)
        new.stats.bytes_written += _size(staging)
        new.stats.compacted = len(change.rewrite)
        manifest = _manifest(generation, identity, rows, failures, segments, new, previous, now)
        index_dir.commit(staging, manifest)
    except OSError as exc:
        index_dir.discard_staging()
        reason = exc.strerror or str(exc)
        raise IndexWriteError(
            f"could not write the index in {index_dir.root}: {reason}; the last committed index is unchanged "
            "and the encoded work is kept for the next run (free disk space or fix permissions, then run again)"
        ) from None
    return manifest, True


def _change(previous: Manifest | None, state: StoredState, rows: list[ItemRow], compact: bool) -> _Change:
    stored = {r.row_id: r for r in state.rows}
    # Equal rows have equal content hashes, so equal vectors; a planner that kept a row passes the same object.
    fresh = [r for r in rows if (old := stored.get(r.row_id)) is not r and old != r]
    kept = {r.row_id for r in rows} - {r.row_id for r in fresh}
    gone = np.array(sorted(set(stored) - kept), dtype=np.int64)
    rewrite = _to_rewrite(previous.segments if previous else [], state, gone, compact, adding=bool(fresh))
    return _Change(fresh, gone, rewrite)


def _to_rewrite(segments: list[SegmentRef], state: StoredState, gone: np.ndarray, compact: bool,
                adding: bool) -> set[str]:
    """Legacy segments, segments mostly deleted, and small segments once there are too many of them."""
    live_after = {s.name: int(np.count_nonzero(~np.isin(state.segments.get(s.name, []), gone))) for s in segments}
    total = sum(live_after.values()) or 1
    rewrite = {s.name for s in segments if s.legacy}
    for s in segments:
        deleted = s.rows - live_after[s.name]
        if live_after[s.name] and (deleted >= COMPACT_DELETED_SHARE * s.rows or (compact and deleted)):
            rewrite.add(s.name)
    small = [s.name for s in segments if s.name not in rewrite and live_after[s.name]
             and live_after[s.name] < SMALL_SEGMENT_SHARE * total]
    if len(small) + adding > MAX_SMALL_SEGMENTS or (compact and len(small) > 1):
        rewrite.update(small)
    return rewrite


def _write_segments(index_dir: IndexDir, generation: str, previous: Manifest | None, state: StoredState,
                    change: _Change, rows: list[ItemRow], new: NewState, dim: int) -> list[SegmentRef]:
    """The segment list after this commit: old ones with their new deletions, then the new segment."""
    by_id = {r.row_id: r for r in rows}
    fresh_ids = {r.row_id for r in change.fresh}
    moved = [by_id[i] for name in sorted(change.rewrite) for i in state.segments.get(name, np.zeros(0)).tolist()
             if i in by_id and i not in fresh_ids]
    segments = []
    for ref in previous.segments if previous else []:
        if ref.name in change.rewrite:
            continue
        ref = _with_deletions(index_dir, generation, ref, state.segments.get(ref.name, np.zeros(0, np.int64)),
                              change.gone, new.stats)
        if ref.live:
            segments.append(ref)
    written = change.fresh + moved
    if written:
        name, staging = index_dir.new_segment_staging(generation, 0)
        ref = write_segment(staging, name, written, new.vectors, dim, new.settings.get("vectors", "float32"),
                            new.settings.get("index_type", "auto"), new.settings.get("memory_budget"), len(rows))
        new.stats.bytes_written += _size(staging)
        index_dir.publish_segment(staging, name)
        segments.append(ref)
    return segments


def _with_deletions(index_dir: IndexDir, generation: str, ref: SegmentRef, live: np.ndarray, gone: np.ndarray,
                    stats: RunStats) -> SegmentRef:
    hit = live[np.isin(live, gone)]
    if not len(hit):
        return ref
    reader = SegmentReader(index_dir.root, ref)
    deleted = np.union1d(reader.deleted(), hit)
    name = write_deletions(segment_folder(index_dir.root, ref), generation, deleted)
    stats.bytes_written += (segment_folder(index_dir.root, ref) / name).stat().st_size
    return replace(ref, deleted=name, deleted_count=len(deleted))


def _size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _ann_summary(segments: list[SegmentRef]) -> dict[str, AnnSpec]:
    """Per vector set, the ANN of the segment holding most of its vectors (`info` shows it)."""
    summary: dict[str, tuple[int, AnnSpec]] = {}
    for ref in segments:
        for vector_set, held in ref.sets.items():
            if vector_set not in summary or held.count > summary[vector_set][0]:
                summary[vector_set] = (held.count, held.ann)
    return {vector_set: spec for vector_set, (_, spec) in summary.items()}


def _manifest(generation: str, identity: ModelIdentity, rows: list[ItemRow], failures: list[Failure],
              segments: list[SegmentRef], new: NewState, previous: Manifest | None, now: str) -> Manifest:
    return Manifest(
        generation=generation,
        model=identity,
        counts={m: sum(r.modality == m for r in rows) for m in MODALITIES},
        failures=len(failures),
        ann=_ann_summary(segments),
        next_row_id=new.next_row_id,
        created_at=previous.created_at if previous else now,
        updated_at=now,
        sources=new.sources,
        settings=new.settings,
        last_run={**new.stats.to_dict(), "finished_at": now},
        segments=segments,
    )
