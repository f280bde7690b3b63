"""Committing an index's state: only what changed is written, then the manifest swaps atomically.

A run hands over a delta: the rows it added or changed, already streaming into new
segments (indexer/build/fresh.py), and the row ids it removed or replaced, which become
deletion records of the segments that held them. Segments that are mostly deleted,
or small and many, have their live rows moved into the new segments on the way
(compaction). Readers see the previous commit until the manifest is replaced
(store/layout.py).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from ..errors import IndexWriteError
from .fresh import SEGMENT_ROWS, FreshSegments, folder_size
from ..models import ModelIdentity
from ..store import MODALITIES, VECTOR_SETS, Failure, IndexDir, Manifest
from ..store.manifest import AnnSpec, SegmentRef, Source
from ..store.segments import SegmentReader, add_words, segment_folder, write_deletions
from ..store.words import words_setting
from ..store.ann import VectorAdder
from ..store.tables import write_failures
from .encode_files import Timer
from .stored import StoredState

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
class Delta:
    """What a run changes: the rows it wrote (added, or changed under their row id) and the rows it deleted."""

    generation: str  # the generation being written; its staging folder exists
    staging: Path
    fresh: FreshSegments
    gone: np.ndarray  # row ids whose stored copies are deleted: removed, or rewritten in `fresh`
    failures: list[Failure]
    sources: list[Source]
    next_row_id: int
    stats: RunStats
    settings: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None  # measured this run to choose the model's way; None: as recorded


def start_delta(index_dir: IndexDir, dim: int, settings: dict[str, Any], expected_size: int,
                timer: Timer | None = None, ann_add: VectorAdder | None = None) -> Delta:
    """A generation's staging folder and a writer for its new segments (filling IVF lists with `ann_add`,
    on Ray for one; the time spent writing counted to `timer`'s "write")."""
    generation, staging = index_dir.new_staging()
    # The words are written by this process's analysis, with the columns recorded (or asked for).
    settings = {**settings, "words": words_setting((settings.get("words") or {}).get("columns"))}
    return Delta(generation, staging, FreshSegments(index_dir, generation, dim, settings, expected_size,
                                                    timer=timer, ann_add=ann_add),
                 np.zeros(0, np.int64), [], [], 0, RunStats(), settings)


@contextmanager
def writing(index_dir: IndexDir) -> Iterator[None]:
    """Turns a failed write into IndexWriteError, leaving the last commit and the journal as they were."""
    try:
        yield
    except OSError as exc:
        index_dir.discard_staging()
        reason = exc.strerror or str(exc)
        raise IndexWriteError(
            f"could not write the index in {index_dir.root}: {reason}; the last committed index is unchanged "
            "and the encoded work is kept for the next run (free disk space or fix permissions, then run again)"
        ) from None
    except BaseException:
        index_dir.discard_staging()
        raise


def commit_state(index_dir: IndexDir, identity: ModelIdentity, previous: Manifest | None, state: StoredState,
                 delta: Delta, compact: bool = False) -> tuple[Manifest, bool]:
    """Make the state after `delta` the committed one; returns (manifest, whether a generation was written).

    `compact` rewrites every segment with deletions and merges the small ones, whatever the thresholds.
    """
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    failures = sorted(delta.failures, key=lambda f: (f.path, f.line or 0, f.modality))
    gone = np.unique(delta.gone)
    segments_before = previous.segments if previous else []
    adding = bool(delta.fresh.pending or delta.fresh.written)
    rewrite = _to_rewrite(segments_before, state, gone, compact, adding)
    counts = _counts_after(previous, state, gone, delta.fresh)
    wordless = _without_words(segments_before, rewrite, previous, delta.settings.get("words"))
    with writing(index_dir):
        if previous is not None and not adding and not len(gone) and not rewrite and not wordless \
                and failures == state.failures:
            index_dir.discard_staging()
            manifest = _manifest(previous.generation, identity, counts, failures, previous.segments, delta,
                                 previous, now)
            index_dir.write_manifest(manifest)
            return manifest, False
        for ref in segments_before:
            if ref.name in rewrite:
                _move_live_rows(index_dir, ref, state.segments.get(ref.name), gone, delta.fresh)
        kept = [_with_deletions(index_dir, delta.generation, ref, state.segments.get(ref.name, np.zeros(0, np.int64)),
                                gone, delta.stats) for ref in segments_before if ref.name not in rewrite]
        kept = [_with_words(index_dir, delta, ref) if ref.name in wordless else ref for ref in kept if ref.live]
        segments = kept + delta.fresh.finish()
        delta.stats.bytes_written += delta.fresh.bytes_written
        write_failures(delta.staging / "failures.parquet", failures)
        delta.stats.bytes_written += folder_size(delta.staging)
        delta.stats.compacted = len(rewrite)
        manifest = _manifest(delta.generation, identity, counts, failures, segments, delta, previous, now)
        index_dir.commit(delta.staging, manifest)
    return manifest, True


