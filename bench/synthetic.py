"""CLIP-like synthetic collections: clustered unit vectors in 512-d, fed through the normal indexing path.

A corpus row's text is "item N"; the model `python:synthetic:make_encoder` (bench/ on PYTHONPATH)
turns it into item N's vector: a unit vector near one of CLUSTERS random directions, like the
themes of a real collection (two items of a theme have cosine about 0.5, an item and its
theme's centre about 0.7). Any other text is hashed into the same space. So a million "precomputed"
vectors travel through `xmodal index` exactly as encoded ones would.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from indexer.models.base import ModelIdentity

DIM = 512
CLUSTERS = 1000
SPREAD = 1.0  # noise norm relative to the centre's
_ITEM = re.compile(r"item (\d+)$")


def centres() -> np.ndarray:
    found = np.random.default_rng(12345).normal(size=(CLUSTERS, DIM)).astype(np.float32)
    return found / np.linalg.norm(found, axis=1, keepdims=True)


def item_vectors(numbers: np.ndarray, centre_table: np.ndarray | None = None) -> np.ndarray:
    """Unit vectors of items `numbers` (any ints; the same number always gives the same vector)."""
    table = centres() if centre_table is None else centre_table
    out = np.empty((len(numbers), DIM), np.float32)
    for i, number in enumerate(np.asarray(numbers, dtype=np.int64).tolist()):
        noise = np.random.default_rng(number).standard_normal(DIM, dtype=np.float32)
        out[i] = table[number % CLUSTERS] + noise * (SPREAD / np.sqrt(DIM))
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def write_corpus(path: Path, numbers: np.ndarray) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = pa.array([f"item {n}" for n in np.asarray(numbers).tolist()], pa.string())
    pq.write_table(pa.table({"text": texts}), path, row_group_size=100_000)


class SyntheticEncoder:
    def __init__(self, device: str = "cpu"):
        self.device = "cpu"
        self.identity = ModelIdentity(family="synthetic", spec="python:synthetic:make_encoder", pretrained=None,
                                      dim=DIM, preprocess={"kind": "clustered", "clusters": CLUSTERS}, versions={})
        self._centres = centres()

    def encode_texts(self, texts) -> np.ndarray:
        numbers = []
        for text in texts:
            match = _ITEM.match(text)
            numbers.append(int(match.group(1)) if match else
                           int.from_bytes(hashlib.blake2b(text.encode(), digest_size=7).digest(), "little"))
        return item_vectors(np.array(numbers, np.int64), self._centres)

    def preprocess_image(self, image):
        raise NotImplementedError("the synthetic model embeds texts only")

    def encode_preprocessed(self, batch):
        raise NotImplementedError("the synthetic model embeds texts only")


def make_encoder(pretrained: str | None, device: str) -> SyntheticEncoder:
    return SyntheticEncoder(device)
