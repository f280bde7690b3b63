"""Decoding and encoding on a Ray cluster, through Ray Data: the same plan, journal and commit as a local run.

The driver plans (what is new, changed, removed, reused) exactly as a local run does. What must be encoded
goes to Ray Data: a pool of actors, each loading the model once (on a GPU of its own where the cluster has
them), reads, decodes and encodes the photos of each batch, and encodes the texts.
Results stream back to the driver in input order, each carrying its own path (images) or position (texts),
and are journaled as they arrive, so a run stopped midway resumes without re-encoding them; the driver
writes the segments and commits one manifest.

Install with `pip install "xmodal[ray]"`. `IndexConfig(engine="ray")` starts a local Ray with this
machine's cores (workers import what the driver imports); `ray_address="HOST:6379"` joins a running cluster,
whose nodes need xmodal (and your model's weights, or access to them) installed.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from .decode import DecodedImage, DecodeFailure, read_one
from .errors import InvalidInputError, option
from .models.base import ModelIdentity, image_input_side


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None  # None: a local Ray with this machine's cores
    actors: int = 1  # encoding actors, each holding the model
    gpus_per_actor: float | None = None  # None: 1 where the cluster has GPUs, else 0


def start(settings: RaySettings) -> bool:
    """Connect to Ray (or start a local one); True when this call started it and must stop it."""
    try:
        import ray
    except ImportError:
        raise InvalidInputError(
            f"{option('engine', 'ray')} needs Ray; install it with pip install 'xmodal[ray]'") from None
    if ray.is_initialized():
        return False
    if settings.address and not _reachable(settings.address):
        raise InvalidInputError(f"cannot join the Ray cluster at {settings.address}: nothing answers there; check "
                                "the address (ray start --head prints it) and that the head node is running")
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # Ray's C++ core logs warnings to our stderr
    env = {} if settings.address else {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
    try:
        ray.init(address=settings.address, num_cpus=None if settings.address else os.cpu_count(),
                 runtime_env=env, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise InvalidInputError(f"cannot join the Ray cluster at {settings.address}: {str(exc).splitlines()[0]}; "
                                "check the address (ray start --head prints it)") from None
    return True


def _reachable(address: str, seconds: float = 3.0) -> bool:
    """Whether a HOST:PORT address answers at all: Ray itself waits minutes on a dead one. Other forms
    ("auto", ray://...) are left to Ray."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return True
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=seconds):
            return True
    except OSError:
        return False


def stop() -> None:
    import ray

    ray.shutdown()


def _quiet_data() -> None:
    import logging

    import ray.data

    for name in ("ray", "ray.data"):  # xmodal prints its own progress; Ray's INFO lines would drown it
        logging.getLogger(name).setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.execution_options.preserve_order = True  # results come back in input order


class _Encoding:
    """A Ray Data actor: the model, loaded once per actor from the index's identity. Photos are read, decoded
    and preprocessed in the actor itself: Ray Data would fuse a separate decoding step into it anyway, and
    this way the pixels never go through Arrow blocks (that conversion had cost more than decoding)."""

    def __init__(self, identity: dict[str, Any], device: str | None, max_pixels: int, min_side: int | None):
        from .models import load_encoder_for

        wanted = ModelIdentity.from_dict(identity)
        self.encoder = load_encoder_for(wanted, device)
        if self.encoder.identity.compatibility_key() != wanted.compatibility_key():
            raise RuntimeError(f"this worker loaded {self.encoder.identity.describe()}, not {wanted.describe()}")
        self.max_pixels, self.min_side = max_pixels, min_side

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "text" in batch:
            return {"position": batch["position"], "vector": self.encoder.encode_texts([str(t) for t in batch["text"]])}
        rows = [read_one(str(path), self.encoder.preprocess_image, self.max_pixels, self.min_side)
                for path in batch["path"]]
        decoded = [r for r in rows if isinstance(r, DecodedImage)]
        vectors = np.zeros((len(rows), self.encoder.identity.dim), np.float32)
        if decoded:
            vectors[[isinstance(r, DecodedImage) for r in rows]] = \
                self.encoder.encode_preprocessed([r.pixels for r in decoded])
        return {
            "position": batch["position"],
            "path": batch["path"],
            "reason": np.array([r.reason if isinstance(r, DecodeFailure) else "" for r in rows], dtype=object),
            "content_hash": np.array([getattr(r, "content_hash", "") for r in rows], dtype=object),
            "size": np.array([getattr(r, "size", 0) for r in rows], np.int64),
            "mtime": np.array([getattr(r, "mtime", 0.0) for r in rows], np.float64),
            "width": np.array([getattr(r, "width", 0) for r in rows], np.int64),
            "height": np.array([getattr(r, "height", 0) for r in rows], np.int64),
            "vector": vectors,
        }


