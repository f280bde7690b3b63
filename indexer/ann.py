"""The ANN backend: FAISS behind a small interface (build, search, save, load).

Vectors are L2-normalised, so inner product is cosine similarity. FAISS ids are
the items' row ids (IndexIDMap2 or IVF's own ids), never positions. Whether a
GPU is used is decided here and nowhere else; files are always written from a
CPU copy so any machine can load them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InvalidInputError
from .store.manifest import AnnSpec

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf")
EXACT_UP_TO = 100_000  # exact search of 100k x 512 answers in about 1 ms a query on 2 cores
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 128  # recall@10 0.99 on tests/test_ann.py clustered data (64 gave 0.95)
IVF_MIN_POINTS_PER_LIST = 39  # faiss warns below this many training points per centroid
IVF_DRIFT = 2.0
TIE_MARGIN = 8  # extra neighbours fetched so that ties at the k-th place can be broken by row id
FILTERED_EF_MAX = 4096  # HNSW breadth for narrow filters (narrower ones are scored exactly by the engine)  # retrain when the collection grew or shrank by this factor since training


def choose_ann(count: int, requested: str = "auto") -> AnnSpec:
    if requested not in INDEX_TYPES:
        raise InvalidInputError(f"unknown index type {requested!r}; use one of {', '.join(INDEX_TYPES)}")
    kind = requested
    if kind == "auto":
        kind = "flat" if count <= EXACT_UP_TO else "ivf"
    if kind == "hnsw":
        return AnnSpec("hnsw", {"M": HNSW_M, "efSearch": HNSW_EF_SEARCH})
    if kind == "ivf":
        nlist = max(1, min(int(4 * math.sqrt(max(count, 1))), count // IVF_MIN_POINTS_PER_LIST or 1))
        return AnnSpec("ivf", {"nlist": nlist, "nprobe": min(nlist, max(8, nlist // 16))})
    return AnnSpec("flat", {})


def gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


@dataclass
class SearchResult:
    """Scores and row ids of one query, best first, FAISS's -1 padding removed."""

    scores: np.ndarray
    row_ids: np.ndarray


