"""The query engine: encoder -> ANN index -> item store -> typed hits.

Open once, query many times: the model loads on the first query that needs it.
Items and FAISS indexes are read when the index is opened, so an open index
keeps answering even after later commits have collected its generation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from indexer.ann import VectorIndex
from indexer.errors import ImageDecodeError, InvalidInputError, ModelMismatchError, option
from indexer.imaging import load_image
from indexer.models import Encoder, encode_images, load_encoder_for
from indexer.store import MODALITIES, IndexDir, Manifest
from indexer.store.tables import read_embeddings, read_failures, read_items

from .hits import Hit

TARGETS = MODALITIES


class SearchIndex:
    def __init__(self, index_dir: IndexDir, manifest: Manifest, device: str | None = None,
                 encoder: Encoder | None = None):
        self._dir = index_dir
        self.manifest = manifest
        self._device = device
        self._generation = index_dir.generation_path(manifest.generation)
        self._items = read_items(self._generation / "items.parquet")
        self._row_ids = self._items.column("row_id").to_numpy()
        self._order = np.argsort(self._row_ids, kind="stable")
        self._ann = {m: VectorIndex.load(self._generation / f"{m}.faiss", spec) for m, spec in manifest.ann.items()}
        self._encoder: Encoder | None = None
        if encoder is not None:
            self._check_model(encoder)
            self._encoder = encoder

    @property
    def path(self) -> Path:
        return self._dir.root

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = load_encoder_for(self.manifest.model, self._device)
            self._check_model(self._encoder)
        return self._encoder

    def __len__(self) -> int:
        return len(self._row_ids)

    def search(self, text: str | None = None, image: str | Path | Image.Image | None = None,
               target: str = "image", k: int = 10) -> list[Hit]:
        """Hits for one query (a text or an image), best first, from the `target` modality."""
        _check_query(text, image, target, k)
        self._check_holds(target)  # before the model loads: that can take seconds
        return self.search_vector(self._embed(text, image), target=target, k=k)

    def search_vector(self, vector: np.ndarray, target: str = "image", k: int = 10) -> list[Hit]:
        _check_target(target)
        vector = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if vector.shape[1] != self.manifest.model.dim:
            raise ModelMismatchError(
                f"query vector has {vector.shape[1]} dimensions, the index {self.manifest.model.dim}; "
                "embed the query with the index's model"
            )
        self._check_holds(target)
        result = self._ann[target].search(vector, k)[0]
        return [self._hit(rank, float(score), int(row_id))
                for rank, (score, row_id) in enumerate(zip(result.scores, result.row_ids), start=1)]

    def embed_text(self, text: str) -> np.ndarray:
        return self.encoder.encode_texts([text])[0]

    def embed_image(self, image: str | Path | Image.Image) -> np.ndarray:
        picture = image if isinstance(image, Image.Image) else _load_query_image(image)
        return encode_images(self.encoder, [picture.convert("RGB")])[0]

    def failures(self):
        return read_failures(self._generation / "failures.parquet")

    def embeddings(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """(row_ids, vectors) stored for `modality`, as the indexer wrote them."""
        _check_target(modality)
        return read_embeddings(self._generation / f"embeddings-{modality}.parquet")

    def item(self, row_id: int) -> dict[str, Any]:
        position = self._position(row_id)
        return {name: self._items.column(name)[position].as_py() for name in self._items.column_names}

    def _embed(self, text: str | None, image) -> np.ndarray:
        return self.embed_text(text) if text is not None else self.embed_image(image)

    def _check_holds(self, target: str) -> None:
        if target in self._ann:
            return
        held = ", ".join(f"{n} {m}" + ("s" if n != 1 else "") for m, n in self.manifest.counts.items() if n) or "nothing"
        others = [m for m, n in self.manifest.counts.items() if n and m != target]
        hint = f"search {option('target', others[0])} instead, or " if others else ""
        source = option("texts", "FILE") if target == "text" else "an image folder"
        raise InvalidInputError(f"{self.path} holds no {target}s (it holds {held}); {hint}index {source} into it")

    def _position(self, row_id: int) -> int:
        found = np.searchsorted(self._row_ids, row_id, sorter=self._order)
        if found >= len(self._order) or self._row_ids[self._order[found]] != row_id:
            raise KeyError(f"row id {row_id} is not in this index")
        return int(self._order[found])

    def _hit(self, rank: int, score: float, row_id: int) -> Hit:
        row = self.item(row_id)
        return Hit(rank=rank, score=score, row_id=row_id, modality=row["modality"],
                   path=row.get("path"), text=row.get("text"), metadata=row.get("metadata") or {})

    def _check_model(self, encoder: Encoder) -> None:
        built, given = self.manifest.model, encoder.identity
        if built.compatibility_key() != given.compatibility_key():
            raise ModelMismatchError(
                f"this index was built with {built.describe()}, not {given.describe()}; "
                "query it with the model that built it"
            )


OPEN_ATTEMPTS = 3


def open_index(path: str | Path, device: str | None = None, encoder: Encoder | None = None) -> SearchIndex:
    """Open an index for searching; raises NotAnIndexError if `path` is not one."""
    index_dir = IndexDir(Path(path))
    for _ in range(OPEN_ATTEMPTS - 1):
        try:
            return SearchIndex(index_dir, index_dir.read_manifest(), device=device, encoder=encoder)
        except FileNotFoundError:
            continue  # two commits landed between reading the manifest and its files: read the new one
    return SearchIndex(index_dir, index_dir.read_manifest(), device=device, encoder=encoder)


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise InvalidInputError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")


def _check_query(text, image, target: str, k: int) -> None:
    if (text is None) == (image is None):
        raise InvalidInputError("give exactly one query: a text or an image")
    if text is not None and not text.strip():
        raise InvalidInputError("the query text is empty; type what you are looking for")
    if not isinstance(k, int) or k < 1:
        raise InvalidInputError(f"k must be a whole number of at least 1 (got {k!r})")
    _check_target(target)


def _load_query_image(path: str | Path) -> Image.Image:
    if not Path(path).is_file():
        raise InvalidInputError(f"query image {path} does not exist; check the path")
    try:
        return load_image(path)
    except ImageDecodeError as exc:
        raise InvalidInputError(f"query image {path} cannot be read ({exc}); use a valid image file") from None
