"""The encoder stage: decoded images and texts -> vectors, committed to the resume journal as they come."""
from __future__ import annotations

import os
import time
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import numpy as np

from .decode import DecodedImage, DecodedStream, DecodeFailure, default_workers
from .gpu_decode import DeviceJpegDecoder, gpu_decoding_available
from .imaging import DEFAULT_BACKGROUND, MAX_PIXELS
from .models import Encoder
from .models.base import image_input_side
from .model_threads import for_cpu_model
from .ray_engine import RayRun
from .plan import text_hash
from .store.journal import Journal, JournalEntry
from .store.tables import Failure


class ProgressBar(Protocol):
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


ProgressFactory = Callable[[str, int], ProgressBar]
BatchHook = Callable[[list[DecodedImage], np.ndarray], None]


class Timer:
    """Seconds spent per stage of a run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._open: set[str] = set()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if name in self._open:  # a stage inside itself (a segment written during the final write) counts once
            yield
            return
        start = time.perf_counter()
        self._open.add(name)
        try:
            yield
        finally:
            self._open.discard(name)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


@dataclass
class EncodedImages:
    """Images that decoded, in input order, with their vectors; and those that did not."""

    images: list[DecodedImage]
    vectors: np.ndarray
    failures: list[Failure]


@dataclass
class EncodeSettings:
    batch_size: int = 64
    workers: int | None = None
    max_pixels: int = MAX_PIXELS
    journal_every: int = 512
    decode: str = "reduced"  # "exact": every pixel of a photo decoded, however large (imaging.DECODE_MODES)
    background: str | None = DEFAULT_BACKGROUND  # transparent pixels laid on it; None: alpha dropped (imaging.flatten)
    decode_device: str | None = None  # None: JPEGs on the model's GPU where it has one, else CPU workers
    ray: RayRun | None = None  # decode and encode on a Ray cluster (ray_engine) instead of here


def encode_image_files(encoder: Encoder, paths: list[str], batch_size: int = 64, workers: int | None = None,
                       max_pixels: int = MAX_PIXELS, progress: ProgressFactory | None = None,
                       timer: Timer | None = None, on_batch: BatchHook | None = None,
                       label: str = "images", decode: str = "reduced",
                       stream: DecodedStream | None = None, decode_device: str | None = None,
                       background: str | None = DEFAULT_BACKGROUND) -> EncodedImages:
    """Decode (in worker processes) and encode image files; bad files become failures.

    `decode`: "reduced" decodes JPEGs no larger than the model's input needs, "exact" every pixel.
    `background`: what transparent pixels are laid on (imaging.flatten).
    `stream`: the files already decoding (warm_start), instead of starting workers here.
    `decode_device`: where JPEGs decode in batches (gpu_decode); None: the model's GPU if it has one.
    """
    timer = timer or Timer()
    decoded_all, vectors, failures, pending = [], [], [], []
    workers = default_workers() if workers is None else workers
    waited = [0.0]  # waiting on the decoders since the last batch was encoded
    bar = items = threads = None

    def encode_pending() -> None:
        started = time.perf_counter()
        with timer.stage("encode"):
            encoded = encoder.encode_preprocessed([d.pixels for d in pending])
        if threads is not None:
            threads.after_batch(waited[0], time.perf_counter() - started)
        waited[0] = 0.0
        for d in pending:
            d.pixels = None  # keep metadata only: memory stays bounded by the batch
        vectors.append(encoded)
        decoded_all.extend(pending)
        if on_batch:
            on_batch(list(pending), encoded)
        pending.clear()

    try:  # from the start: a `stream` handed over is this function's to stop, however it ends
        bar = progress(label, len(paths)) if progress and paths else None
        stream, items = _decoding(encoder, paths, workers, max_pixels, decode, decode_device, stream, background)
        threads = for_cpu_model(encoder, workers) if stream is not None else None
        while True:
            started = time.perf_counter()
            with timer.stage("decode_wait"):
                item = next(items, None)
            waited[0] += time.perf_counter() - started
            if item is None:
                break
            if isinstance(item, DecodedImage):
                pending.append(item)
            else:
                failures.append(_failure(item))
            if len(pending) >= batch_size:
                encode_pending()
            if bar:
                bar.update(1)
        if pending:
            encode_pending()
    finally:  # also when interrupted: the decoders stop now (not when garbage-collected), and no bar is left
        for decoder in (items, stream):
            if decoder is not None:
                decoder.close()
        if threads is not None:
            threads.restore()
        if bar:
            bar.close()
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, encoder.identity.dim), np.float32)
    return EncodedImages(decoded_all, matrix, failures)


def _decoding(encoder: Encoder, paths: list[str], workers: int, max_pixels: int, decode: str,
              decode_device: str | None, stream: DecodedStream | None,
              background: str | None) -> tuple[DecodedStream | None, Iterator]:
    """(the CPU workers' stream, or None on the GPU; the decoded items, in order): JPEGs on the model's GPU
    where it decodes them, else by the CPU workers, those of `stream` if they were already started."""
    on_device = _device_decoder(encoder, decode, decode_device, max_pixels, background)
    if on_device is not None:
        if stream is not None:
            stream.close()
        return None, iter(on_device.decode(paths))
    if stream is None:
        min_side = image_input_side(encoder) if decode == "reduced" else None
        stream = DecodedStream(paths, encoder.preprocess_image, workers, max_pixels, min_side,
                               background=background)
    return stream, iter(stream)


def _device_decoder(encoder: Encoder, decode: str, device: str | None, max_pixels: int, background: str | None):
    """A batched JPEG decoder on `device` (default: the model's CUDA GPU), for models whose preprocessing
    it reproduces (open_clip recipes); None: decoding stays with the CPU workers. "exact" decoding stays on
    the CPU: its pixels are Pillow's, value for value."""
    recipe = getattr(encoder, "recipe", None)
    if recipe is None or decode != "reduced":
        return None
    if device is None:
        model_device = getattr(encoder, "device", "cpu")
        if not gpu_decoding_available(model_device):
            return None
        device = model_device
    return DeviceJpegDecoder(recipe, device, max_pixels, background)


def _failure(failed: DecodeFailure) -> Failure:
    try:
        stat = os.stat(failed.path)
        return Failure(failed.path, "image", failed.reason, stat.st_size, stat.st_mtime)
    except OSError:
        return Failure(failed.path, "image", failed.reason)


class JournalBuffer:
    """Collects encoded items and commits them to the journal every `every` items.

    Used as a context manager it also commits what it holds when the run is
    interrupted or fails, so a resume never re-encodes work that was done.
    """

    def __init__(self, journal: Journal, every: int):
        self.journal, self.every, self.pending = journal, every, []

    def __enter__(self) -> "JournalBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()

    def add(self, entries: list[JournalEntry]) -> None:
        self.pending.extend(entries)
        if len(self.pending) >= self.every:
            self.flush()

    def flush(self) -> None:
        self.journal.append(self.pending)
        self.pending = []


def encode_images_journaled(encoder: Encoder, paths: list[str], journal: Journal, settings: EncodeSettings,
                            timer: Timer, progress: ProgressFactory | None, label: str = "images",
                            stream: DecodedStream | None = None) -> EncodedImages:
    with JournalBuffer(journal, settings.journal_every) as buffer:
        def remember(decoded: list[DecodedImage], vectors: np.ndarray) -> None:
            buffer.add([JournalEntry("image", d.path, d.content_hash, d.size, d.mtime, d.width, d.height, v)
                        for d, v in zip(decoded, vectors)])

        if settings.ray is not None:  # the workers journal their own vectors
            return _encoded_on_ray(encoder, paths, settings, timer, progress, label)
        return encode_image_files(encoder, paths, settings.batch_size, settings.workers, settings.max_pixels,
                                  progress, timer, on_batch=remember, label=label, decode=settings.decode,
                                  stream=stream, decode_device=settings.decode_device, background=settings.background)


def _encoded_on_ray(encoder: Encoder, paths: list[str], settings: EncodeSettings, timer: Timer,
                    progress: ProgressFactory | None, label: str) -> EncodedImages:
    from . import ray_engine

    bar = progress(label, len(paths)) if progress and paths else None
    decoded_all, vectors, failures = [], [], []
    batches = ray_engine.encode_images(encoder, paths, settings.ray, settings.batch_size, settings.max_pixels,
                                       settings.decode, settings.background)
    try:
        while True:
            with timer.stage("encode"):  # on the cluster: decoding and encoding together
                batch = next(batches, None)
            if batch is None:
                break
            images, encoded, failed = batch
            decoded_all += images
            vectors.append(encoded)
            failures += [_failure(f) for f in failed]
            if bar:
                bar.update(len(images) + len(failed))
    finally:  # also when interrupted: Ray Data stops its work before Ray itself is stopped
        batches.close()
        if bar:
            bar.close()
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, encoder.identity.dim), np.float32)
    return EncodedImages(decoded_all, matrix, failures)


