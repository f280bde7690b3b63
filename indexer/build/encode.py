"""The encoder stage: decoded images and texts -> vectors, committed to the resume journal as they come."""
from __future__ import annotations

from contextlib import closing
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .decode import DecodedImage, DecodedStream
from .encode_files import EncodedImages, ProgressBar, ProgressFactory, Timer, encode_image_files, failure_of
from ..imaging import DEFAULT_BACKGROUND, MAX_PIXELS
from ..models import Encoder
from .ray_engine import RayRun
from .plan import text_hash
from ..store.journal import Journal, JournalEntry

__all__ = ["EncodeSettings", "ProgressFactory", "Timer", "encode_image_files", "encode_images_journaled",
           "encode_texts_journaled"]

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
            failures += [failure_of(f) for f in failed]
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
