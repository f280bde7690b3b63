"""The image reader stage: files -> (metadata, preprocessed pixels) in parallel worker processes."""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from ..errors import DecodeWorkerError, ImageDecodeError
from ..imaging import DEFAULT_BACKGROUND, MAX_PIXELS, decode_picture
from ..processes import end_with_parent, parent_only, release


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
        return DecodeFailure(path, exc.template)  # worded by whoever reads it (Failure.worded)
    except Exception as exc:  # a preprocessing bug for one odd file must not end a long run
        return DecodeFailure(path, f"preprocessing failed: {type(exc).__name__}: {exc}")
    return DecodedImage(path, content_hash(data), read.size, read.mtime, picture.width, picture.height, pixels)


def _read_many(paths: Sequence[str], preprocess, max_pixels: int, min_side: int | None,
               background: str | None) -> list:
    """A worker's share: several files at once, so that fewer, larger messages pass between processes."""
    return [_portable(read_one(path, preprocess, max_pixels, min_side, background)) for path in paths]


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
MAX_TASKS_AHEAD = 128  # per worker: 28 bytes each as sent, under 4 kB: never enough to fill the pipe to it (see _Worker)
STOP_SECONDS = 2.0  # how long stopping workers may take before those still alive are killed


def default_workers() -> int:
    """One decoding process per core, up to 8: the main process mostly waits on them. Measured on 2 cores
    (bench/bench_index.py, 1,000 JPEGs): tiny model 170 images/s with 1 worker, 205-251 with 2; ViT-B-32
    12-14 either way (model-bound)."""
    return min(8, max(1, os.cpu_count() or 1))


