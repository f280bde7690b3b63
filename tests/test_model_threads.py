"""The CPU model gives its threads to the decoders while it waits on them, and takes them back."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.build import model_threads
from xmodal.indexer.build.model_threads import ModelThreads, for_cpu_model
from xmodal.search.engine import open_index


class Threads:
    def __init__(self, threads: int):
        self.now, self.calls = threads, []

    def set(self, threads: int) -> None:
        self.now = threads
        self.calls.append(threads)


def test_decode_bound_batches_give_the_decoders_their_cores_and_model_bound_ones_take_them_back():
    threads = Threads(8)
    share = ModelThreads(lambda: threads.now, threads.set, workers=6, cores=8)
    assert (share.full, share.reduced) == (8, 2)
    share.after_batch(waited=0.010, encoding=0.050)  # model-bound: keeps every thread
    assert threads.calls == []
    share.after_batch(waited=0.300, encoding=0.020)  # decode-bound
    assert threads.calls == [2]
    share.after_batch(waited=0.015, encoding=0.040)  # between the thresholds: no switching back and forth
    assert threads.calls == [2]
    share.after_batch(waited=0.005, encoding=0.040)  # the decoders keep up now
    assert threads.calls == [2, 8]
    share.after_batch(waited=0.5, encoding=0.02)
    share.restore()
    assert threads.calls == [2, 8, 2, 8] and threads.now == 8
    share.restore()
    assert threads.calls == [2, 8, 2, 8]  # restoring what is already set costs nothing


def test_the_model_keeps_at_least_one_thread_and_never_gains_any():
    assert ModelThreads(lambda: 2, lambda n: None, workers=2, cores=2).reduced == 1
    assert ModelThreads(lambda: 4, lambda n: None, workers=1, cores=16).reduced == 4


def test_nothing_to_share_without_workers_on_a_gpu_or_on_one_core(tiny_encoder, monkeypatch):
    monkeypatch.setattr(model_threads.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert for_cpu_model(tiny_encoder, workers=2) is not None
    assert for_cpu_model(tiny_encoder, workers=0) is None
    monkeypatch.setattr(tiny_encoder, "device", "cuda:0")
    assert for_cpu_model(tiny_encoder, workers=2) is None
    monkeypatch.setattr(tiny_encoder, "device", "cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert for_cpu_model(tiny_encoder, workers=2) is None


@pytest.fixture
def threads_to_give(monkeypatch) -> int:
    """torch's threads during the test (at least 2, so the model has one to give up), and a core count that
    leaves the model one fewer beside 2 decoding workers."""
    saved = torch.get_num_threads()
    torch.set_num_threads(max(2, saved))
    monkeypatch.setattr(model_threads.os, "cpu_count", lambda: torch.get_num_threads() + 1)
    yield torch.get_num_threads()
    torch.set_num_threads(saved)


def test_a_run_reports_every_batch_and_leaves_torch_as_it_found_it(tmp_path, forty_jpegs, tiny_encoder, monkeypatch,
                                                                   threads_to_give):
    seen = []
    original = ModelThreads.after_batch
    monkeypatch.setattr(ModelThreads, "after_batch", lambda self, waited, encoding: seen.append(
        (waited, encoding)) or original(self, 10.0, 0.0))  # as decode-bound as can be: threads given up
    build_index(tmp_path / "shared", IndexConfig(images=[forty_jpegs], workers=2, batch_size=8), encoder=tiny_encoder)
    assert len(seen) == 5 and all(w >= 0 and e > 0 for w, e in seen)
    assert torch.get_num_threads() == threads_to_give
    alone = build_index(tmp_path / "alone", IndexConfig(images=[forty_jpegs], workers=0), encoder=tiny_encoder)
    assert alone.counts["image"] == 40
    a = open_index(tmp_path / "shared", encoder=tiny_encoder)._stored("image")
    b = open_index(tmp_path / "alone", encoder=tiny_encoder)._stored("image")
    assert np.allclose(a.take(np.arange(40)), b.take(np.arange(40)), atol=1e-5)  # fewer threads, same vectors


def test_a_run_that_fails_midway_gives_the_threads_back(tmp_path, forty_jpegs, tiny_encoder, monkeypatch,
                                                       threads_to_give):
    monkeypatch.setattr(ModelThreads, "after_batch", lambda self, waited, encoding: self._use(self.reduced))
    calls = []
    original = type(tiny_encoder).encode_preprocessed

    def fail_on_the_third(self, pixels):
        calls.append(torch.get_num_threads())
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return original(self, pixels)

    monkeypatch.setattr(type(tiny_encoder), "encode_preprocessed", fail_on_the_third)
    with pytest.raises(RuntimeError, match="out of memory"):
        build_index(tmp_path / "index", IndexConfig(images=[forty_jpegs], workers=2, batch_size=8),
                    encoder=tiny_encoder)
    assert calls == [threads_to_give, threads_to_give - 1, threads_to_give - 1]  # given up after the first batch
    assert torch.get_num_threads() == threads_to_give
