"""Text encoding batched across concurrent requests.

Requests that arrive while the encoder is busy wait together and are encoded as
one batch: one pass for many queries costs less than one pass each. A request
alone is encoded at once, without waiting for company.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Sequence

import numpy as np

from indexer.models import Encoder

MAX_BATCH = 32


class BatchingEncoder:
    """Wraps an encoder; `encode_texts` calls from many threads share passes through the model."""

    def __init__(self, encoder: Encoder, max_batch: int = MAX_BATCH):
        self._encoder, self._max_batch = encoder, max_batch
        self._queue: queue.Queue[tuple[list[str], Future]] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="xmodal-text-batcher", daemon=True)
        self._worker.start()
        self.batches = self.texts = 0

    @property
    def identity(self):
        return self._encoder.identity

    @property
    def device(self) -> str:
        return self._encoder.device

    def preprocess_image(self, image) -> Any:
        return self._encoder.preprocess_image(image)

    def encode_preprocessed(self, batch: Sequence[Any]) -> np.ndarray:
        return self._encoder.encode_preprocessed(batch)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        done: Future = Future()
        self._queue.put((list(texts), done))
        return done.result()

    def _run(self) -> None:
        while True:
            waiting = [self._queue.get()]
            count = len(waiting[0][0])
            while count < self._max_batch:
                try:
                    item = self._queue.get_nowait()  # those who came while the last batch was encoding
                except queue.Empty:
                    break
                waiting.append(item)
                count += len(item[0])
            self._encode(waiting)

    def _encode(self, waiting: list[tuple[list[str], Future]]) -> None:
        try:
            vectors = self._encoder.encode_texts([t for texts, _ in waiting for t in texts])
        except BaseException as exc:  # each waiting request gets the error, as if it had called alone
            for _, done in waiting:
                done.set_exception(exc)
            return
        self.batches, self.texts = self.batches + 1, self.texts + len(vectors)
        start = 0
        for texts, done in waiting:
            done.set_result(vectors[start:start + len(texts)])
            start += len(texts)
