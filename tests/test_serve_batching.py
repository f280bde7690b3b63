"""Text encoding batched across concurrent requests: same vectors as alone, fewer passes, errors to each."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fakes import FakeEncoder
from xmodal.search.serve.batching import BatchingEncoder


class CountingEncoder(FakeEncoder):
    def __init__(self):
        super().__init__()
        self.passes = 0

    def encode_texts(self, texts):
        self.passes += 1
        time.sleep(0.05)  # a model pass takes time: requests arriving meanwhile wait together
        if any("boom" in t for t in texts):
            raise ValueError("cannot encode boom")
        return super().encode_texts(texts)


def test_concurrent_requests_share_passes_and_get_their_own_vectors():
    inner = CountingEncoder()
    batching = BatchingEncoder(inner)
    texts = [f"a red car {i}" if i % 2 else f"a blue mug {i}" for i in range(16)]
    results: dict[int, np.ndarray] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, batching.encode_texts([texts[i]])))
               for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = FakeEncoder().encode_texts(texts)
    for i in range(16):
        np.testing.assert_array_equal(results[i][0], expected[i])
    assert inner.passes < 16 and batching.texts == 16


def test_a_lone_request_is_encoded_at_once_and_an_error_reaches_its_caller():
    batching = BatchingEncoder(CountingEncoder())
    started = time.perf_counter()
    batching.encode_texts(["a red car"])
    assert time.perf_counter() - started < 0.5
    with pytest.raises(ValueError, match="boom"):
        batching.encode_texts(["boom"])
    assert batching.encode_texts(["a red car"]).shape == (1, FakeEncoder().identity.dim)


def test_recent_texts_are_remembered_and_the_memory_is_bounded(monkeypatch):
    import xmodal.search.serve.batching as batching_module
    monkeypatch.setattr(batching_module, "CACHE_TEXTS", 3)
    inner = CountingEncoder()
    batching = BatchingEncoder(inner)
    first = batching.encode_texts(["a red car", "a blue mug", "a red car"])
    assert inner.passes == 1 and batching.texts == 2  # a text twice in one call is encoded once
    np.testing.assert_array_equal(batching.encode_texts(["a red car"])[0], first[0])
    assert inner.passes == 1  # the page re-running its query with a like costs no encoding
    batching.encode_texts(["one", "two", "three"])
    assert len(batching._cache) == 3 and "a red car" not in batching._cache
