"""The indexer: sources -> encoder -> store -> index, composed by one runner that times each stage."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np

from . import ann, sources
from .decode import DecodedImage, DecodeFailure, default_workers, iter_decoded_batches
from .errors import InvalidInputError, ModelMismatchError
from .imaging import MAX_PIXELS
from .models import DEFAULT_MODEL, Encoder, load_encoder
from .store import AnnSpec, Failure, IndexDir, ItemRow, Manifest
from .store.tables import write_embeddings, write_failures, write_items


class ProgressBar(Protocol):
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


ProgressFactory = Callable[[str, int], ProgressBar]


@dataclass
class IndexConfig:
    images: list[Path] = field(default_factory=list)
    texts: list[Path] = field(default_factory=list)
    text_column: str | None = None
    model: str = DEFAULT_MODEL
    pretrained: str | None = None
    device: str | None = None
    batch_size: int = 64
    workers: int | None = None
    index_type: str = "auto"
    max_pixels: int = MAX_PIXELS


@dataclass
class IndexReport:
    path: Path
    counts: dict[str, int]
    failures: list[Failure]
    seconds: float
    stage_seconds: dict[str, float]
    device: str
    model: str

    @property
    def indexed(self) -> int:
        return sum(self.counts.values())

    @property
    def items_per_second(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Encoded:
    rows: list[ItemRow] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def matrix(self, dim: int) -> np.ndarray:
        return np.concatenate(self.vectors) if self.vectors else np.zeros((0, dim), np.float32)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start


def build_index(out: str | Path, config: IndexConfig, progress: ProgressFactory | None = None,
                encoder: Encoder | None = None) -> IndexReport:
    """Index `config`'s sources into `out`; inputs are checked before any model is loaded."""
    started = time.perf_counter()
    timer = _Timer()
    index_dir = IndexDir(Path(out))
    index_dir.check_writable_target()
    with timer.stage("read_sources"):
        image_paths = sources.find_images(config.images) if config.images else []
        texts = [r for path in config.texts for r in sources.read_texts(path, config.text_column)]
    if not image_paths and not texts:
        raise InvalidInputError("nothing to index; give an image folder, --texts FILE, or both")
    previous = index_dir.read_manifest() if index_dir.is_index() else None
    with timer.stage("load_model"):
        encoder = encoder or load_encoder(config.model, config.pretrained, config.device)
    if previous and previous.model.compatibility_key() != encoder.identity.compatibility_key():
        raise ModelMismatchError(
            f"{out} was built with {previous.model.describe()}, not {encoder.identity.describe()}; "
            "index into a new --out folder, or use the index's model"
        )
    images = _encode_images(encoder, image_paths, config, timer, progress)
    text_part = _encode_texts(encoder, texts, len(images.rows), config, timer, progress)
    with timer.stage("write"):
        manifest = _write_generation(index_dir, encoder, images, text_part, config, previous,
                                     seconds_so_far=time.perf_counter() - started)
    failures = images.failures + text_part.failures
    seconds = time.perf_counter() - started
    return IndexReport(index_dir.root, dict(manifest.counts), failures, seconds,
                       timer.seconds, encoder.device, encoder.identity.describe())


@dataclass
class EncodedImages:
    """Images that decoded, in input order, with their vectors; and those that did not."""

    images: list[DecodedImage]
    vectors: np.ndarray
    failures: list[Failure]