class DecodedStream:
    """DecodedImage | DecodeFailure for each path, in path order, decoded by `workers` processes.

    The worker processes start when the stream is made (before anything else a caller starts, such as a
    model loading in a thread), and stop when it is exhausted or closed, within STOP_SECONDS whatever state
    they are in. Workers import neither torch nor the model: with a preprocessing that needs neither, they
    start in well under a second. They ignore Ctrl-C: a terminal sends it to every process of the command,
    and what it means (stop, keep what was encoded) is the main process's to decide.
    """

    def __init__(self, paths: Sequence[str], preprocess, workers: int, max_pixels: int = MAX_PIXELS,
                 min_side: int | None = None, ahead: int | None = None,
                 background: str | None = DEFAULT_BACKGROUND):
        """`ahead`: files decoded ahead of the consumer (default: TASKS_AHEAD tasks per worker)."""
        self.paths = list(paths)
        self._settings = (preprocess, max_pixels, min_side, background)
        self._workers: list[_Worker] = []
        self._pending: deque[tuple[_Worker, int, int]] = deque()  # (worker, start, stop) of each task, in order
        self._next = 0
        if workers > 0 and len(self.paths) > 1:
            count = min(workers, len(self.paths))
            tasks = count * TASKS_AHEAD if ahead is None else max(count, -(-ahead // DECODE_BATCH))
            try:
                self._start(count, min(tasks, count * MAX_TASKS_AHEAD))
            except BaseException:
                self.close()
                raise

    def _start(self, count: int, tasks: int) -> None:
        context = multiprocessing.get_context(_start_method())
        settings = (self.paths, *self._settings)
        with _sigint_held():  # a worker forked meanwhile inherits the holding handler, not KeyboardInterrupt
            for _ in range(count):
                self._workers.append(_Worker(context, settings))
        for _ in range(tasks):
            self._submit()

    def _submit(self) -> None:
        if self._next < len(self.paths):
            start, stop = self._next, min(self._next + DECODE_BATCH, len(self.paths))
            worker = min(self._workers, key=lambda w: w.tasks)  # the first of the least busy
            worker.ask(start, stop, self.paths[start:stop])
            self._pending.append((worker, start, stop))
            self._next = stop

    def __iter__(self) -> Iterator[DecodedImage | DecodeFailure]:
        if not self._workers:
            for path in self.paths:
                yield read_one(path, *self._settings)
            return
        try:
            while self._pending:
                worker, start, stop = self._pending.popleft()
                done = worker.answer(self.paths[start:stop])
                self._submit()
                for item in done:
                    yield _restored(item)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the workers, whatever they are doing: they hold nothing of the run's."""
        workers, self._workers = self._workers, []
        self._pending.clear()
        _stop(workers)


class _Worker:
    """A decoding process with a pipe of its own. multiprocessing.Pool's workers share locked queues, and a
    worker stopped while holding a lock (as a terminal's Ctrl-C did) left Pool.terminate() waiting for
    good; with a pipe each, a worker stopped at any moment holds up nothing else.

    A task is two numbers (which of the stream's paths to decode): the main process sends every task before
    it reads an answer, and the pipe to a worker must never fill while that worker waits for its answer to
    be read."""

    def __init__(self, context, settings: tuple):
        self.connection, theirs = context.Pipe()
        # This end stays here: a worker forked after this one holding it would never see its parent go.
        parent_only(self.connection.fileno())
        self.process = context.Process(target=_decode_requests, args=(theirs, os.getpid(), *settings),
                                       daemon=True, name="xmodal-decode")
        try:
            self.process.start()
        except BaseException:
            self.close()
            raise
        finally:
            theirs.close()
        self.tasks = 0  # asked for and not answered yet

    def close(self) -> None:
        if not self.connection.closed:
            release(self.connection.fileno())
            self.connection.close()

    def ask(self, start: int, stop: int, paths: Sequence[str]) -> None:
        try:
            self.connection.send((start, stop))
        except OSError:
            raise DecodeWorkerError(_ended(self.process, paths)) from None
        self.tasks += 1

    def answer(self, paths: Sequence[str]) -> list:
        try:
            done = self.connection.recv()
        except (EOFError, OSError):
            raise DecodeWorkerError(_ended(self.process, paths)) from None
        self.tasks -= 1
        if isinstance(done, BaseException):
            raise done
        return done


def _decode_requests(connection, parent_pid: int, paths: Sequence[str], preprocess, max_pixels: int,
                     min_side: int | None, background: str | None) -> None:
    """A worker's life: decode each share asked for, until the main process closes the pipe, stops it or
    dies (a kill -9 of the main process leaves no worker behind)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the main process's to handle
    end_with_parent(parent_pid)
    try:
        while True:
            start, stop = connection.recv()
            try:
                connection.send(_read_many(paths[start:stop], preprocess, max_pixels, min_side, background))
            except (EOFError, OSError):
                raise
            except Exception as exc:  # for the main process to raise, as a Pool did (pixels that cannot be pickled)
                connection.send(RuntimeError(f"decoding {paths[start]} and the {stop - start - 1} files after it "
                                             f"failed: {type(exc).__name__}: {exc}"))
    except (EOFError, OSError):  # the main process closed the pipe, or is gone: no one is waiting
        pass


def _ended(process, paths: Sequence[str]) -> str:
    """Why a worker stopped answering, for DecodeWorkerError."""
    process.join(STOP_SECONDS)
    code = process.exitcode
    try:
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
    except ValueError:
        how = f"exit status {code}"
    return (f"a decoding process ended ({how}) while decoding {paths[0]} or one of the {len(paths) - 1} files "
            "after it (out of memory, or a file that crashes the image decoder); what was encoded so far is "
            f"kept, and running the same command again resumes")


def _stop(workers: list[_Worker]) -> None:
    """Worker processes ended within STOP_SECONDS, killed if they must be; their pipes closed."""
    processes = [worker.process for worker in workers]
    for worker in workers:
        worker.close()
    for process in processes:
        if process.exitcode is None:
            process.terminate()
    deadline = time.monotonic() + STOP_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.exitcode is None:
            process.kill()
            process.join(STOP_SECONDS)


@contextmanager
def _sigint_held():
    """Ctrl-C (SIGINT) held back until the block ends, then handled as it would have been. Processes forked
    inside inherit this handler, which raises nothing, until they install their own: a Ctrl-C at that
    moment neither stops the main process half-way through starting one nor kills the new one with a
    traceback. Only the main thread sets handlers; elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
        if held and callable(previous):
            previous(signal.SIGINT, sys._getframe())
        elif held and previous == signal.SIG_DFL:
            signal.raise_signal(signal.SIGINT)


def _start_method() -> str:
    """fork where there is one (workers start at once, sharing the parent's memory); else spawn."""
    return "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"


def iter_decoded(paths: Sequence[str], preprocess, workers: int, max_pixels: int = MAX_PIXELS,
                 min_side: int | None = None, background: str | None = DEFAULT_BACKGROUND
                 ) -> Iterator[DecodedImage | DecodeFailure]:
    """DecodedImage | DecodeFailure for each path, in path order (see DecodedStream)."""
    return iter(DecodedStream(paths, preprocess, workers, max_pixels, min_side, background=background))