class VectorIndex:
    def __init__(self, index, spec: AnnSpec):
        self._index = index
        self.spec = spec
        self._apply_search_params()

    @classmethod
    def build(cls, vectors: np.ndarray, row_ids: np.ndarray, spec: AnnSpec) -> "VectorIndex":
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        dim = vectors.shape[1]
        if spec.kind == "ivf":
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, spec.params["nlist"], faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
        elif spec.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dim, spec.params["M"], faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index = faiss.IndexIDMap2(inner)
        else:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        index.add_with_ids(vectors, np.asarray(row_ids, dtype=np.int64))
        if spec.kind == "ivf":
            spec = AnnSpec("ivf", {**spec.params, "trained_on": len(vectors)})
        return cls(index, spec)

    def can_update(self, new_count: int, removing: bool) -> bool:
        """Whether adding/removing in place keeps this index as good as a rebuild."""
        if self.spec.kind == "ivf":
            trained_on = self.spec.params.get("trained_on", len(self))
            return trained_on / IVF_DRIFT <= new_count <= trained_on * IVF_DRIFT
        if self.spec.kind == "hnsw":
            return not removing  # faiss HNSW cannot delete
        return False  # flat: a rebuild is a copy, as cheap as an update

    def update(self, vectors: np.ndarray, row_ids: np.ndarray, removed_ids: np.ndarray) -> None:
        import faiss

        if len(removed_ids):
            self._index.remove_ids(faiss.IDSelectorBatch(np.asarray(removed_ids, dtype=np.int64)))
        if len(row_ids):
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                     np.asarray(row_ids, dtype=np.int64))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[SearchResult]:
        """The k best per query, among the `allowed` row ids if given (a filter applied inside the search).

        Equal scores rank by row id, so the same query always gives the same hits.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        total = len(self) if allowed is None else min(len(self), len(allowed))
        k = min(k, total)
        if k == 0:
            empty = SearchResult(np.zeros(0, np.float32), np.zeros(0, np.int64))
            return [empty for _ in range(len(queries))]
        params = None if allowed is None else self._filtered_params(np.asarray(allowed, dtype=np.int64))
        fetch = min(total, k + TIE_MARGIN)
        while True:
            scores, ids = self._index.search(queries, fetch, params=params)
            if fetch == total or not _tie_at_the_edge(scores, ids, k):
                break
            fetch = min(total, fetch * 4)  # items tied with the k-th may lie beyond what was fetched
        return [_ranked(row_scores, row_ids, k) for row_scores, row_ids in zip(scores, ids)]

    def _filtered_params(self, allowed: np.ndarray):
        """Search parameters that admit only `allowed`; approximate indexes look wider as the filter narrows."""
        import faiss

        selector = faiss.IDSelectorBatch(allowed)
        share = max(len(allowed) / max(len(self), 1), 1e-6)
        if self.spec.kind == "hnsw":
            ef = int(min(FILTERED_EF_MAX, max(self.spec.params["efSearch"], self.spec.params["efSearch"] / share)))
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
        elif self.spec.kind == "ivf":
            nlist, nprobe = self.spec.params["nlist"], self.spec.params["nprobe"]
            params = faiss.SearchParametersIVF(sel=selector, nprobe=int(min(nlist, math.ceil(nprobe / share))))
        else:
            params = faiss.SearchParameters(sel=selector)
        params.keep_alive = (selector, allowed)  # faiss holds raw pointers: keep what they point to
        return params

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(_to_cpu(self._index), str(path))

    @classmethod
    def load(cls, path: Path, spec: AnnSpec) -> "VectorIndex":
        import faiss

        loaded = cls(faiss.read_index(str(path)), spec)  # search knobs set on the CPU copy travel with it
        if spec.kind in ("flat", "ivf"):  # faiss has no GPU HNSW
            loaded._index = _to_gpu(loaded._index)
        return loaded

    def _apply_search_params(self) -> None:
        import faiss

        if self.spec.kind == "hnsw":
            faiss.downcast_index(self._index.index).hnsw.efSearch = self.spec.params["efSearch"]
        elif self.spec.kind == "ivf":
            faiss.extract_index_ivf(self._index).nprobe = self.spec.params["nprobe"]


def _tie_at_the_edge(scores: np.ndarray, ids: np.ndarray, k: int) -> bool:
    """Whether some query's k-th score equals its last fetched one (more equal scores may follow)."""
    for row_scores, row_ids in zip(scores, ids):
        valid = row_scores[row_ids >= 0]
        if len(valid) > k and valid[k - 1] == valid[-1]:
            return True
    return False


def _ranked(scores: np.ndarray, ids: np.ndarray, k: int) -> SearchResult:
    keep = ids >= 0
    scores, ids = scores[keep], ids[keep]
    order = np.lexsort((ids, -scores))[:k]  # score descending, then row id ascending
    return SearchResult(scores[order], ids[order])


def build_or_update(previous: VectorIndex | None, vectors: np.ndarray, row_ids: np.ndarray,
                    added: np.ndarray, removed: np.ndarray, requested: str) -> VectorIndex:
    """Update `previous` in place where that is as good as a rebuild; otherwise build anew.

    `vectors`/`row_ids` are the whole collection; `added` and `removed` are row ids.
    """
    spec = choose_ann(len(row_ids), requested)
    if previous is not None and previous.spec.kind == spec.kind and previous.can_update(len(row_ids), len(removed) > 0):
        positions = {int(r): i for i, r in enumerate(row_ids)}
        take = [positions[int(r)] for r in added]
        previous.update(vectors[take], np.asarray(added, dtype=np.int64), removed)
        return previous
    return VectorIndex.build(vectors, row_ids, spec)


def _to_gpu(index):
    """Search on every GPU faiss sees; indexes are built and stored on the CPU."""
    if gpu_count() == 0:
        return index
    import faiss

    return faiss.index_cpu_to_all_gpus(index)


def _to_cpu(index):
    if gpu_count() == 0:
        return index
    import faiss

    return faiss.index_gpu_to_cpu(index)
