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
IVF_FIRST_NPROBE = 4  # tuning starts here and doubles until the recall target is met
TUNING_QUERIES = 200  # stored vectors used as queries to choose nprobe
TARGET_RECALL = 0.97  # recall@10 against exact search, on the collection's own vectors, that nprobe must reach
TIE_MARGIN = 8  # extra neighbours fetched so that ties at the k-th place can be broken by row id
FILTERED_EF_MAX = 4096  # HNSW breadth for narrow filters (narrower ones are scored exactly by the engine)


def choose_ann(count: int, requested: str = "auto") -> AnnSpec:
    if requested not in INDEX_TYPES:
        raise InvalidInputError(f"unknown index type {requested!r}; use one of {', '.join(INDEX_TYPES)}")
    kind = requested
    if kind == "auto":
        kind = "flat" if count <= EXACT_UP_TO else "ivf"
    if kind == "hnsw":
        return AnnSpec("hnsw", {"M": HNSW_M, "efSearch": HNSW_EF_SEARCH})
    if kind == "ivf":
        nlist = max(1, min(int(math.sqrt(max(count, 1))), count // IVF_MIN_POINTS_PER_LIST or 1))
        return AnnSpec("ivf", {"nlist": nlist, "nprobe": min(nlist, IVF_FIRST_NPROBE)})
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
            nprobe, recall = _tuned_nprobe(faiss.extract_index_ivf(index), vectors, row_ids,
                                           spec.params["nprobe"])
            spec = AnnSpec("ivf", {**spec.params, "nprobe": nprobe, "trained_on": len(vectors),
                                   "tuned_recall_at_10": recall})
        return cls(index, spec)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None,
               excluded: np.ndarray | None = None) -> list[SearchResult]:
        """The k best per query, among the `allowed` row ids if given (a filter applied inside the search),
        skipping `excluded` ones (a segment's deleted rows).

        Equal scores rank by row id, so the same query always gives the same hits.
        """
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if allowed is None and excluded is not None and len(excluded):
            total = len(self) - len(excluded)
            params = self._excluding_params(np.asarray(excluded, dtype=np.int64))
        else:
            total = len(self) if allowed is None else min(len(self), len(allowed))
            params = None if allowed is None else self._filtered_params(np.asarray(allowed, dtype=np.int64))
        k = min(k, total)
        if k <= 0:
            empty = SearchResult(np.zeros(0, np.float32), np.zeros(0, np.int64))
            return [empty for _ in range(len(queries))]
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

    def _excluding_params(self, excluded: np.ndarray):
        """Search parameters that skip `excluded` (few, as compaction keeps them under a fifth)."""
        import faiss

        inner = faiss.IDSelectorBatch(excluded)
        selector = faiss.IDSelectorNot(inner)
        if self.spec.kind == "hnsw":
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=self.spec.params["efSearch"])
        elif self.spec.kind == "ivf":
            params = faiss.SearchParametersIVF(sel=selector, nprobe=self.spec.params["nprobe"])
        else:
            params = faiss.SearchParameters(sel=selector)
        params.keep_alive = (selector, inner, excluded)  # faiss holds raw pointers: keep what they point to
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


def _tuned_nprobe(index, vectors: np.ndarray, row_ids: np.ndarray, nprobe: int) -> tuple[int, float]:
    """The smallest nprobe (doubling) whose recall@10 on a sample of the vectors reaches TARGET_RECALL.

    Measured like autofaiss does, against exact search; recall depends on how clustered the data is,
    so no fixed nprobe suits every collection.
    """
    sample = vectors[np.random.default_rng(0).choice(len(vectors), min(TUNING_QUERIES, len(vectors)), replace=False)]
    k = min(10, len(vectors))
    exact = np.asarray(row_ids)[np.argpartition(-(sample @ vectors.T), k - 1, axis=1)[:, :k]]
    while True:
        index.nprobe = nprobe
        _, found = index.search(sample, k)
        recall = float(np.mean([len(set(f) & set(e)) / k for f, e in zip(found.tolist(), exact.tolist())]))
        if recall >= TARGET_RECALL or nprobe >= index.nlist:
            return nprobe, round(recall, 4)
        nprobe = min(index.nlist, nprobe * 2)


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
