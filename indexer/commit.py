"""Committing an index's state: rows, vectors and failures become a new generation, atomically.

Readers see the previous commit until the manifest is replaced (store/layout.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import ann
from .errors import IndexWriteError
from .models import ModelIdentity
from .plan import StoredState
from .store import MODALITIES, SETS_OF, VECTOR_SETS, Failure, IndexDir, ItemRow, Manifest
from .store.manifest import Source
from .store.tables import read_embeddings, read_failures, read_item_rows, write_embeddings, write_failures, write_items


@dataclass
class RunStats:
    encoded: int = 0
    reused: int = 0
    resumed: int = 0
    removed: int = 0
    failed: int = 0
    seconds: float = 0.0

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
    """Rows, vectors and failures of the last commit (empty for a new index)."""
    if manifest is None:
        return StoredState()
    generation = index_dir.generation_path(manifest.generation)
    vectors: dict[str, dict[int, np.ndarray]] = {}
    for vector_set in VECTOR_SETS:
        row_ids, matrix = read_embeddings(generation / f"embeddings-{vector_set}.parquet")
        vectors[vector_set] = dict(zip(row_ids.tolist(), matrix))
    rows = read_item_rows(generation / "items.parquet")
    return StoredState(rows, vectors, read_failures(generation / "failures.parquet"), manifest.next_row_id, rows)


def vectors_of(state: StoredState, rows: list[ItemRow]) -> dict[str, dict[int, np.ndarray]]:
    """The stored vectors of `rows`, by vector set."""
    out: dict[str, dict[int, np.ndarray]] = {}
    for row in rows:
        for vector_set in SETS_OF[row.modality]:
            vector = state.vectors.get(vector_set, {}).get(row.row_id)
            if vector is not None:
                out.setdefault(vector_set, {})[row.row_id] = vector
    return out


def commit_state(index_dir: IndexDir, identity: ModelIdentity, previous: Manifest | None, state: StoredState,
                 new: NewState) -> tuple[Manifest, bool]:
    """Make `new` the committed state; returns (manifest, whether a generation was written)."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = sorted(new.rows, key=lambda r: r.row_id)
    failures = sorted(new.failures, key=lambda f: (f.path, f.line or 0, f.modality))
    unchanged = previous is not None and rows == sorted(state.rows, key=lambda r: r.row_id) \
        and failures == state.failures
    try:
        if unchanged:
            manifest = _manifest(previous.generation, identity, rows, failures, previous.ann, new, previous, now)
            index_dir.write_manifest(manifest)
            return manifest, False
        generation, staging = index_dir.new_staging()
        ann_specs = _write_generation_files(staging, index_dir, previous, state, rows, new.vectors, failures,
                                            identity.dim, new.settings.get("index_type", "auto"))
        manifest = _manifest(generation, identity, rows, failures, ann_specs, new, previous, now)
        index_dir.commit(staging, manifest)
    except OSError as exc:
        index_dir.discard_staging()
        reason = exc.strerror or str(exc)
        raise IndexWriteError(
            f"could not write the index in {index_dir.root}: {reason}; the last committed index is unchanged "
            "and the encoded work is kept for the next run (free disk space or fix permissions, then run again)"
        ) from None
    return manifest, True


def _write_generation_files(staging: Path, index_dir: IndexDir, previous: Manifest | None, state: StoredState,
                            rows: list[ItemRow], vectors: dict[str, dict[int, np.ndarray]],
                            failures: list[Failure], dim: int, index_type: str) -> dict:
    ann_specs = {}
    for vector_set in VECTOR_SETS:
        by_id = vectors.get(vector_set, {})
        row_ids = np.array(sorted(by_id), dtype=np.int64)
        matrix = (np.stack([by_id[i] for i in row_ids.tolist()]).astype(np.float32) if len(row_ids)
                  else np.zeros((0, dim), np.float32))
        write_embeddings(staging / f"embeddings-{vector_set}.parquet", row_ids, matrix)
        if len(row_ids):
            index = _updated_ann(index_dir, previous, state, vector_set, matrix, row_ids, index_type)
            index.save(staging / f"{vector_set}.faiss")
            ann_specs[vector_set] = index.spec
    write_items(staging / "items.parquet", rows)
    write_failures(staging / "failures.parquet", failures)
    return ann_specs


def _updated_ann(index_dir, previous, state, vector_set, matrix, row_ids, requested) -> ann.VectorIndex:
    old_ids = set(state.vectors.get(vector_set, {}))
    new_ids = set(row_ids.tolist())
    added = np.array(sorted(new_ids - old_ids), dtype=np.int64)
    removed = np.array(sorted(old_ids - new_ids), dtype=np.int64)
    previous_index = None
    if previous is not None and vector_set in previous.ann:
        path = index_dir.generation_path(previous.generation) / f"{vector_set}.faiss"
        previous_index = ann.VectorIndex.load(path, previous.ann[vector_set])
    return ann.build_or_update(previous_index, matrix, row_ids, added, removed, requested)


def _manifest(generation: str, identity: ModelIdentity, rows: list[ItemRow], failures: list[Failure],
              ann_specs: dict, new: NewState, previous: Manifest | None, now: str) -> Manifest:
    return Manifest(
        generation=generation,
        model=identity,
        counts={m: sum(r.modality == m for r in rows) for m in MODALITIES},
        failures=len(failures),
        ann=ann_specs,
        next_row_id=new.next_row_id,
        created_at=previous.created_at if previous else now,
        updated_at=now,
        sources=new.sources,
        settings=new.settings,
        last_run={**new.stats.to_dict(), "finished_at": now},
    )