def encode_texts_journaled(encoder: Encoder, texts: list[str], journal: Journal, settings: EncodeSettings,
                           timer: Timer, progress: ProgressFactory | None, label: str = "texts",
                           hashes: list[str] | None = None, bar: ProgressBar | None = None) -> list[np.ndarray]:
    """Vectors of `texts`, in order; each batch is journaled by content (`hashes`, if known) as it is encoded.

    With a `bar` of the caller's, that bar is advanced and left open.
    """
    hashes = hashes if hashes is not None else [text_hash(t) for t in texts]
    own_bar = bar is None
    bar = progress(label, len(texts)) if own_bar and progress and texts else bar
    chunks = []
    encoded = _text_batches(encoder, texts, hashes, settings)
    with closing(encoded), JournalBuffer(journal, settings.journal_every) as buffer:
        start = 0
        while start < len(texts):
            with timer.stage("encode"):
                vectors = next(encoded)
            if settings.ray is None:  # on Ray the workers journal their own vectors
                buffer.add([JournalEntry("text", None, digest, None, None, None, None, v)
                            for digest, v in zip(hashes[start:start + len(vectors)], vectors)])
            chunks.append(vectors)
            start += len(vectors)
            if bar:
                bar.update(len(vectors))
    if bar and own_bar:
        bar.close()
    return [vector for chunk in chunks for vector in chunk]  # views: the journal holds the same batches


def _text_batches(encoder: Encoder, texts: list[str], hashes: list[str],
                  settings: EncodeSettings) -> Iterator[np.ndarray]:
    """The texts' vectors a batch at a time, in order: here, or on a Ray cluster."""
    if settings.ray is not None:
        from . import ray_engine

        yield from ray_engine.encode_texts(encoder, texts, hashes, settings.ray, settings.batch_size)
        return
    for start in range(0, len(texts), settings.batch_size):
        yield encoder.encode_texts(texts[start:start + settings.batch_size])
