"""An index held in memory (as the service holds it) answers flat searches with one matrix product:
the same hits as the faiss path and as brute force, ties broken by row id."""
from __future__ import annotations

import numpy as np

from fakes import HashEncoder
from indexer import IndexConfig, build_index
from search import open_index


def test_preloaded_flat_search_equals_faiss_and_brute_force(tmp_path):
    corpus = tmp_path / "notes.txt"
    lines = [f"note {i} kind:{i % 7}" for i in range(900)] + ["same text kind:3"] * 5  # five exact ties
    corpus.write_text("\n".join(lines) + "\n")
    encoder = HashEncoder()
    build_index(tmp_path / "idx", IndexConfig(texts=[corpus], workers=0, index_type="flat"), encoder=encoder)
    lazy = open_index(tmp_path / "idx", encoder=encoder)
    held = open_index(tmp_path / "idx", encoder=encoder).preload()
    stored = held._stored("text")
    for query in ["same text kind:3", "note 17 kind:3", "kind:5", "nothing alike"]:
        for k in (1, 3, 10, 50):
            fast = held.search(text=query, target="text", k=k)
            slow = lazy.search(text=query, target="text", k=k)
            assert [h.row_id for h in fast] == [h.row_id for h in slow]
            np.testing.assert_allclose([h.score for h in fast], [h.score for h in slow], atol=1e-5)
            scores = stored.matrix @ encoder.encode_texts([query])[0]
            oracle = stored.row_ids[np.lexsort((stored.row_ids, -scores))][:k]
            assert [h.row_id for h in fast] == list(oracle)
