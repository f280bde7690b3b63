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
from typing import Any, Callable

import numpy as np

from ..errors import InvalidInputError
from .manifest import AnnSpec

INDEX_TYPES = ("auto", "flat", "hnsw", "ivf")
EXACT_UP_TO = 100_000  # exact search of 100k x 512 answers in about 1 ms a query on 2 cores
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 128  # recall@10 0.99 on tests/test_ann.py clustered data (64 gave 0.95)
IVF_MIN_POINTS_PER_LIST = 39  # faiss warns below this many training points per centroid
IVF_FIRST_NPROBE = 4  # tuning starts here and doubles until the recall target is met
TUNING_QUERIES = 200  # stored vectors used as queries to choose nprobe
TARGET_RECALL = 0.97  # recall@10 against exact search, on the collection's own vectors, that nprobe must reach
CODES = ("flat", "sq8", "pq")  # how IVF lists hold vectors: float32, one byte a dimension, product-quantised
BUDGET_SHARE = 0.5  # of a memory budget, what the ANN indexes may take (items, queries and Python need the rest)
RERANK = 4  # with compressed codes, k x this many candidates are re-scored exactly from the stored vectors...
RERANK_MAX = 64  # ...more where the codes are too coarse for the recall target
PQ_MIN_POINTS = 256 * IVF_MIN_POINTS_PER_LIST  # PQ trains 256 centroids per sub-quantiser; fewer points: SQ8
TIE_MARGIN = 8  # extra neighbours fetched so that ties at the k-th place can be broken by row id
FILTERED_EF_MAX = 4096  # HNSW breadth for narrow filters (narrower ones are scored exactly by the engine)