def _counts_after(previous: Manifest | None, state: StoredState, gone: np.ndarray,
                  fresh: FreshSegments) -> dict[str, int]:
    counts = {m: (previous.counts.get(m, 0) if previous else 0) + fresh.modality_counts.get(m, 0)
              for m in MODALITIES}
    counts["text"] -= int(np.count_nonzero(np.isin(gone, state.texts.row_ids)))
    counts["image"] -= int(np.count_nonzero(np.isin(gone, state.images.row_ids)))
    gone_set = set(gone.tolist()) if len(gone) < len(state.rows) else None
    for row in state.rows:
        if (row.row_id in gone_set) if gone_set is not None else np.isin(row.row_id, gone):
            counts[row.modality] -= 1
    return counts


MOVE_ROWS = 65_536  # rows moved at once by a compaction: bounds its memory


def _move_live_rows(index_dir: IndexDir, ref: SegmentRef, live: np.ndarray | None, gone: np.ndarray,
                    fresh: FreshSegments) -> None:
    """A rewritten segment's rows that stay: into the new segments, with their vectors."""
    reader = SegmentReader(index_dir.root, ref)
    items = reader.items()
    items = items.filter(pa.array(~np.isin(items.column("row_id").to_numpy(), gone)))
    sets = {vector_set: reader.vectors(vector_set) for vector_set in VECTOR_SETS}
    for start in range(0, len(items), MOVE_ROWS):
        part = items.slice(start, MOVE_ROWS)
        ids = part.column("row_id").to_numpy()
        vectors = {}
        for vector_set, (set_ids, matrix) in sets.items():
            if not len(set_ids):
                continue
            order = np.argsort(set_ids, kind="stable")
            at = np.searchsorted(set_ids, ids, sorter=order).clip(max=len(set_ids) - 1)
            held = set_ids[order[at]] == ids
            rows = np.sort(order[at[held]])
            vectors[vector_set] = (set_ids[rows], np.asarray(matrix[rows], dtype=np.float32))
        fresh.add(part, vectors)


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
             and live_after[s.name] < min(SMALL_SEGMENT_SHARE * total, SEGMENT_ROWS / 2)]
    if len(small) + adding > MAX_SMALL_SEGMENTS or (compact and len(small) > 1):
        rewrite.update(small)
    return rewrite


def _without_words(segments: list[SegmentRef], rewrite: set[str], previous: Manifest | None,
                   words: dict | None) -> set[str]:
    """Kept segments whose words this commit writes: written before words, or by another analysis or columns."""
    if words is None:
        return set()
    stale = previous is None or previous.settings.get("words") != words
    return {ref.name for ref in segments if ref.name not in rewrite and (stale or ref.words is None)}


def _with_words(index_dir: IndexDir, delta: Delta, ref: SegmentRef) -> SegmentRef:
    ref, size = add_words(index_dir.root, ref, delta.generation, delta.settings["words"])
    delta.stats.bytes_written += size
    return ref


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


def _ann_summary(segments: list[SegmentRef]) -> dict[str, AnnSpec]:
    """Per vector set, the ANN of the segment holding most of its vectors (`info` shows it)."""
    summary: dict[str, tuple[int, AnnSpec]] = {}
    for ref in segments:
        for vector_set, held in ref.sets.items():
            if vector_set not in summary or held.count > summary[vector_set][0]:
                summary[vector_set] = (held.count, held.ann)
    return {vector_set: spec for vector_set, (_, spec) in summary.items()}


def _manifest(generation: str, identity: ModelIdentity, counts: dict[str, int], failures: list[Failure],
              segments: list[SegmentRef], new: Delta, previous: Manifest | None, now: str) -> Manifest:
    return Manifest(
        generation=generation,
        model=identity,
        counts=counts,
        failures=len(failures),
        ann=_ann_summary(segments),
        next_row_id=new.next_row_id,
        created_at=previous.created_at if previous else now,
        updated_at=now,
        sources=new.sources,
        settings=new.settings,
        last_run={**new.stats.to_dict(), "finished_at": now},
        segments=segments,
        calibration=new.calibration if new.calibration is not None else previous.calibration if previous else {},
    )
