"""The image reader stage: files -> (metadata, preprocessed pixels) in parallel worker processes."""
from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from .errors import ImageDecodeError
from .imaging import DEFAULT_BACKGROUND, MAX_PIXELS, decode_picture


@dataclass
class DecodedImage:
    path: str
    content_hash: str
    size: int
    mtime: float
    width: int
    height: int
    pixels: Any


@dataclass
class DecodeFailure:
    path: str
    reason: str


def new_hasher():
    """The one content hash of xmodal: indexer and planner must agree on it byte for byte."""
    return hashlib.blake2b(digest_size=16)


def content_hash(data: bytes) -> str:
    hasher = new_hasher()
    hasher.update(data)
    return hasher.hexdigest()


@dataclass
class FileBytes:
    path: str
    data: bytes
    size: int
    mtime: float


def read_file(path: str) -> FileBytes | DecodeFailure:
    try:
        stat = os.stat(path)
        with open(path, "rb") as handle:
            return FileBytes(path, handle.read(), stat.st_size, stat.st_mtime)
    except OSError as exc:
        return DecodeFailure(path, f"unreadable: {exc.strerror or exc}")


def read_one(path: str, preprocess: Callable[[Any], Any], max_pixels: int = MAX_PIXELS,
             min_side: int | None = None, background: str | None = DEFAULT_BACKGROUND):
    """Never raises for a bad file: the failure is returned, to be recorded and skipped.

    `min_side`, `background`: see imaging.decode_picture (JPEGs decoded reduced down to the model's input
    side; transparent pixels laid on the index's background).
    """
    read = read_file(path)
    if isinstance(read, DecodeFailure):
        return read
    data = read.data
    try:
        picture = decode_picture(data, path, max_pixels, min_side, background)
        pixels = preprocess(picture.image)
    except ImageDecodeError as exc:
        return DecodeFailure(path, str(exc))
    except Exception as exc:  # a preprocessing bug for one odd file must not end a long run
        return DecodeFailure(path, f"preprocessing failed: {type(exc).__name__}: {exc}")
    return DecodedImage(path, content_hash(data), read.size, read.mtime, picture.width, picture.height, pixels)


_WORKER_SETTINGS: tuple = ()  # (preprocess, max_pixels, min_side, background) of this worker process


def _set_up_worker(preprocess, max_pixels: int, min_side: int | None, background: str | None) -> None:
    """Given once per worker (a preprocess may hold a whole encoder: never sent with each task)."""
    global _WORKER_SETTINGS
    _WORKER_SETTINGS = (preprocess, max_pixels, min_side, background)


def _read_many(paths: Sequence[str]) -> list:
    """A worker's share: several files at once, so that fewer, larger messages pass between processes."""
    return [_portable(read_one(path, *_WORKER_SETTINGS)) for path in paths]


@dataclass
class _TensorPixels:
    """A torch tensor travelling between processes as a numpy array (encoders of your own may preprocess
    into tensors): torch passes each tensor through a shared-memory file of its own, which cost more than
    decoding a reduced photo (280 vs 420 images/s)."""

    array: Any


def _portable(item):
    if isinstance(item, DecodedImage) and type(item.pixels).__module__.startswith("torch"):
        item.pixels = _TensorPixels(item.pixels.numpy())
    return item


def _restored(item):
    if isinstance(item, DecodedImage) and isinstance(item.pixels, _TensorPixels):
        import torch

        item.pixels = torch.from_numpy(item.pixels.array)
    return item


DECODE_BATCH = 16  # files a worker decodes per task
TASKS_AHEAD = 4  # tasks queued per worker: decoding never waits on the main process, memory stays bounded


def default_workers() -> int:
    """One decoding process per core, up to 8: the main process mostly waits on them. Measured on 2 cores
    (bench/bench_index.py, 1,000 JPEGs): tiny model 170 images/s with 1 worker, 205-251 with 2; ViT-B-32
    12-14 either way (model-bound)."""
    return min(8, max(1, os.cpu_count() or 1))


class DecodedStream:
    """DecodedImage | DecodeFailure for each path, in path order, decoded by `workers` processes.

    The worker processes start when the stream is made (before anything else a caller starts, such as a
    model loading in a thread), and stop when it is exhausted or closed. Workers import neither torch nor
    the model: with a preprocessing that needs neither, they start in well under a second.
    """

    def __init__(self, paths: Sequence[str], preprocess, workers: int, max_pixels: int = MAX_PIXELS,
                 min_side: int | None = None, ahead: int | None = None,
                 background: str | None = DEFAULT_BACKGROUND):
        """`ahead`: files decoded ahead of the consumer (default: TASKS_AHEAD tasks per worker)."""
        self.paths = list(paths)
        self._settings = (preprocess, max_pixels, min_side, background)
        self._pool = None
        if workers > 0 and len(self.paths) > 1:
            self._pool = multiprocessing.get_context(_start_method()).Pool(
                min(workers, len(self.paths)), _set_up_worker, self._settings)
            self._pending: deque = deque()
            self._next = 0
            tasks = workers * TASKS_AHEAD if ahead is None else max(workers, -(-ahead // DECODE_BATCH))
            for _ in range(tasks):
                self._submit()

    def _submit(self) -> None:
        if self._next < len(self.paths):
            share = self.paths[self._next:self._next + DECODE_BATCH]
            self._next += len(share)
            self._pending.append(self._pool.apply_async(_read_many, (share,)))

    def __iter__(self) -> Iterator[DecodedImage | DecodeFailure]:
        if self._pool is None:
            for path in self.paths:
                yield read_one(path, *self._settings)
            return
        try:
            while self._pending:
                done = self._pending.popleft().get()
                self._submit()
                for item in done:
                    yield _restored(item)
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None


def _start_method() -> str:
    """fork where there is one (workers start at once, sharing the parent's memory); else spawn."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def iter_decoded(paths: Sequence[str], preprocess, workers: int, max_pixels: int = MAX_PIXELS,
                 min_side: int | None = None, background: str | None = DEFAULT_BACKGROUND
                 ) -> Iterator[DecodedImage | DecodeFailure]:
    """DecodedImage | DecodeFailure for each path, in path order (see DecodedStream)."""
    return iter(DecodedStream(paths, preprocess, workers, max_pixels, min_side, background=background))