def choose_ann(count: int, requested: str = "auto", dim: int = 512, memory_budget: int | None = None) -> AnnSpec:
    """The index for `count` vectors: exact while that is fast, else IVF whose codes fit `memory_budget` bytes."""
    if requested not in INDEX_TYPES:
        raise InvalidInputError(f"unknown index type {requested!r}; use one of {', '.join(INDEX_TYPES)}")
    kind = requested
    if kind == "auto":
        kind = "flat" if count <= EXACT_UP_TO else "ivf"
    if kind == "hnsw":
        return AnnSpec("hnsw", {"M": HNSW_M, "efSearch": HNSW_EF_SEARCH})
    if kind == "ivf":
        nlist = max(1, min(int(math.sqrt(max(count, 1))), count // IVF_MIN_POINTS_PER_LIST or 1))
        params = {"nlist": nlist, "nprobe": min(nlist, IVF_FIRST_NPROBE)}
        codes = choose_codes(count, dim, memory_budget)
        if codes != "flat":
            params.update(codes=codes, rerank=RERANK, **({"pq_m": pq_size(dim)} if codes == "pq" else {}))
        return AnnSpec("ivf", params)
    return AnnSpec("flat", {})


def choose_codes(count: int, dim: int, memory_budget: int | None) -> str:
    """The most exact IVF codes whose lists fit in BUDGET_SHARE of the budget (the smallest if none does)."""
    if memory_budget is None:
        return "flat"
    for codes in CODES:
        if count * code_bytes(codes, dim) <= BUDGET_SHARE * memory_budget:
            return codes
    return "pq" if count >= PQ_MIN_POINTS else "sq8"  # a segment this small is small in any code


def code_bytes(codes: str, dim: int) -> int:
    """Bytes an IVF list spends on one vector: its code and its 8-byte id."""
    return 8 + {"flat": 4 * dim, "sq8": dim, "pq": pq_size(dim)}[codes]


def pq_size(dim: int) -> int:
    """Sub-quantisers for PQ: one per 8 dimensions (64 bytes for 512-d), a divisor of `dim`."""
    return max(m for m in range(1, max(dim // 8, 1) + 1) if dim % m == 0)


def parse_memory(text: str) -> int:
    """'4G', '512M', '800000K' or a number of bytes."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    try:
        if cleaned and cleaned[-1] in units:
            return int(float(cleaned[:-1]) * units[cleaned[-1]])
        return int(cleaned)
    except ValueError:
        raise InvalidInputError(f"cannot read memory budget {text!r}; write it like 4G, 512M or 800000K") from None


def gpu_count() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


VectorAdder = Callable[[Any, np.ndarray, np.ndarray], Any]  # (trained index, vectors, row ids) -> filled index


def add_here(index, vectors: np.ndarray, row_ids: np.ndarray):
    index.add_with_ids(vectors, np.asarray(row_ids, dtype=np.int64))
    return index


@dataclass
class SearchResult:
    """Scores and row ids of one query, best first, FAISS's -1 padding removed."""

    scores: np.ndarray
    row_ids: np.ndarray


class VectorIndex:
    def __init__(self, index, spec: AnnSpec):
        self._index = index
        self.spec = spec
        self._excluding = None  # (the deletion list, its search parameters)
        self.path: Path | None = None  # the file it was mapped from
        self._apply_search_params()

    @classmethod
    def build(cls, vectors: np.ndarray, row_ids: np.ndarray, spec: AnnSpec,
              add: "VectorAdder | None" = None) -> "VectorIndex":
        """`add`: fills a trained IVF index elsewhere (ray_engine.add_in_shards); other kinds add here."""
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        dim = vectors.shape[1]
        on_gpus = spec.kind == "ivf" and gpu_count() > 0
        if on_gpus:
            index = _ivf_built_on_gpus(_ivf(dim, spec), vectors, row_ids)
        elif spec.kind == "ivf":
            index = _ivf(dim, spec)
            index.train(vectors)
        elif spec.kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dim, spec.params["M"], faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index = faiss.IndexIDMap2(inner)
        else:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        if not on_gpus:
            index = (add if add is not None and spec.kind == "ivf" else add_here)(index, vectors, row_ids)
        if spec.kind == "ivf":
            spec = _tuned(faiss.extract_index_ivf(index), vectors, row_ids,
                          AnnSpec("ivf", {**spec.params, "trained_on": len(vectors)}))
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
            params = self._excluding_params(excluded)
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
        return self._params_with(selector, share, keep_alive=(selector, allowed))

    def _excluding_params(self, excluded: np.ndarray):
        """Search parameters that skip `excluded` (few, as compaction keeps them under a fifth).

        Built once per deletion list: a segment's deletions do not change while it is open.
        """
        import faiss

        if self._excluding is not None and self._excluding[0] is excluded:
            return self._excluding[1]
        key, excluded = excluded, np.asarray(excluded, dtype=np.int64)
        inner = faiss.IDSelectorBatch(excluded)
        selector = faiss.IDSelectorNot(inner)
        params = self._params_with(selector, 1.0, keep_alive=(selector, inner, excluded))
        self._excluding = (key, params)
        return params

    def _params_with(self, selector, share: float, keep_alive: tuple):
        """This index's search knobs with a selector; `share` of the rows admitted widens approximate searches."""
        import faiss

        if self.spec.kind == "hnsw":
            ef = int(min(FILTERED_EF_MAX, max(self.spec.params["efSearch"], self.spec.params["efSearch"] / share)))
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=ef)
        elif self.spec.kind == "ivf":
            nlist, nprobe = self.spec.params["nlist"], self.spec.params["nprobe"]
            params = faiss.SearchParametersIVF(sel=selector, nprobe=int(min(nlist, math.ceil(nprobe / share))))
        else:
            params = faiss.SearchParameters(sel=selector)
        params.keep_alive = keep_alive  # faiss holds raw pointers: keep what they point to
        return params

    def warm(self) -> None:
        """Read the mapped file once, so that searches find its pages in memory instead of on disk."""
        if self.path is None:
            return
        with open(self.path, "rb") as handle:
            while handle.read(1 << 24):
                pass

    def save(self, path: Path) -> None:
        import faiss

        faiss.write_index(_to_cpu(self._index), str(path))

    @classmethod
    def load(cls, path: Path, spec: AnnSpec) -> "VectorIndex":
        import faiss

        # Memory-mapped: opening costs nothing, and a search pages in only the lists (or codes) it reads.
        loaded = cls(faiss.read_index(str(path), faiss.IO_FLAG_MMAP), spec)  # a magic value, not a bit: use alone
        loaded.path = Path(path)  # search knobs set on the CPU copy travel with it
        if spec.kind in ("flat", "ivf"):  # faiss has no GPU HNSW
            loaded._index = _to_gpu(loaded._index)
        return loaded

    def _apply_search_params(self) -> None:
        import faiss

        if self.spec.kind == "hnsw":
            faiss.downcast_index(self._index.index).hnsw.efSearch = self.spec.params["efSearch"]
        elif self.spec.kind == "ivf":
            faiss.extract_index_ivf(self._index).nprobe = self.spec.params["nprobe"]


def _ivf(dim: int, spec: AnnSpec):
    import faiss

    nlist, codes = spec.params["nlist"], spec.params.get("codes", "flat")
    if codes == "flat":
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    held = "SQ8" if codes == "sq8" else f"PQ{spec.params['pq_m']}"
    index = faiss.index_factory(dim, f"IVF{nlist},{held}", faiss.METRIC_INNER_PRODUCT)
    if codes == "pq":
        # Polysemous training orders codes for Hamming filtering, which no search here uses; it was 85% of
        # the training time (95 of 113 s for 300k vectors on 2 cores).
        faiss.downcast_index(index).do_polysemous_training = False
    return index


def _tuned(index, vectors: np.ndarray, row_ids: np.ndarray, spec: AnnSpec) -> AnnSpec:
    """nprobe (and, for compressed codes, the re-rank depth) measured to reach TARGET_RECALL.

    Measured like autofaiss does: recall@10 against exact search, after the re-rank searches will do,
    for queries near but not on the collection's vectors (a sample moved to cosine TUNING_QUERY_COSINE
    of itself): a stored vector as a query finds its own list, and overstated recall on real vectors
    (0.97 tuned, 0.82 for held-out queries on the tiny model's). It depends on how clustered the data is,
    so no fixed value suits all.
    """
    rng = np.random.default_rng(0)
    sample = _moved(vectors[rng.choice(len(vectors), min(TUNING_QUERIES, len(vectors)), replace=False)], rng)
    k = min(10, len(vectors))
    row_ids = np.asarray(row_ids, dtype=np.int64)
    exact = row_ids[_exact_top(sample, vectors, k)].tolist()
    rerank = spec.params.get("rerank", 1)
    while True:
        nprobe = spec.params["nprobe"]
        while True:
            recall = _recall(index, nprobe, rerank, sample, vectors, row_ids, exact, k)
            if recall >= TARGET_RECALL or nprobe >= index.nlist:
                break
            nprobe = min(index.nlist, nprobe * 2)
        if recall >= TARGET_RECALL or rerank == 1 or rerank >= RERANK_MAX:
            tuned = {**spec.params, "nprobe": nprobe, "tuned_recall_at_10": round(recall, 4)}
            return AnnSpec(spec.kind, tuned | ({"rerank": rerank} if rerank > 1 else {}))
        rerank *= 2


TUNING_QUERY_COSINE = 0.8  # as far from its nearest item as a held-out query of the tiny model's (measured)


def _moved(sample: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each vector turned to cosine TUNING_QUERY_COSINE of itself, in a random direction."""
    noise = rng.standard_normal(sample.shape).astype(np.float32)
    noise -= (noise * sample).sum(axis=1, keepdims=True) * sample / np.maximum(
        (sample * sample).sum(axis=1, keepdims=True), 1e-12)
    noise /= np.maximum(np.linalg.norm(noise, axis=1, keepdims=True), 1e-12)
    norms = np.linalg.norm(sample, axis=1, keepdims=True)
    return (TUNING_QUERY_COSINE * sample + np.sqrt(1 - TUNING_QUERY_COSINE ** 2) * noise * norms).astype(np.float32)


TUNING_CHUNK = 65_536  # vectors scored at once: a 1M-vector segment's tuning needs MBs, not GBs


def _exact_top(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    """Positions of each query's k best vectors (unordered), scored a chunk at a time."""
    best_scores = np.full((len(queries), 0), -np.inf, np.float32)
    best = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(vectors), TUNING_CHUNK):
        chunk = vectors[start:start + TUNING_CHUNK]
        scores = np.concatenate([best_scores, queries @ chunk.T], axis=1)
        here = np.broadcast_to(np.arange(start, start + len(chunk)), (len(queries), len(chunk)))
        positions = np.concatenate([best, here], axis=1)
        keep = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best_scores, best = np.take_along_axis(scores, keep, 1), np.take_along_axis(positions, keep, 1)
    return best


def _recall(index, nprobe: int, rerank: int, sample, vectors, row_ids, exact, k: int) -> float:
    index.nprobe = nprobe
    _, found = index.search(sample, min(len(vectors), k * rerank))
    if rerank > 1:
        order = np.argsort(row_ids)
        vectors_of = lambda ids: vectors[order[np.searchsorted(row_ids, ids, sorter=order)]]  # noqa: E731
        found = [rescored(ids[ids >= 0], query, vectors_of, k) for ids, query in zip(found, sample)]
    return float(np.mean([len(set(np.asarray(f)[:k].tolist()) & set(e)) / k for f, e in zip(found, exact)]))


def rescored(ids: np.ndarray, query: np.ndarray, vectors_of, k: int) -> np.ndarray:
    """The k best of candidate `ids` by exact score (equal scores by row id)."""
    scores = vectors_of(ids) @ query
    return ids[np.lexsort((ids, -scores))[:k]]


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


def _ivf_built_on_gpus(index, vectors: np.ndarray, row_ids: np.ndarray):
    """Train the quantisers and add the vectors on every GPU faiss sees (k-means is most of a build), then
    bring the index back: it is stored, and opened, like one built on the CPU."""
    import faiss

    on_gpus = faiss.index_cpu_to_all_gpus(index)
    on_gpus.train(vectors)
    on_gpus.add_with_ids(vectors, np.asarray(row_ids, dtype=np.int64))
    return faiss.index_gpu_to_cpu(on_gpus)


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
