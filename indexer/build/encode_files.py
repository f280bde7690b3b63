"""Image files -> vectors here, on this machine: decoded by worker processes (or on the model's GPU) and
encoded in batches. The build's encoder stage (encode.py) and a Ray actor (ray_engine.py) both call it."""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import numpy as np

from .decode import DecodedImage, DecodedStream, DecodeFailure, default_workers
from .gpu_decode import DeviceJpegDecoder, gpu_decoding_available
from ..imaging import DEFAULT_BACKGROUND, MAX_PIXELS
from ..models import Encoder
from ..models.base import image_input_side
from .model_threads import for_cpu_model
from ..store.tables import Failure

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
                failures.append(failure_of(item))
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
        stream = DecodedStream(paths, transferred_preprocess(encoder), workers, max_pixels, min_side,
                               background=background)
    return stream, iter(stream)


def transferred_preprocess(encoder: Encoder):
    """What decoding workers run on each image: the encoder's compact form where it has one (an open_clip
    recipe's uint8 crop, a quarter of the bytes to pass back), else its preprocessing."""
    return getattr(encoder, "preprocess_compact", None) or encoder.preprocess_image


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


def failure_of(failed: DecodeFailure) -> Failure:
    try:
        stat = os.stat(failed.path)
        return Failure(failed.path, "image", failed.reason, stat.st_size, stat.st_mtime)
    except OSError:
        return Failure(failed.path, "image", failed.reason)
