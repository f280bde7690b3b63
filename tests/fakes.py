"""A deterministic fake encoder for tests: it "understands" a fixed set of concepts.

Texts: each concept word (English or Chinese) present adds that concept's axis.
Images: the dominant colour of the saturated pixels gives a colour axis, and the
PNG "Description" chunk (written by data/make_catalog.py) gives the object axes.
So "a red car" lands nearest the red car, then other red things and other cars.
Use it from the CLI as --model python:fakes:make_encoder with tests/ on PYTHONPATH.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import replace
from typing import Sequence

import numpy as np

from xmodal.indexer.models.base import ModelIdentity, l2_normalize

CONCEPTS = ["red", "blue", "green", "yellow", "black", "white",
            "car", "shoe", "shirt", "mug", "bicycle", "apple"]
SYNONYMS = {
    "红色": "red", "红": "red", "蓝色": "blue", "绿色": "green", "黄色": "yellow", "黑色": "black",
    "白色": "white", "汽车": "car", "车": "car", "鞋": "shoe", "sneakers": "shoe", "t-shirt": "shirt",
    "杯": "mug", "自行车": "bicycle", "苹果": "apple", "apples": "apple", "cars": "car",
    "shoes": "shoe", "hatchback": "car",
}
PALETTE = {"red": (200, 30, 35), "blue": (35, 70, 190), "green": (40, 150, 60),
           "yellow": (235, 200, 30), "black": (25, 25, 25), "white": (250, 250, 250)}
DIM = len(CONCEPTS) + 1  # the last axis is a constant, so concept-free inputs are not zero vectors


def concept_vector(words: Sequence[str]) -> np.ndarray:
    vector = np.zeros(DIM, np.float32)
    vector[-1] = 0.25
    for word in words:
        if word in CONCEPTS:
            vector[CONCEPTS.index(word)] = 1.0
    return vector


def text_concepts(text: str) -> list[str]:
    """English by whole word ("restored" is not "red"); Chinese, which has no spaces, by substring."""
    lowered = text.lower()
    words = set(re.findall(r"[a-z]+(?:-[a-z]+)?", lowered))
    found = [w for w in CONCEPTS if w in words]
    found += [c for s, c in SYNONYMS.items() if (s in words if s.isascii() else s in lowered)]
    return found


def dominant_colour(pixels: np.ndarray) -> str:
    """The palette colour nearest most non-backdrop pixels."""
    flat = pixels.reshape(-1, 3).astype(np.float32)
    backdrop = np.all(np.abs(flat - np.array([236, 236, 232])) < 6, axis=1)
    flat = flat[~backdrop] if (~backdrop).any() else flat
    names = list(PALETTE)
    centres = np.array([PALETTE[n] for n in names], np.float32)
    nearest = np.argmin(((flat[:, None, :] - centres[None]) ** 2).sum(-1), axis=1)
    return names[int(np.bincount(nearest, minlength=len(names)).argmax())]


class FakeEncoder:
    def __init__(self, device: str = "cpu"):
        self.device = "cpu" if device == "auto" else device
        self.identity = ModelIdentity(family="fake", spec="python:fakes:make_encoder", pretrained=None,
                                      dim=DIM, preprocess={"kind": "concepts"}, versions={})

    def preprocess_image(self, image) -> np.ndarray:
        words = [dominant_colour(np.asarray(image.convert("RGB").resize((64, 48))))]
        words += str(image.info.get("Description", "")).split()
        return concept_vector(words)

    def encode_preprocessed(self, batch) -> np.ndarray:
        return l2_normalize(np.stack(list(batch)))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return l2_normalize(np.stack([concept_vector(text_concepts(t)) for t in texts]))


class SlowFakeEncoder(FakeEncoder):
    """Takes its time per batch ($FAKE_BATCH_SECONDS, default 0.2) and notes each batch in $FAKE_PROGRESS_FILE,
    so a test can interrupt it mid-run."""

    def encode_preprocessed(self, batch) -> np.ndarray:
        time.sleep(float(os.environ.get("FAKE_BATCH_SECONDS", "0.2")))
        vectors = super().encode_preprocessed(batch)
        with open(os.environ["FAKE_PROGRESS_FILE"], "a") as handle:
            handle.write(f"{len(vectors)}\n")
        return vectors


class SlowEverywhereEncoder(SlowFakeEncoder):
    """SlowFakeEncoder under a name of its own: Ray's actors load the model by the name the index records,
    and SlowFakeEncoder's is the fast one's."""

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self.identity = replace(self.identity, spec="python:fakes:make_slow_everywhere_encoder")


class CrashOnceEncoder(FakeEncoder):
    """Ends its own process at its first batch of photos, once (a Ray worker lost mid-run); `marker`, given as
    the weights, is the file that says it has happened."""

    def __init__(self, marker: str, device: str = "cpu"):
        super().__init__(device)
        self.marker = marker
        self.identity = replace(self.identity, spec="python:fakes:make_crashing_encoder", pretrained=marker)

    def encode_preprocessed(self, batch) -> np.ndarray:
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return super().encode_preprocessed(batch)


def make_crashing_encoder(pretrained: str | None, device: str) -> FakeEncoder:
    return CrashOnceEncoder(pretrained, device)


def make_encoder(pretrained: str | None, device: str) -> FakeEncoder:
    return FakeEncoder(device)


def make_slow_encoder(pretrained: str | None, device: str) -> FakeEncoder:
    return SlowFakeEncoder(device)


def make_slow_everywhere_encoder(pretrained: str | None, device: str) -> FakeEncoder:
    return SlowEverywhereEncoder(device)


class ColourBlindEncoder(FakeEncoder):
    """Sees the kind of thing and no colour: every photo without a Description is the same vector, so any
    check that tells colourways apart is the content check's, whatever the model sees."""

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self.identity = replace(self.identity, spec="python:fakes:make_colour_blind_encoder")

    def preprocess_image(self, image) -> np.ndarray:
        return concept_vector(str(image.info.get("Description", "")).split())