def _actor_options(settings: RaySettings) -> dict[str, Any]:
    import ray.data

    gpus = settings.gpus_per_actor
    if gpus is None:
        gpus = 1 if _cluster_has_gpus() else 0
    return {"compute": ray.data.ActorPoolStrategy(size=settings.actors), "num_gpus": gpus}


def encode_images(encoder, paths: list[str], settings: RaySettings, batch_size: int, max_pixels: int,
                  decode: str) -> Iterator[tuple[list[DecodedImage], np.ndarray, list[DecodeFailure]]]:
    """(decoded images, their vectors, failures) a batch at a time, in the order of `paths`."""
    import ray.data

    _quiet_data()
    identity = encoder.identity.to_dict()
    min_side = image_input_side(encoder) if decode == "reduced" else None
    dataset = ray.data.from_items([{"position": i, "path": p} for i, p in enumerate(paths)]) \
        .map_batches(_Encoding, fn_constructor_kwargs={"identity": identity, "device": _device(encoder),
                                                       "max_pixels": max_pixels, "min_side": min_side},
                     batch_size=batch_size, **_actor_options(settings))
    expected = 0
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        expected = _in_order(batch["position"], expected)
        ok = batch["reason"] == ""
        images = [DecodedImage(str(batch["path"][i]), str(batch["content_hash"][i]), int(batch["size"][i]),
                               float(batch["mtime"][i]), int(batch["width"][i]), int(batch["height"][i]), None)
                  for i in np.flatnonzero(ok)]
        failures = [DecodeFailure(str(batch["path"][i]), str(batch["reason"][i])) for i in np.flatnonzero(~ok)]
        yield images, np.asarray(batch["vector"][ok], np.float32).reshape(-1, encoder.identity.dim), failures


def encode_texts(encoder, texts: list[str], settings: RaySettings, batch_size: int) -> Iterator[np.ndarray]:
    """The texts' vectors, a batch at a time, in order."""
    import ray.data

    _quiet_data()
    dataset = ray.data.from_items([{"position": i, "text": t} for i, t in enumerate(texts)]) \
        .map_batches(_Encoding, fn_constructor_kwargs={"identity": encoder.identity.to_dict(),
                                                       "device": _device(encoder), "max_pixels": 0,
                                                       "min_side": None},
                     batch_size=batch_size, **_actor_options(settings))
    expected = 0
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        expected = _in_order(batch["position"], expected)
        yield np.asarray(batch["vector"], np.float32)


def _in_order(positions: np.ndarray, expected: int) -> int:
    """Row ids are given in input order, so results must come back in it (a Ray Data setting, checked)."""
    if not np.array_equal(positions, np.arange(expected, expected + len(positions))):
        raise RuntimeError("Ray returned results out of input order; DataContext.execution_options.preserve_order "
                           "must stay on")
    return expected + len(positions)


def _device(encoder) -> str | None:
    """Actors choose their own device (a GPU of theirs, if they were given one), unless the driver's model
    was asked to run on the CPU."""
    return "cpu" if getattr(encoder, "device", None) == "cpu" and not _cluster_has_gpus() else None


def _cluster_has_gpus() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) >= 1
