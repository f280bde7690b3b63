"""The image reader stage: files -> (metadata, preprocessed pixels) in parallel worker processes."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from .errors import ImageDecodeError
from .imaging import MAX_PIXELS, decode_picture


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


def read_one(path: str, preprocess: Callable[[Any], Any], max_pixels: int = MAX_PIXELS,
             min_side: int | None = None):
    """Never raises for a bad file: the failure is returned, to be recorded and skipped.

    `min_side`: see imaging.decode_picture (JPEGs decoded reduced down to the model's input side).
    """
    try:
        stat = os.stat(path)
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return DecodeFailure(path, f"unreadable: {exc.strerror or exc}")
    try:
        picture = decode_picture(data, path, max_pixels, min_side)
        pixels = preprocess(picture.image)
    except ImageDecodeError as exc:
        return DecodeFailure(path, str(exc))
    except Exception as exc:  # a preprocessing bug for one odd file must not end a long run
        return DecodeFailure(path, f"preprocessing failed: {type(exc).__name__}: {exc}")
    return DecodedImage(path, content_hash(data), stat.st_size, stat.st_mtime,
                        picture.width, picture.height, pixels)


class _FileDataset:
    """A map-style dataset for torch's DataLoader: index -> decoded image or failure."""

    def __init__(self, paths: Sequence[str], preprocess, max_pixels: int, min_side: int | None):
        self.paths = list(paths)
        self.preprocess = preprocess
        self.max_pixels = max_pixels
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        return _portable(read_one(self.paths[i], self.preprocess, self.max_pixels, self.min_side))


@dataclass
class _TensorPixels:
    """A torch tensor travelling between processes as a numpy array: torch would pass each tensor through a
    shared-memory file of its own, which cost more than decoding a reduced photo (280 vs 420 images/s)."""

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


def _as_list(items):
    return list(items)


DECODE_BATCH = 16  # items a worker hands over at once: fewer, larger messages between processes


def default_workers() -> int:
    """One decoding process per core, up to 8: the main process mostly waits on them. Measured on 2 cores
    (bench/bench_index.py, 1,000 JPEGs): tiny model 170 images/s with 1 worker, 205-251 with 2; ViT-B-32
    12-14 either way (model-bound)."""
    return min(8, max(1, os.cpu_count() or 1))


def iter_decoded(paths: Sequence[str], preprocess, workers: int, max_pixels: int = MAX_PIXELS,
                 min_side: int | None = None) -> Iterator[DecodedImage | DecodeFailure]:
    """DecodedImage | DecodeFailure for each path, in path order, decoded by `workers` processes.

    Workers hand over DECODE_BATCH items at a time; they are yielded one by one, so progress can be shown
    as files decode.
    """
    if workers <= 0:
        for path in paths:
            yield read_one(path, preprocess, max_pixels, min_side)
        return
    from torch.utils.data import DataLoader

    loader = DataLoader(_FileDataset(paths, preprocess, max_pixels, min_side), batch_size=DECODE_BATCH,
                        num_workers=workers, collate_fn=_as_list, prefetch_factor=4)
    for batch in loader:
        for item in batch:
            yield _restored(item)