def make_colour_blind_encoder(pretrained: str | None, device: str) -> FakeEncoder:
    return ColourBlindEncoder(device)


class HashEncoder:
    """Deterministic random unit vectors: a text's from its bytes, an image's from its pixels. No ties.

    Mixed with a shared direction per class of item ("kind:..." in a text; the image's mean
    colour band for an image), so neighbours are real, as with a learned model.
    """

    def __init__(self, device: str = "cpu", dim: int = 24):
        self.device = "cpu" if device == "auto" else device
        self.identity = ModelIdentity(family="fake", spec="python:fakes:make_hash_encoder", pretrained=None,
                                      dim=dim, preprocess={"kind": "hash"}, versions={})

    def _vector(self, data: bytes, group: int) -> np.ndarray:
        import hashlib

        seed = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
        noise = np.random.default_rng(seed).normal(size=self.identity.dim)
        centre = np.random.default_rng(group).normal(size=self.identity.dim)
        return (centre + 0.6 * noise).astype(np.float32)

    def preprocess_image(self, image) -> np.ndarray:
        pixels = np.asarray(image.convert("RGB").resize((8, 8)))
        return self._vector(pixels.tobytes(), int(pixels.mean()) // 32)

    def encode_preprocessed(self, batch) -> np.ndarray:
        return l2_normalize(np.stack(list(batch)))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        groups = [int(m.group(1)) if (m := re.search(r"kind:(\d+)", t)) else 99 for t in texts]
        return l2_normalize(np.stack([self._vector(t.encode(), g) for t, g in zip(texts, groups)]))


def make_hash_encoder(pretrained: str | None, device: str) -> HashEncoder:
    return HashEncoder(device)


class NodeNotingEncoder(FakeEncoder):
    """As a Ray actor, writes the id of the node it runs on into the folder given as the weights (so a test
    can take that node down), and takes 0.3 s a batch of photos (so there is a midway to take it down in)."""

    def __init__(self, folder: str, device: str = "cpu"):
        super().__init__(device)
        self.identity = replace(self.identity, spec="python:fakes:make_node_noting_encoder", pretrained=folder)
        import ray

        if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
            node = ray.get_runtime_context().get_node_id()
            open(os.path.join(folder, node), "w").close()

    def encode_preprocessed(self, batch) -> np.ndarray:
        time.sleep(0.3)
        return super().encode_preprocessed(batch)


def make_node_noting_encoder(pretrained: str | None, device: str) -> FakeEncoder:
    return NodeNotingEncoder(pretrained, device)
