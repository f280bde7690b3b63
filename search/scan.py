"""Scanning one segment's vectors on a GPU: a shortlist per query, which the stored vectors then re-score.

A scan holds the vectors on the device (fp16 for torch on a GPU: one pass over 1M x 512 is 1 GB) and
returns each query's best `count` rows by its own scores. Those scores are rounded (fp16: each vector's
components to 11 bits, so a dot product of unit vectors is off by at most ERROR_BOUND); the caller scores
the shortlist exactly in float32 from the stored vectors and accepts it only where no row outside it could
have beaten the k-th best (search/vectors.py: VectorPart.exact). The answer is therefore the exact one.
"""
from __future__ import annotations

from typing import Protocol

import numpy as np

# fp16 rounding of both unit vectors (2 x 2^-11 relative, summed over |q_i m_i| <= 1) and of the score
# (2^-11): 1.5e-3, doubled for safety.
FP16_ERROR_BOUND = 3e-3
SCORES_AT_ONCE = 1 << 27  # query x row scores held on the device at once (256 MB in fp16)


class Scan(Protocol):
    rows: int
    error_bound: float  # how far a shortlist score may be from the exact one, for unit vectors
    filters: bool  # whether `shortlist` takes an `admitted` mask (else filtered queries are scanned on the CPU)

    def shortlist(self, queries: np.ndarray, count: int,
                  admitted: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]: ...


class TorchScan:
    """Vectors resident on a torch device; scores in matrix products, kept by top-k on the device."""

    def __init__(self, matrix: np.ndarray, live: np.ndarray | None, device: str, half: bool | None = None):
        import torch

        self._torch, self.device, self.rows, self.filters = torch, device, len(matrix), True
        half = device != "cpu" if half is None else half  # CPUs have no fast fp16 matrix products
        self._dtype = torch.float16 if half else torch.float32
        self.error_bound = FP16_ERROR_BOUND if half else 1e-5
        self._matrix = torch.empty((len(matrix), matrix.shape[1]), dtype=self._dtype, device=device)
        for start in range(0, len(matrix), 65_536):  # bounded host memory for a memory-mapped float16 file
            block = np.array(matrix[start:start + 65_536], dtype=np.float32)  # writable, as torch wants
            self._matrix[start:start + len(block)] = torch.from_numpy(block).to(device, self._dtype)
        self._live = None if live is None else torch.from_numpy(np.asarray(live, bool)).to(device)

    def shortlist(self, queries: np.ndarray, count: int,
                  admitted: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(positions, scores), each (queries, count): every query's best rows; -inf scores are padding.

        `admitted`: a boolean mask over the rows (live rows only); None: every live row.
        """
        torch = self._torch
        mask = self._live if admitted is None else torch.from_numpy(np.asarray(admitted, bool)).to(self.device)
        query = torch.from_numpy(np.ascontiguousarray(queries, np.float32)).to(self.device, self._dtype)
        count = min(count, self.rows)
        step = max(count, SCORES_AT_ONCE // max(1, len(queries)))
        best_scores, best_rows = [], []
        with torch.inference_mode():
            for start in range(0, self.rows, step):
                scores = query @ self._matrix[start:start + step].T
                if mask is not None:
                    scores.masked_fill_(~mask[start:start + step], float("-inf"))
                top = torch.topk(scores, min(count, scores.shape[1]), dim=1)
                best_scores.append(top.values.float())
                best_rows.append(top.indices + start)
            scores, rows = torch.cat(best_scores, dim=1), torch.cat(best_rows, dim=1)
            if scores.shape[1] > count:
                top = torch.topk(scores, count, dim=1)
                scores, rows = top.values, torch.gather(rows, 1, top.indices)
        return rows.cpu().numpy().astype(np.int64), scores.cpu().numpy()


class FaissScan:
    """A flat inner-product faiss index over the live vectors, on the GPU where faiss-gpu sees one.

    faiss's GPU indexes take no ID selectors, so there a filtered query is scanned on the CPU instead.
    """

    def __init__(self, matrix: np.ndarray, live: np.ndarray | None, on_gpu: bool):
        import faiss

        self.rows, self.filters = len(matrix), not on_gpu
        self._positions = np.arange(len(matrix)) if live is None else np.flatnonzero(live)
        index = faiss.IndexFlatIP(matrix.shape[1])
        if on_gpu:
            options = faiss.GpuClonerOptions()
            options.useFloat16 = True
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index, options)
            self.error_bound = FP16_ERROR_BOUND
        else:
            self.error_bound = 1e-5
        for start in range(0, len(self._positions), 65_536):
            index.add(np.asarray(matrix[self._positions[start:start + 65_536]], dtype=np.float32))
        self._index = index

    def shortlist(self, queries: np.ndarray, count: int,
                  admitted: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        import faiss

        params = None
        if admitted is not None:  # positions of the index's own rows (the live ones) that are admitted
            chosen = np.flatnonzero(np.asarray(admitted, bool)[self._positions]).astype(np.int64)
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(chosen))
        count = min(count, len(self._positions))
        if count == 0:
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        scores, found = self._index.search(np.ascontiguousarray(queries, np.float32), count, params=params)
        scores = np.where(found < 0, -np.inf, scores).astype(np.float32)
        return self._positions[np.maximum(found, 0)].astype(np.int64), scores


def make_scan(matrix: np.ndarray, live: np.ndarray | None, engine: str, device: str) -> Scan:
    if engine == "faiss-gpu":
        return FaissScan(matrix, live, on_gpu=device != "cpu")
    return TorchScan(matrix, live, device)
