"""Decoding and encoding on a Ray cluster, through Ray Data: the same plan, journal and commit as a local run.

The driver plans (what is new, changed, removed, reused) exactly as a local run does. What must be encoded
goes to Ray Data: a pool of actors, each loading the model once (on a GPU of its own where the cluster has
them), reads, decodes and encodes the photos of each batch, and encodes the texts.
Each actor writes the vectors of its batch into the index's resume journal itself (so the index's folder
must be on storage every node reaches, at the same path: check_storage) and returns only where each vector
is; a run stopped midway, even before the driver heard of a batch, resumes without re-encoding it. The
driver reads them back in input order, each checked against its own path (images) or position (texts),
writes the segments and commits one manifest.

Install with `pip install "xmodal[ray]"`. `IndexConfig(engine="ray")` starts a local Ray with this
machine's cores (workers import what the driver imports); `ray_address="HOST:6379"` joins a running cluster,
whose nodes need xmodal (and your model's weights, or access to them) installed.
"""
from __future__ import annotations

import os
import re
import sys
import uuid
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .decode import DecodedImage, DecodeFailure
from ..errors import ClusterError, InvalidInputError, option
from ..models.base import ModelIdentity
from ..processes import Reaper, descendants, end_processes
from ..store import journal
from ..store.journal import JournalEntry, worker_chunk_name, write_chunk


@dataclass(frozen=True)
class RaySettings:
    address: str | None = None  # None: a local Ray with this machine's cores
    actors: int | None = None  # encoding actors, each holding the model; None: one per GPU, else per CPU core
    gpus_per_actor: float | None = None  # None: 1 where the cluster has GPUs, else 0


class RayRun:
    """Ray for one indexing run: joined (or started locally) the first time the run has work for it, left
    (or stopped) at the run's end; a run that encodes nothing never starts it. The index's journal folder
    is where the workers write vectors."""

    def __init__(self, settings: RaySettings, journal_folder: Path):
        self.settings, self.journal_folder = settings, Path(journal_folder)
        self._ready = self._started = False

    def ensure(self) -> None:
        if not self._ready:
            self._started = not _import_ray().is_initialized()  # a start interrupted half-way is stopped too
            self._started = start(self.settings)
            self._ready = True
            check_storage(self.journal_folder)

    def close(self) -> None:
        if self._started:
            stop(local=self.settings.address is None)
        self._ready = self._started = False

    def add_in_shards(self, index, vectors: np.ndarray, row_ids: np.ndarray):
        """ann.VectorAdder: too few vectors for two shards are added here, without starting Ray for them."""
        from ..store.ann import add_here

        if len(vectors) < 2 * SHARD_ROWS:
            return add_here(index, vectors, row_ids)
        self.ensure()
        return add_in_shards(index, vectors, row_ids)


def check_available(address: str | None) -> None:
    """Fail now, before planning, on what can be known without starting Ray: Ray missing, a dead address."""
    _import_ray()
    _check_reachable(address)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise InvalidInputError(
            f"{option('engine', 'ray')} needs Ray; install it with pip install 'xmodal[ray]'") from None
    return ray


def _check_reachable(address: str | None) -> None:
    if address and not _reachable(address):
        raise InvalidInputError(f"cannot join the Ray cluster at {address}: nothing answers there; check "
                                "the address (ray start --head prints it) and that the head node is running")


