"""The FAISS backend against an exact numpy oracle."""
from __future__ import annotations

import numpy as np
import pytest

from xmodal.indexer.store.ann import EXACT_UP_TO, VectorIndex, choose_ann
from xmodal.indexer.errors import InvalidInputError
from xmodal.indexer.models import l2_normalize
from xmodal.indexer.store import AnnSpec


def clustered(n: int, dim: int = 48, clusters: int = 37, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    points = centres[rng.integers(0, clusters, n)] + 0.3 * rng.normal(size=(n, dim))
    return l2_normalize(points)


def exact_top_k(vectors, row_ids, queries, k):
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), row_ids[order]


def test_flat_equals_the_exact_oracle_with_sparse_row_ids():
    vectors = clustered(1013)
    row_ids = np.arange(1013, dtype=np.int64) * 7 + 3  # ids are not positions
    queries = clustered(53, seed=1)
    index = VectorIndex.build(vectors, row_ids, AnnSpec("flat"))
    want_scores, want_ids = exact_top_k(vectors, row_ids, queries, 10)
    for got, scores, ids in zip(index.search(queries, 10), want_scores, want_ids):
        np.testing.assert_array_equal(got.row_ids, ids)
        np.testing.assert_allclose(got.scores, scores, atol=1e-5)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_reach_high_recall_on_clustered_data(kind):
    n = 6007
    vectors = clustered(n)
    row_ids = np.arange(n, dtype=np.int64) + 100
    queries = clustered(97, seed=2)
    index = VectorIndex.build(vectors, row_ids, choose_ann(n, kind))
    _, want_ids = exact_top_k(vectors, row_ids, queries, 10)
    got = index.search(queries, 10)
    recall = np.mean([len(set(g.row_ids) & set(w)) / 10 for g, w in zip(got, want_ids)])
    assert recall >= 0.95, recall


def test_k_larger_than_the_index_returns_only_real_hits(tmp_path):
    vectors = clustered(5)
    index = VectorIndex.build(vectors, np.arange(5), AnnSpec("flat"))
    result = index.search(vectors[:1], 50)[0]
    assert len(result.row_ids) == 5 and (result.row_ids >= 0).all()
    path = tmp_path / "x.faiss"
    index.save(path)
    loaded = VectorIndex.load(path, AnnSpec("flat"))
    np.testing.assert_array_equal(loaded.search(vectors[:1], 3)[0].row_ids, result.row_ids[:3])


def test_auto_is_exact_for_small_collections_and_ivf_above():
    assert choose_ann(EXACT_UP_TO).kind == "flat"
    big = choose_ann(EXACT_UP_TO + 1)
    assert big.kind == "ivf" and big.params["nlist"] > 1 and 1 <= big.params["nprobe"] <= big.params["nlist"]
    with pytest.raises(InvalidInputError, match="flat, hnsw, ivf"):
        choose_ann(10, "annoy")


def test_gpu_placement_is_decided_on_load_and_files_are_written_from_cpu(tmp_path, monkeypatch):
    """No GPU here: check the device logic with faiss's cloners stood in for."""
    import faiss

    import xmodal.indexer.store.ann as ann
    moved, copied_back = [], []
    monkeypatch.setattr(ann, "gpu_count", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index: moved.append(index) or index, raising=False)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", lambda index: copied_back.append(index) or index, raising=False)
    vectors = clustered(2000)
    specs = {}
    for kind in ("flat", "ivf", "hnsw"):
        built = VectorIndex.build(vectors, np.arange(2000), choose_ann(2000, kind))
        specs[kind] = built.spec
        built.save(tmp_path / f"{kind}.faiss")
        loaded = VectorIndex.load(tmp_path / f"{kind}.faiss", built.spec)
        assert loaded.search(vectors[:1], 1)[0].row_ids.tolist() == [0]
    assert len(copied_back) == 4  # every save goes through a CPU copy, and the IVF built on the GPU comes back
    assert len(moved) == 3  # flat and IVF go to the GPU to be searched, and the IVF to be built; no GPU HNSW
    assert moved[1].is_trained and moved[1].ntotal == 2000  # the IVF was trained and filled there
    ivf = faiss.extract_index_ivf(moved[2])
    assert ivf.nprobe == specs["ivf"].params["nprobe"]  # set before the copy to the GPU


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_equal_scores_rank_by_row_id_even_across_the_kth_place(kind):
    rng = np.random.default_rng(5)
    base = rng.normal(size=(1, 16)).astype(np.float32)
    others = rng.normal(size=(300, 16)).astype(np.float32) * 0.05 - base  # far from the query
    vectors = np.vstack([np.repeat(base, 40, axis=0), others])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    row_ids = rng.permutation(np.arange(1000, 1000 + len(vectors)) * 3)  # sparse, shuffled ids
    index = VectorIndex.build(vectors, row_ids, choose_ann(len(vectors), kind))
    for k in (1, 5, 39, 40):
        result = index.search(vectors[0], k)[0]
        assert list(result.row_ids) == sorted(row_ids[:40])[:k], kind


