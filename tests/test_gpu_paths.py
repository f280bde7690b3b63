"""The GPU code paths' logic, on the CPU: device and precision choice, search placement, and the device
scans (torch, faiss) against the exact numpy oracle, fp16 rounding included."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import env_with_tests_path
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.errors import InvalidInputError
from xmodal.indexer.models import device as device_module
from xmodal.indexer.models.device import precision_for, resolve_device
from xmodal.search import placement as placement_module
from xmodal.search.engine import open_index
from xmodal.search.placement import SearchPlacement, choose_placement
from xmodal.search.scan import FaissScan, TorchScan
from xmodal.search.vectors import StoredVectors, VectorPart

TORCH_HERE = SearchPlacement("cpu", "torch", "test: torch scans on CPU tensors")


# ---- which device, which precision ------------------------------------------------------------------------

def _gpus(monkeypatch, cuda: bool, mps: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize("cuda,mps,chosen", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_auto_prefers_cuda_then_apples_gpu_then_the_cpu(monkeypatch, cuda, mps, chosen):
    _gpus(monkeypatch, cuda, mps)
    assert resolve_device("auto") == resolve_device(None) == chosen


def test_asking_for_a_gpu_that_is_not_there_says_what_to_use(monkeypatch):
    _gpus(monkeypatch, False, False)
    with pytest.raises(InvalidInputError, match="asked for, but torch sees no CUDA GPU; use device='cpu'"):
        resolve_device("cuda:1")
    with pytest.raises(InvalidInputError, match="no Apple GPU"):
        resolve_device("mps")
    with pytest.raises(InvalidInputError, match="unknown device 'tpu'"):
        resolve_device("tpu")


def test_gpus_encode_in_fp16_and_cpus_in_fp32():
    assert [precision_for(d) for d in ("cuda", "cuda:1", "mps", "cpu")] == ["fp16", "fp16", "fp16", "fp32"]


# ---- where searches scan ----------------------------------------------------------------------------------

def test_placement_follows_what_faiss_and_torch_see(monkeypatch):
    monkeypatch.setattr(placement_module, "gpu_possible", lambda: True)
    monkeypatch.setattr(placement_module, "faiss_gpu_count", lambda: 0)
    _gpus(monkeypatch, False, False)
    assert choose_placement("auto") == SearchPlacement("cpu", "numpy", "torch sees no GPU")
    _gpus(monkeypatch, True, False)
    assert choose_placement("auto") == SearchPlacement("cuda", "torch", "faiss has no GPU support installed")
    assert choose_placement("cuda:1").device == "cuda:1"
    monkeypatch.setattr(placement_module, "faiss_gpu_count", lambda: 2)
    assert choose_placement("auto") == SearchPlacement("cuda", "faiss-gpu", "faiss sees 2 GPU(s)")
    assert choose_placement("cpu").engine == "numpy"
    _gpus(monkeypatch, False, True)
    monkeypatch.setattr(placement_module, "faiss_gpu_count", lambda: 0)
    assert choose_placement("auto") == SearchPlacement("mps", "torch", "Apple GPU")


def test_auto_placement_does_not_import_torch_on_a_machine_without_a_gpu():
    code = ("import sys; from xmodal.search.placement import choose_placement, gpu_possible; "
            "print(gpu_possible(), choose_placement('auto').describe(), 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=env_with_tests_path())
    assert out.returncode == 0, out.stderr
    if out.stdout.startswith("True"):
        pytest.fail(f"this machine looks as if it had a GPU: {out.stdout}")  # CI machines have none
    assert out.stdout.strip() == "False numpy on cpu (no GPU on this machine) False"


# ---- device scans against the exact oracle ----------------------------------------------------------------

def _clustered(rows: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    vectors = centres[rng.integers(0, 20, rows)] + 0.3 * rng.normal(size=(rows, dim))
    vectors[5:15] = vectors[4]  # exact duplicates: ties must rank by row id
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _oracle(row_ids, matrix, live, queries, k, allowed):
    keep = np.ones(len(row_ids), bool) if live is None else live.copy()
    if allowed is not None:
        keep &= np.isin(row_ids, allowed)
    ids, vectors = row_ids[keep], matrix[keep].astype(np.float32)
    out = []
    for query in queries:
        scores = vectors @ query
        order = np.lexsort((ids, -scores.astype(np.float64)))[:k]
        out.append((ids[order], scores[order]))
    return out


def _parts(matrix: np.ndarray, dtype=np.float32):
    """Two segments, the second with deleted rows; row ids interleaved between them."""
    row_ids = np.arange(len(matrix), dtype=np.int64) * 3
    first, second = slice(0, 700), slice(700, len(matrix))
    live = np.ones(len(matrix) - 700, bool)
    live[::7] = False
    parts = [VectorPart(row_ids[first], matrix[first].astype(dtype)),
             VectorPart(row_ids[second], matrix[second].astype(dtype), live)]
    whole_live = np.concatenate([np.ones(700, bool), live])
    return parts, row_ids, whole_live


@pytest.mark.parametrize("scan", ["torch", "torch-fp16", "faiss"])
def test_device_scans_give_the_exact_answer(scan, monkeypatch):
    matrix = _clustered(1500, 32, seed=1)
    parts, row_ids, live = _parts(matrix)
    stored = StoredVectors(parts)
    for part in stored.parts:
        if scan == "faiss":
            part.scan = FaissScan(part.matrix, part.live, on_gpu=False)
        else:
            part.scan = TorchScan(part.matrix, part.live, "cpu", half=scan == "torch-fp16")
    queries = np.concatenate([matrix[[4, 100, 900, 1400]], _clustered(6, 32, seed=2)])
    allowed = row_ids[::2]
    for k in (1, 10, 25, 3000):
        for subset in (None, allowed, row_ids[[3, 700, 701, 1499]]):
            found = stored.search(queries, k, subset)
            for got, (ids, scores) in zip(found, _oracle(row_ids, matrix, live, queries, k, subset)):
                assert np.array_equal(got.row_ids, ids), (k, scan)
                assert np.allclose(got.scores, scores, atol=1e-6)


def test_a_shortlist_too_close_to_call_is_scanned_on_the_cpu(monkeypatch):
    """Twenty copies of one vector and k=5 in fp16: the copies tie, so the shortlist cannot prove it holds the
    five lowest row ids; the CPU scan answers, and the answer is the exact one."""
    matrix = _clustered(300, 16, seed=3)
    matrix[100:300:10] = matrix[50]
    part = VectorPart(np.arange(300, dtype=np.int64), matrix)
    part.scan = TorchScan(matrix, None, "cpu", half=True)
    scanned = []
    original = VectorPart._scanned
    monkeypatch.setattr(VectorPart, "_scanned", lambda self, *a: scanned.append(1) or original(self, *a))
    monkeypatch.setattr("xmodal.search.vectors.SHORTLIST_MARGIN", 0)
    result = StoredVectors([part]).search(matrix[50:51], 5)[0]
    assert scanned and list(result.row_ids) == [50, 100, 110, 120, 130]


def test_an_index_searched_through_a_device_scan_answers_as_on_the_cpu(tmp_path, image_folder, texts_csv,
                                                                       tiny_encoder, monkeypatch):
    out = tmp_path / "index"
    build_index(out, IndexConfig(images=[image_folder], texts=[texts_csv], workers=0), encoder=tiny_encoder)
    on_cpu = open_index(out, encoder=tiny_encoder, device="cpu")
    assert on_cpu.placement.engine == "numpy"
    monkeypatch.setattr("xmodal.search.engine.choose_placement", lambda device: TORCH_HERE)
    on_device = open_index(out, encoder=tiny_encoder)
    assert on_device.placement is TORCH_HERE
    assert all(p.scan is not None for s in on_device._sets.values() for p in s.parts)
    for query in ("a red sports car", "a bowl of soup"):
        for target in ("image", "text"):
            expected = on_cpu.search(query, target=target, k=5)
            got = on_device.search(query, target=target, k=5, where=None)
            assert [(h.row_id, round(h.score, 5)) for h in got] == [(h.row_id, round(h.score, 5)) for h in expected]
    assert device_module.is_gpu("cuda:0") and not device_module.is_gpu("cpu")