def start(settings: RaySettings) -> bool:
    """Connect to Ray (or start a local one); True when this call started it and must stop it."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    _check_reachable(settings.address)
    if settings.address is None:
        _start_local(ray)
        return True
    try:
        ray.init(address=settings.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as exc:
        token = "set RAY_AUTH_MODE=token here too if the cluster uses token authentication (ray start's " \
            "default since Ray 2.59), else check" if os.environ.get("RAY_AUTH_MODE") != "token" else "check"
        raise InvalidInputError(f"cannot join the Ray cluster at {settings.address}: {str(exc).splitlines()[0]}; "
                                f"{token} the address (ray start --head prints it)") from None
    return True


_local_reaper: Reaper | None = None  # ends the local Ray's processes when this process ends, however it ends


def _start_local(ray) -> None:
    """A Ray of this run's own, even where a cluster runs on this machine (address="local": never joined
    by accident), whose workers import what this process imports. Its processes are marked for a reaper:
    killed with this process, the raylet and the GCS end by themselves, but the dashboard and runtime-env
    agents lived on for good (still there 40 s after a kill -9 of the driver)."""
    global _local_reaper
    _local_reaper = _local_reaper or Reaper(_ray_commands())
    try:
        with _local_reaper.marking():
            _init_local(ray)
    except BaseException:
        _close_reaper()
        raise


def _close_reaper() -> None:
    global _local_reaper
    reaper, _local_reaper = _local_reaper, None
    if reaper is not None:
        reaper.close()


def _init_local(ray) -> None:
    try:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ClusterError(f"cannot start a local Ray: {str(exc).splitlines()[0]}; or join a running cluster "
                           f"with {option('ray_address', 'HOST:PORT')}") from None


@contextmanager
def _cluster_errors():
    """Ray's failures (an actor that cannot start, a task that keeps failing) as one line naming the cause."""
    import ray.exceptions

    try:
        yield
    except ray.exceptions.RayError as exc:
        what = "the encoding actors could not start on the Ray cluster" if getattr(exc, "_actor_init_failed", False) \
            else "the Ray cluster could not run this index's work"
        raise ClusterError(
            f"{what}: {_root_cause(exc)}; every node needs "
            "xmodal, the model and its weights installed (this machine's Python environment) and the photos at "
            "the same paths; what was encoded so far is kept for the next run") from None


def _root_cause(exc: BaseException) -> str:
    """The innermost `Name: message` line of a remote traceback, with the exception's short name."""
    lines = [m for m in re.finditer(r"^([\w.]+(?:Error|Exception)): (.+)$", str(exc), re.M)]
    if not lines:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    name, message = lines[-1].groups()
    return f"{name.rsplit('.', 1)[-1]}: {message}"


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