def test_a_memory_budget_chooses_ivf_codes_that_fit():
    from xmodal.indexer.store.ann import BUDGET_SHARE, choose_codes, code_bytes, parse_memory

    assert parse_memory("4G") == 4 << 30 and parse_memory("512m") == 512 << 20 and parse_memory("1000") == 1000
    with pytest.raises(InvalidInputError, match="like 4G"):
        parse_memory("lots")
    n, dim = 1_000_000, 512
    assert choose_codes(n, dim, None) == "flat"
    assert choose_codes(n, dim, 8 << 30) == "flat"  # 2.06 GB of float32 lists fit in half of 8 GB
    assert choose_codes(n, dim, 2 << 30) == "sq8"
    assert choose_codes(n, dim, 256 << 20) == "pq" and n * code_bytes("pq", dim) <= BUDGET_SHARE * (256 << 20)
    spec = choose_ann(n, "auto", dim, 256 << 20)
    assert spec.kind == "ivf" and spec.params["codes"] == "pq" and spec.params["pq_m"] == 64 and spec.params["rerank"] > 1


@pytest.mark.parametrize("codes", ["sq8", "pq"])
def test_compressed_ivf_re_ranked_from_stored_vectors_keeps_recall_and_exact_scores(codes):
    from xmodal.search.vectors import StoredVectors, VectorPart

    n = 12_007
    vectors = clustered(n)
    row_ids = np.arange(n, dtype=np.int64) * 2 + 5
    budget = {"sq8": n * 60 * 2, "pq": n * 16 * 2}[codes]
    spec = choose_ann(n, "ivf", 48, budget)
    assert spec.params["codes"] == codes
    index = VectorIndex.build(vectors, row_ids, spec)
    assert index.spec.params["tuned_recall_at_10"] >= 0.95
    stored = StoredVectors([VectorPart(row_ids, vectors.astype(np.float16), None, index)])
    queries = clustered(97, seed=2)
    want_scores, want_ids = exact_top_k(vectors.astype(np.float16).astype(np.float32), row_ids, queries, 10)
    got = stored.search(queries, 10)
    recall = np.mean([len(set(g.row_ids) & set(w)) / 10 for g, w in zip(got, want_ids)])
    assert recall >= 0.9, recall
    for result, query in zip(got, queries):  # scores are exact ones, not the codes' estimates
        exact = vectors[(result.row_ids - 5) // 2].astype(np.float16).astype(np.float32) @ query
        np.testing.assert_allclose(result.scores, exact, atol=1e-5)


def test_an_index_built_within_a_memory_budget_finds_each_item(tmp_path):
    from fakes import HashEncoder
    from xmodal.indexer import IndexConfig, build_index
    from xmodal.indexer.store import IndexDir
    from xmodal.search import open_index

    corpus = tmp_path / "notes.txt"
    corpus.write_text("\n".join(f"note {i} kind:{i % 11}" for i in range(3000)) + "\n")
    encoder = HashEncoder()
    build_index(tmp_path / "idx", IndexConfig(texts=[corpus], workers=0, index_type="ivf", memory_budget="60K"),
                encoder=encoder)
    manifest = IndexDir(tmp_path / "idx").read_manifest()
    assert manifest.settings["memory_budget"] == 60 << 10
    assert manifest.ann["text"].params["codes"] == "sq8"  # 3,000 vectors are too few to train PQ
    idx = open_index(tmp_path / "idx", encoder=encoder)
    for i in range(0, 3000, 97):
        hit = idx.search(text=f"note {i} kind:{i % 11}", target="text", k=1)[0]
        assert hit.text == f"note {i} kind:{i % 11}" and hit.score == pytest.approx(1.0, abs=1e-5)


def test_tuning_queries_sit_near_but_not_on_the_collection():
    from xmodal.indexer.store import ann

    rng = np.random.default_rng(0)
    sample = rng.normal(size=(50, 32)).astype(np.float32)
    sample /= np.linalg.norm(sample, axis=1, keepdims=True)
    moved = ann._moved(sample, rng)
    cosines = (moved * sample).sum(axis=1) / np.linalg.norm(moved, axis=1)
    np.testing.assert_allclose(cosines, ann.TUNING_QUERY_COSINE, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(moved, axis=1), 1.0, atol=1e-5)


def test_the_same_vector_twice_ties_and_ranks_by_row_id():
    """One photo stored twice (two files, one picture): whatever rows BLAS happens to score them in, the two
    get the same score and the lower row id ranks first."""
    from xmodal.search.vectors import StoredVectors

    rng = np.random.default_rng(0)
    for trial in range(20):
        vectors = l2_normalize(rng.standard_normal((203, 384)).astype(np.float32))
        vectors[7] = vectors[200]
        queries = l2_normalize(0.05 * rng.standard_normal((5, 384)).astype(np.float32) + vectors[200])
        for result in StoredVectors.of(np.arange(203), vectors).search(queries, 3):
            assert result.row_ids[:2].tolist() == [7, 200] and result.scores[0] == result.scores[1]