def encode_image_files(encoder: Encoder, paths: list[str], batch_size: int = 64, workers: int | None = None,
                       max_pixels: int = MAX_PIXELS, progress: ProgressFactory | None = None,
                       timer: _Timer | None = None) -> EncodedImages:
    """Decode (in worker processes) and encode image files; bad files become failures."""
    timer = timer or _Timer()
    decoded_all: list[DecodedImage] = []
    vectors: list[np.ndarray] = []
    failures: list[Failure] = []
    bar = progress("images", len(paths)) if progress and paths else None
    workers = default_workers() if workers is None else workers
    batches = iter_decoded_batches(paths, encoder.preprocess_image, batch_size, workers, max_pixels)
    while True:
        with timer.stage("decode_wait"):
            batch = next(batches, None)
        if batch is None:
            break
        decoded = [b for b in batch if isinstance(b, DecodedImage)]
        failures.extend(Failure(b.path, "image", b.reason) for b in batch if isinstance(b, DecodeFailure))
        if decoded:
            with timer.stage("encode"):
                vectors.append(encoder.encode_preprocessed([d.pixels for d in decoded]))
            for d in decoded:
                d.pixels = None  # keep metadata only: memory stays bounded by the batch
            decoded_all.extend(decoded)
        if bar:
            bar.update(len(batch))
    if bar:
        bar.close()
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, encoder.identity.dim), np.float32)
    return EncodedImages(decoded_all, matrix, failures)


def _encode_images(encoder: Encoder, paths: list[str], config: IndexConfig, timer: _Timer,
                   progress: ProgressFactory | None) -> _Encoded:
    if not paths:
        return _Encoded()
    result = encode_image_files(encoder, paths, config.batch_size, config.workers, config.max_pixels,
                                progress, timer)
    rows = [_image_row(i, d) for i, d in enumerate(result.images)]
    return _Encoded(rows=rows, vectors=[result.vectors], failures=result.failures)


def _image_row(row_id: int, image: DecodedImage) -> ItemRow:
    return ItemRow(row_id=row_id, modality="image", path=image.path, content_hash=image.content_hash,
                   size=image.size, mtime=image.mtime, width=image.width, height=image.height)


def _encode_texts(encoder: Encoder, texts: list[sources.TextRecord], first_row_id: int,
                  config: IndexConfig, timer: _Timer, progress: ProgressFactory | None) -> _Encoded:
    from .decode import content_hash

    out = _Encoded()
    if not texts:
        return out
    bar = progress("texts", len(texts)) if progress else None
    for start in range(0, len(texts), config.batch_size):
        chunk = texts[start:start + config.batch_size]
        with timer.stage("encode"):
            out.vectors.append(encoder.encode_texts([t.text for t in chunk]))
        for offset, record in enumerate(chunk):
            data = record.text.encode("utf-8")
            out.rows.append(ItemRow(row_id=first_row_id + start + offset, modality="text",
                                    text=record.text, source=record.source,
                                    content_hash=content_hash(data), size=len(data),
                                    metadata=record.metadata or None))
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    return out


def _write_generation(index_dir: IndexDir, encoder: Encoder, images: _Encoded, texts: _Encoded,
                      config: IndexConfig, previous: Manifest | None, seconds_so_far: float) -> Manifest:
    generation, staging = index_dir.new_staging()
    dim = encoder.identity.dim
    ann_specs: dict[str, AnnSpec] = {}
    for modality, part in (("image", images), ("text", texts)):
        row_ids = np.array([r.row_id for r in part.rows], dtype=np.int64)
        vectors = part.matrix(dim)
        write_embeddings(staging / f"embeddings-{modality}.parquet", row_ids, vectors)
        if len(row_ids):
            spec = ann.choose_ann(len(row_ids), config.index_type)
            ann.VectorIndex.build(vectors, row_ids, spec).save(staging / f"{modality}.faiss")
            ann_specs[modality] = spec
    write_items(staging / "items.parquet", images.rows + texts.rows)
    write_failures(staging / "failures.parquet", images.failures + texts.failures)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest = Manifest(
        generation=generation,
        model=encoder.identity,
        counts={"image": len(images.rows), "text": len(texts.rows)},
        failures=len(images.failures) + len(texts.failures),
        ann=ann_specs,
        next_row_id=len(images.rows) + len(texts.rows),
        created_at=previous.created_at if previous else now,
        updated_at=now,
        sources={"images": [str(Path(p).resolve()) for p in config.images],
                 "texts": [str(Path(p).resolve()) for p in config.texts]},
        last_run={"encoded": len(images.rows) + len(texts.rows),
                  "failed": len(images.failures) + len(texts.failures),
                  "seconds": round(seconds_so_far, 3), "finished_at": now},
    )
    index_dir.commit(staging, manifest)
    return manifest