def check_storage(folder: Path) -> None:
    """Workers write their vectors into the index's folder: every node must reach it, at the same path."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder = Path(folder).resolve()
    probe = ray.remote(num_cpus=0)(_can_write)
    nodes = [node for node in ray.nodes() if node["Alive"]]
    with _cluster_errors():
        answers = ray.get([probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                           .remote(str(folder)) for node in nodes])
    blind = sorted({node["NodeManagerAddress"] for node, ok in zip(nodes, answers) if not ok})
    if blind:
        raise InvalidInputError(
            f"the index folder {folder} cannot be written from the Ray node(s) at {', '.join(blind)}, and the "
            f"workers write the vectors there; index into a folder ({option('out')}) on storage every node "
            "mounts at the same path (NFS or a cluster file system)")


def _can_write(folder: str) -> bool:
    return os.path.isdir(folder) and os.access(folder, os.W_OK)


def stop(local: bool = False) -> None:
    """Leave the cluster; a `local` Ray (started by this process) ends with every process of it.

    ray.shutdown() stops what the driver started, and the raylet the rest. A terminal's Ctrl-C reaches
    the raylet, the GCS and the agents too (they are in the command's process group); caught while Ray
    was starting, ray.shutdown() knew none of them yet, the raylet and the GCS ran on until the driver
    ended, and the dashboard and runtime-env agents (which keep SIGINT blocked) for a minute or more. So
    the Ray processes under this one are noted first, and those still running STOP_SECONDS after the
    shutdown are killed. Only processes running Ray's code count: never a process of the caller's own."""
    import ray

    remains = descendants(os.getpid(), _ray_commands()) if local else {}
    ray.shutdown()
    end_processes(remains, STOP_SECONDS)
    _close_reaper()


STOP_SECONDS = 1.0  # a local Ray's processes still alive this long after ray.shutdown() are killed


def _ray_commands() -> list[str]:
    """What the command line of a process running Ray's code holds."""
    return ["ray::", str(Path(_import_ray().__file__).parent)]


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
    this way the pixels never go through Arrow blocks (that conversion had cost more than decoding).
    Vectors do not travel back either: the actor writes them as a journal chunk into the index's folder
    and returns where each row's vector is."""

    def __init__(self, identity: dict[str, Any], device: str | None, max_pixels: int, decode: str,
                 background: str | None, journal_folder: str, run: str):
        from ..models import load_encoder_for

        wanted = ModelIdentity.from_dict(identity)
        self.encoder = load_encoder_for(wanted, device)
        if self.encoder.identity.compatibility_key() != wanted.compatibility_key():
            raise RuntimeError(f"this worker loaded {self.encoder.identity.describe()}, not {wanted.describe()}")
        self.max_pixels, self.decode, self.background = max_pixels, decode, background
        self.journal_folder, self.run = Path(journal_folder), run

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._texts(batch) if "text" in batch else self._images(batch)

    def _texts(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.encoder.encode_texts([str(t) for t in batch["text"]])
        entries = [JournalEntry("text", None, str(digest), None, None, None, None, vector)
                   for digest, vector in zip(batch["hash"], vectors)]
        chunk = self._write(int(batch["position"][0]), entries)
        return {"position": batch["position"], "reason": np.full(len(entries), "", dtype=object),
                "chunk": np.full(len(entries), chunk, dtype=object), "chunk_row": np.arange(len(entries))}

    def _images(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from .encode_files import encode_image_files

        paths = [str(path) for path in batch["path"]]
        # Decoded in this process, or in batches on the actor's GPU where it has one (encode._device_decoder):
        # a GPU actor decoding on one CPU core would wait on it.
        result = encode_image_files(self.encoder, paths, len(paths), 0, self.max_pixels, decode=self.decode,
                                    background=self.background)
        entries = [JournalEntry("image", d.path, d.content_hash, d.size, d.mtime, d.width, d.height, vector)
                   for d, vector in zip(result.images, result.vectors)]
        chunk = self._write(int(batch["position"][0]), entries)
        reasons = {failure.path: failure.reason for failure in result.failures}
        ok = np.array([path not in reasons for path in paths])
        return {"position": batch["position"], "reason": np.array([reasons.get(p, "") for p in paths], dtype=object),
                "chunk": np.where(ok, chunk, "").astype(object), "chunk_row": np.where(ok, np.cumsum(ok) - 1, -1)}

    def _write(self, first_position: int, entries: list[JournalEntry]) -> str:
        if not entries:
            return ""
        name = worker_chunk_name(self.run, first_position)
        write_chunk(self.journal_folder / name, entries)
        return name


def _actor_options(settings: RaySettings) -> dict[str, Any]:
    import ray.data

    gpus = settings.gpus_per_actor
    if gpus is None:
        gpus = 1 if _cluster_has_gpus() else 0
    return {"compute": ray.data.ActorPoolStrategy(size=settings.actors or default_actors()), "num_gpus": gpus}


def default_actors() -> int:
    """The whole cluster: one actor per GPU where it has GPUs, else one per CPU core (each decodes and
    encodes its own batches on its core, as the local engine's decoding workers do)."""
    import ray

    resources = ray.cluster_resources()
    return max(1, int(resources.get("GPU", 0)) or int(resources.get("CPU", 1)))


def encode_images(encoder, paths: list[str], run: RayRun, batch_size: int, max_pixels: int, decode: str,
                  background: str | None) -> Iterator[tuple[list[DecodedImage], np.ndarray, list[DecodeFailure]]]:
    """(decoded images, their vectors, failures) a batch at a time, in the order of `paths`; the vectors are
    already in the journal (the workers wrote them there)."""
    rows = [{"position": i, "path": p} for i, p in enumerate(paths)]
    chunks = _ChunkReader(run.journal_folder)
    with closing(_encoded(encoder, rows, run, batch_size, max_pixels, decode, background)) as batches:
        for batch in batches:
            ok = batch["reason"] == ""
            entries, vectors = chunks.take(batch["chunk"][ok], batch["chunk_row"][ok])
            images = [DecodedImage(e["path"], e["content_hash"], e["size"], e["mtime"], e["width"], e["height"], None)
                      for e in entries]
            if [image.path for image in images] != [paths[i] for i in batch["position"][ok]]:
                raise RuntimeError("a Ray worker's journal chunk does not hold the photos of its batch")
            failures = [DecodeFailure(paths[i], str(reason)) for i, reason in zip(batch["position"][~ok], batch["reason"][~ok])]
            yield images, vectors.reshape(-1, encoder.identity.dim), failures


def encode_texts(encoder, texts: list[str], hashes: list[str], run: RayRun, batch_size: int) -> Iterator[np.ndarray]:
    """The texts' vectors, a batch at a time, in order; already in the journal, by their `hashes`."""
    rows = [{"position": i, "text": t, "hash": h} for i, (t, h) in enumerate(zip(texts, hashes))]
    chunks = _ChunkReader(run.journal_folder)
    with closing(_encoded(encoder, rows, run, batch_size, 0, "exact", None)) as batches:
        for batch in batches:
            yield chunks.take(batch["chunk"], batch["chunk_row"])[1].reshape(-1, encoder.identity.dim)


def _encoded(encoder, rows: list[dict], run: RayRun, batch_size: int, max_pixels: int, decode: str,
             background: str | None) -> Iterator[dict[str, np.ndarray]]:
    """The actors' answers for `rows`, a batch at a time, in input order."""
    run.ensure()
    import ray.data

    _quiet_data()
    arguments = {"identity": encoder.identity.to_dict(), "device": _device(encoder), "max_pixels": max_pixels,
                 "decode": decode, "background": background, "journal_folder": str(run.journal_folder.resolve()),
                 "run": uuid.uuid4().hex[:12]}
    dataset = ray.data.from_items(rows).map_batches(_Encoding, fn_constructor_kwargs=arguments,
                                                     batch_size=batch_size, **_actor_options(run.settings))
    expected = 0
    batches = iter(dataset.iter_batches(batch_size=batch_size, batch_format="numpy"))
    try:
        with _cluster_errors():
            for batch in batches:
                expected = _in_order(batch["position"], expected)
                yield batch
    finally:  # its executor's thread stops now: left running while Ray stopped, it ended the process (exit 1)
        batches.close()


class _ChunkReader:
    """Reads back the vectors workers wrote. The driver's batches need not match the workers': one may end
    in a chunk the next one begins with, so the last chunk read is kept."""

    def __init__(self, folder: Path):
        self._folder, self._name, self._rows, self._vectors = folder, None, [], np.zeros((0, 0), np.float32)

    def take(self, names: np.ndarray, positions: np.ndarray) -> tuple[list[dict], np.ndarray]:
        entries, vectors = [], []
        for name, position in zip(names, positions):
            if name != self._name:
                self._rows, self._vectors = journal.read_chunk(self._folder / str(name))
                self._name = name
            entries.append(self._rows[position])
            vectors.append(self._vectors[position])
        return entries, np.array(vectors, np.float32)


SHARD_ROWS = 100_000  # vectors a Ray task adds to an IVF index at least: fewer are added faster here


def add_in_shards(index, vectors: np.ndarray, row_ids: np.ndarray):
    """Fill a trained IVF index on the cluster: each task adds a contiguous shard of the vectors to a copy of
    the quantisers trained here once, and the shards are merged here in order, so every list holds what
    adding all the vectors here would have put in it, in the same order (the same index, byte for byte)."""
    import faiss
    import ray

    from ..store.ann import add_here

    shards = max(1, min(int(ray.cluster_resources().get("CPU", 1)), len(vectors) // SHARD_ROWS))
    if shards == 1:
        return add_here(index, vectors, row_ids)
    trained = ray.put(faiss.serialize_index(index))
    bounds = np.linspace(0, len(vectors), shards + 1).astype(int)
    task = ray.remote(num_cpus=1)(_filled_shard)
    pending = [task.remote(trained, vectors[a:b], np.asarray(row_ids[a:b], np.int64))
               for a, b in zip(bounds[:-1], bounds[1:])]
    with _cluster_errors():
        for shard in pending:
            _merge(index, ray.get(shard))
    return index


def _filled_shard(trained: np.ndarray, vectors: np.ndarray, row_ids: np.ndarray) -> np.ndarray:
    import faiss

    index = faiss.deserialize_index(trained)
    index.add_with_ids(vectors, row_ids)
    return faiss.serialize_index(index)


def _merge(index, shard: np.ndarray) -> None:
    import faiss

    index.merge_from(faiss.deserialize_index(shard), 0)  # appends each of the shard's lists to this one's


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
