"""Text encoding batched across concurrent requests.

Requests that arrive while the encoder is busy wait together and are encoded as
one batch: one pass for many queries costs less than one pass each. A request
alone is encoded at once, without waiting for company. The last CACHE_TEXTS
texts are remembered: a page re-runs its query with each like and dislike.
"""
from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Any, Sequence

import numpy as np

from ...indexer.models import Encoder
from ...indexer.models import image_input_side

MAX_BATCH = 32
CACHE_TEXTS = 1024  # about 1.5 MB of 384-d vectors


class BatchingEncoder:
    """Wraps an encoder; `encode_texts` calls from many threads share passes through the model."""

    def __init__(self, encoder: Encoder, max_batch: int = MAX_BATCH):
        self._encoder, self._max_batch = encoder, max_batch
        self._queue: queue.Queue[tuple[list[str], Future]] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="xmodal-text-batcher", daemon=True)
        self._worker.start()
        self.batches = self.texts = 0
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def identity(self):
        return self._encoder.identity

    @property
    def device(self) -> str:
        return self._encoder.device

    @property
    def image_input_side(self) -> int | None:
        return image_input_side(self._encoder)

    def preprocess_image(self, image) -> Any:
        return self._encoder.preprocess_image(image)

    def encode_preprocessed(self, batch: Sequence[Any]) -> np.ndarray:
        return self._encoder.encode_preprocessed(batch)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        with self._cache_lock:
            known = {t: self._cache[t] for t in texts if t in self._cache}
            for text in known:
                self._cache.move_to_end(text)
        missing = list(dict.fromkeys(t for t in texts if t not in known))
        if missing:
            done: Future = Future()
            self._queue.put((missing, done))
            known.update(zip(missing, done.result()))
            self._remember(missing, known)
        return np.stack([known[t] for t in texts])

    def _remember(self, texts: list[str], vectors: dict[str, np.ndarray]) -> None:
        with self._cache_lock:
            for text in texts:
                self._cache[text] = vectors[text]
            while len(self._cache) > CACHE_TEXTS:
                self._cache.popitem(last=False)

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
