"""CLIP-like synthetic collections: clustered unit vectors in 512-d, fed through the normal indexing path.

A corpus row's text is "item N"; the model `python:synthetic:make_encoder` (bench/ on PYTHONPATH)
turns it into item N's vector. Like CLIP embeddings, the vectors share a common direction (two
unrelated items have cosine about 0.2), belong to one of TOPICS themes (same theme: about 0.45) and
one of CLUSTERS sub-themes inside it (same sub-theme: about 0.7), plus noise of their own. Any other
text is hashed into the same space. So a million "precomputed" vectors travel through `xmodal index`
exactly as encoded ones would.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from xmodal.indexer.models.base import ModelIdentity

DIM = 512
TOPICS = 100
CLUSTERS = 10_000  # sub-themes; item N belongs to sub-theme N % CLUSTERS, whose theme is that % TOPICS
WEIGHTS = {"common": 0.5, "topic": 0.6, "cluster": 0.6, "noise": 0.6}
_ITEM = re.compile(r"item (\d+)$")


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def centres() -> np.ndarray:
    """Each sub-theme's centre: the common direction, its theme's and its own, weighted."""
    rng = np.random.default_rng(12345)
    common = _unit(rng.normal(size=DIM))
    topics = _unit(rng.normal(size=(TOPICS, DIM)))
    own = _unit(rng.normal(size=(CLUSTERS, DIM)))
    return (WEIGHTS["common"] * common + WEIGHTS["topic"] * topics[np.arange(CLUSTERS) % TOPICS]
            + WEIGHTS["cluster"] * own).astype(np.float32)


NOISE_TABLES = (4093, 4091, 4079)  # primes: item N's noise mixes row N mod each, unique up to 6.8e10 items


def noise_tables() -> list[np.ndarray]:
    rng = np.random.default_rng(54321)
    return [rng.standard_normal((size, DIM), dtype=np.float32) for size in NOISE_TABLES]


_TABLES: dict[str, object] = {}


def item_vectors(numbers: np.ndarray, centre_table: np.ndarray | None = None) -> np.ndarray:
    """Unit vectors of items `numbers` (any ints; the same number always gives the same vector).

    The noise is a sum of rows of three fixed tables picked by N modulo three primes: Gaussian,
    independent enough between items, and vectorised (a generator per item was the bench's bottleneck).
    """
    if "noise" not in _TABLES:
        _TABLES["noise"], _TABLES["centres"] = noise_tables(), centres()
    table = _TABLES["centres"] if centre_table is None else centre_table
    numbers = np.asarray(numbers, dtype=np.int64)
    noise = sum(t[numbers % len(t)] for t in _TABLES["noise"]) / np.sqrt(len(NOISE_TABLES))
    return _unit(table[numbers % CLUSTERS] + noise * (WEIGHTS["noise"] / np.sqrt(DIM)))


COLOURS = ["red", "blue", "green", "black", "white", "yellow", "silver", "brown"]
THINGS = ["car", "bicycle", "mug", "dress", "lamp", "sofa", "phone", "watch", "boot", "kettle"]
PLACES = ["on a beach", "in a shop window", "on a white background", "in the rain", "at night", "in a kitchen"]


def caption(number: int) -> str:
    """A product-like caption per number, for the real (tiny) model: item N of a small grammar, numbered."""
    return (f"a {COLOURS[number % 8]} {THINGS[number // 8 % 10]} {PLACES[number // 80 % 6]}, "
            f"listing {number}")


def texts_of(numbers: np.ndarray, kind: str = "synthetic") -> list[str]:
    """Corpus texts: "item N" for the synthetic model (which maps it to its vector), captions for a real one."""
    return [f"item {n}" if kind == "synthetic" else caption(n) for n in np.asarray(numbers).tolist()]


def write_corpus(path: Path, numbers: np.ndarray, kind: str = "synthetic") -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = pa.array(texts_of(numbers, kind), pa.string())
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
