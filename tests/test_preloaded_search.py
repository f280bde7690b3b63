"""Flat vector sets are searched with numpy over their (memory-mapped) vectors: the same hits as a faiss flat
index and as brute force, ties broken by row id, preloaded into the page cache or not."""
from __future__ import annotations

import numpy as np

from fakes import HashEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.store.ann import AnnSpec, VectorIndex
from xmodal.search import open_index


def test_flat_search_equals_faiss_and_brute_force(tmp_path):
    corpus = tmp_path / "notes.txt"
    lines = [f"note {i} kind:{i % 7}" for i in range(900)] + ["same text kind:3"] * 5  # five exact ties
    corpus.write_text("\n".join(lines) + "\n")
    encoder = HashEncoder()
    build_index(tmp_path / "idx", IndexConfig(texts=[corpus], workers=0, index_type="flat"), encoder=encoder)
    cold = open_index(tmp_path / "idx", encoder=encoder)
    held = open_index(tmp_path / "idx", encoder=encoder).preload()
    row_ids, vectors = held.embeddings("text")
    faiss_flat = VectorIndex.build(vectors, row_ids, AnnSpec("flat"))
    for query in ["same text kind:3", "note 17 kind:3", "kind:5", "nothing alike"]:
        vector = encoder.encode_texts([query])[0]
        for k in (1, 3, 10, 50):
            fast = held.search(text=query, target="text", k=k, mode="vector")
            assert [(h.row_id, h.score) for h in fast] == [(h.row_id, h.score) for h in cold.search(text=query, target="text", k=k, mode="vector")]
            by_faiss = faiss_flat.search(vector, k)[0]
            assert [h.row_id for h in fast] == by_faiss.row_ids.tolist()
            np.testing.assert_allclose([h.score for h in fast], by_faiss.scores, atol=1e-5)
            scores = vectors @ vector
            oracle = row_ids[np.lexsort((row_ids, -scores))][:k]
            assert [h.row_id for h in fast] == list(oracle)
