"""Which way a model runs on this machine, measured on the weights in use and the user's own inputs.

A table measured once on one CPU (inference.OFFERED) is right only there: the fastest way that keeps fp32's
vectors depends on the CPU's instructions, the runtimes installed and the weights. So the first index run of a
model on a machine measures each way it can run (torch, ONNX Runtime, OpenVINO; fp32, bf16, int8) on the run's
first photos and texts, against torch fp32 on the same inputs: the speed of each tower, the lowest cosine of an
item's vector to fp32's, and how many of each item's nearest neighbours in the sample stay the same. The
measurements are kept per (weights, CPU, runtime versions), so a machine pays for them once per model.
"""
from __future__ import annotations

import json
import os
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .export_cache import _write_atomically, digest
from .inference import EXPORTED_RUNTIMES, PARITY_COSINE, TOWER_NAMES, Inference, Measured, missing_requirement

FORMAT = 5  # raise when what an entry holds, a way offered, or how a way runs changes: older entries are measured again
SAMPLE_IMAGES = 16  # photos timed per way: 1-2 s of ViT-B-32 on two cores
SAMPLE_TEXTS = 32
BUDGET_SECONDS = 20.0  # the least a first run may spend measuring; a large run may spend RUN_SHARE of itself
RUN_SHARE = 0.05
# A way's vectors are fp32's where every item's cosine to fp32 is >= PARITY_COSINE and, on average, at least
# this share of each item's nearest neighbours in the sample are fp32's: a cosine of 0.995 still allows an angle
# of 5.7 degrees, more than the gap between close neighbours in CLIP's space, so the order is checked too.
MIN_NEIGHBOURS = 0.9
SPLIT_GAIN = 1.1  # a tower runs a way of its own only where it is this much faster than a way both towers hold
TOWERS = {"open_clip": ("image", "text"), "offline": ("image",)}  # the offline model's text tower is always fp32
CALIBRATE_ENV = "XMODAL_CALIBRATE"  # "off": run the shipped table's choice, measuring nothing
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8",
                  "asimd", "asimddp", "bf16", "i8mm", "sve")
RUNTIME_PACKAGES = ("torch", "onnxruntime", "openvino", "onnx", "open_clip_torch")

WayBuilder = Callable[[Inference], Any]  # an Encoder running that way on this machine's CPU


def enabled() -> bool:
    """Whether ways are measured; XMODAL_CALIBRATE=off keeps the shipped table's choice, the same on every run
    (reproducible outputs, or a machine where even a few seconds of measuring are too many)."""
    return os.environ.get(CALIBRATE_ENV, "").strip().lower() not in ("off", "0", "no", "false")


@dataclass(frozen=True)
class TowerResult:
    """One way's measurement of one tower against torch fp32 on the same sample."""

    runtime: str
    precision: str
    tower: str
    items_per_second: float | None  # None: it could not run (`error` says why), or the budget ran out first
    min_cosine: float | None = None
    neighbours: float | None = None  # the mean share of each item's nearest neighbours that are fp32's
    error: str | None = None

    @property
    def way(self) -> Inference:
        return Inference(self.runtime, self.precision)

    @property
    def holds(self) -> bool:
        return self.min_cosine is not None and self.min_cosine >= PARITY_COSINE and \
            (self.neighbours is None or self.neighbours >= MIN_NEIGHBOURS)


@dataclass
class Calibration:
    """What was measured on one machine for one model's weights, and when."""

    key: str  # the cache entry's digest: weights, CPU, runtime versions
    family: str
    machine: dict[str, Any]
    weights: str  # the weights' fingerprint; "tag:none" is open_clip's seeded random weights
    sample: dict[str, Any]  # items timed per tower, and where they came from (the run's own, or shipped)
    results: list[TowerResult]
    seconds: float  # what measuring cost, exports included
    measured_at: str = ""
    # fp32's vectors of the shipped reference items, per tower (float32, base64): what a query on another
    # machine compares its own way's vectors with before trusting that way there
    reference: dict[str, str] = field(default_factory=dict)

    @property
    def real_weights(self) -> bool:
        return self.weights not in ("tag:none", "tag:random")

    def towers(self) -> tuple[str, ...]:
        return TOWERS.get(self.family, ("image",))

    def unmeasured(self) -> list[Inference]:
        """The ways left unmeasured when the budget ran out, in the order they were to be measured."""
        return list(dict.fromkeys(r.way for r in self.results if r.error == NOT_MEASURED))

    def table(self, mix: dict[str, float] | None = None) -> dict[Inference, Measured]:
        """Each way measured on every tower, as the choice reads it: speed over torch fp32 for a run that encodes
        `mix` items per tower (images and texts alike by default), and parity as measured here."""
        mix = mix if mix and any(mix.get(t) for t in self.towers()) else {tower: 1.0 for tower in self.towers()}
        by_way: dict[Inference, dict[str, TowerResult]] = {}
        for result in self.results:
            by_way.setdefault(result.way, {})[result.tower] = result
        reference = by_way.get(Inference(), {})
        complete = {way: towers for way, towers in by_way.items()
                    if all(t in towers and towers[t].items_per_second for t in self.towers())}
        table = {way: self._measured({t: towers[t] for t in self.towers()}, reference, mix)
                 for way, towers in complete.items()}
        split = self._per_tower(complete)
        if split is not None:
            table[split] = self._measured({t: complete[split.tower(t)][t] for t in self.towers()}, reference, mix)
        return table

    def _measured(self, towers: dict[str, TowerResult], reference: dict[str, TowerResult],
                  mix: dict[str, float]) -> Measured:
        """A way's row: its speed over torch fp32 for `mix`, from each tower's result, and its parity."""
        cost = sum(mix.get(t, 0.0) / found.items_per_second for t, found in towers.items())
        base = sum(mix.get(t, 0.0) / reference[t].items_per_second for t in towers) if reference else cost
        return Measured(round(base / cost, 3) if cost > 0 else 1.0,
                        min(found.min_cosine or 0.0 for found in towers.values()),
                        holds=all(found.holds for found in towers.values()))

    def _per_tower(self, complete: dict[Inference, dict[str, TowerResult]]) -> Inference | None:
        """Each tower's fastest exported way that held parity on it, where the towers' differ: a text tower whose
        int8 breaks parity no longer holds the image tower back to a way both towers keep (nor the other way
        round). A tower keeps the fastest way both towers hold unless its own is SPLIT_GAIN faster: two runtimes
        in one process cost memory and start-up, worth it only for more than a timing's noise. Exported ways
        only: each tower loads its own file, and neither imports torch."""
        if len(self.towers()) < 2:
            return None
        exported = {way: found for way, found in complete.items() if way.runtime in EXPORTED_RUNTIMES}
        both = [way for way, found in exported.items() if all(found[t].holds for t in self.towers())]
        shared = min(both, key=lambda w: sum(1.0 / exported[w][t].items_per_second for t in self.towers()),
                     default=None)
        fastest = {}
        for tower in self.towers():
            held = [way for way, found in exported.items() if found[tower].holds]
            if not held:
                return None
            best = max(held, key=lambda w: exported[w][tower].items_per_second)
            keep = shared is not None and \
                exported[shared][tower].items_per_second * SPLIT_GAIN >= exported[best][tower].items_per_second
            fastest[tower] = shared if keep else best
        split = Inference.per_tower(fastest["image"], fastest["text"])
        return split if split.split else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["results"] = [asdict(r) for r in self.results]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Calibration":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["results"] = [TowerResult(**r) for r in data.get("results", [])]
        return cls(**fields)


@dataclass
class Sample:
    """The inputs each way encodes: the run's first photos and texts, else a shipped set."""

    images: list  # decoded PIL images
    texts: list[str]
    source: dict[str, str] = field(default_factory=dict)  # per tower: "run" or "shipped"

    @classmethod
    def of(cls, images: Sequence, texts: Sequence[str]) -> "Sample":
        """Up to SAMPLE_IMAGES photos and SAMPLE_TEXTS texts, each once (identical items, as blank cutouts are,
        tell nothing of an order); the shipped set for a tower with fewer than 4 photos or 8 texts."""
        images = _distinct(list(images), lambda image: image.tobytes())[:SAMPLE_IMAGES]
        texts = _distinct([t for t in texts if t.strip()], str.strip)[:SAMPLE_TEXTS]
        source = {"image": "run" if len(images) >= 4 else "shipped", "text": "run" if len(texts) >= 8 else "shipped"}
        return cls(images if source["image"] == "run" else shipped_images(),
                   texts if source["text"] == "run" else list(SHIPPED_TEXTS), source)


def _distinct(items: list, key: Callable[[Any], Any]) -> list:
    seen, kept = set(), []
    for item in items:
        marker = hash(key(item))
        if marker not in seen:
            seen.add(marker)
            kept.append(item)
    return kept


# Captions of the kinds of things people index, for a run (or a query process) with no texts of its own.
SHIPPED_TEXTS = (
    "a red car parked on a street", "a blue bicycle leaning on a wall", "a cup of coffee on a wooden table",
    "a pair of running shoes", "a black leather handbag", "a dog playing in the snow", "a cat asleep on a sofa",
    "a bowl of fresh fruit", "a mountain lake at sunrise", "a city skyline at night", "a white ceramic mug",
    "a green summer dress", "a wristwatch with a steel band", "a laptop on a desk", "a vase of yellow flowers",
    "children playing football in a park", "a plate of pasta with tomato sauce", "a wooden chair", "a red apple",
    "a sailing boat on the sea", "a winter coat with a hood", "a box of green tea", "a guitar on a stand",
    "a kitchen with white cabinets", "a bird on a branch", "a pair of sunglasses", "a toy train set",
    "a loaf of bread on a board", "an old stone bridge", "a woman reading a book", "headphones on a table",
    "a pizza with mushrooms",
)


def shipped_images(count: int = SAMPLE_IMAGES) -> list:
    """Seeded pictures (coloured fields, shapes, gradients and noise): what a run without photos is timed on."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(20261206)
    pictures = []
    for _ in range(count):
        y, x = np.mgrid[0:240, 0:320] / 320.0
        base = rng.uniform(0, 255, 3) * (0.5 + 0.5 * np.stack([x, y, 1 - x], axis=-1))
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        picture = Image.fromarray(noisy)
        draw = ImageDraw.Draw(picture)
        for _shape in range(3):
            box = sorted(rng.integers(0, 320, 2)), sorted(rng.integers(0, 240, 2))
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            draw.ellipse((box[0][0], box[1][0], box[0][1], box[1][1]), fill=colour)
        pictures.append(picture)
    return pictures


def machine() -> dict[str, Any]:
    """What decides how fast each way runs here: the CPU, the instruction sets xmodal may use (after
    XMODAL_CPU_FEATURES), the cores this process may run on, and the runtimes' versions."""
    from . import device

    features = device.cpu_features()
    return {"cpu": cpu_name(), "flags": sorted(f for f in RELEVANT_FLAGS if f in features) if features is not None
            else None, "cores": _cores(), "versions": package_versions(RUNTIME_PACKAGES)}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def package_versions(packages: Sequence[str]) -> dict[str, str]:
    """Installed distributions' versions, read from their metadata (importing torch would cost seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            pass
    return found


def cache_key(family: str, spec: str, pretrained: str | None, weights: str) -> dict[str, Any]:
    return {"format": FORMAT, "family": family, "spec": spec, "pretrained": pretrained, "weights": weights,
            "machine": machine()}


def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "xmodal" / "calibrated"


class CalibrationCache:
    """One JSON file per key: read by every later run on this machine with these weights."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else cache_root()

    def get(self, key: dict[str, Any]) -> Calibration | None:
        try:
            data = json.loads((self.root / f"{digest(key)}.json").read_text())
            if data.get("key") != json.loads(json.dumps(key, default=str)):
                return None
            return Calibration.from_dict(data["calibration"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # unreadable or from another format: measured again

    def put(self, key: dict[str, Any], calibration: Calibration) -> None:
        _write_atomically(self.root / f"{digest(key)}.json",
                          json.dumps({"key": key, "calibration": calibration.to_dict()}, indent=2, default=str))


def candidates(prior: dict[Inference, Measured]) -> list[Inference]:
    """The ways to measure, those this machine can run: first the fastest in the shipped table (parity known
    or not: these weights decide it) and the fastest exact (fp32) way, both measured whatever the budget
    (the second unless the first held parity and beat torch fp32), so that a reduced way failing parity never
    leaves torch fp32 as the only way; then the rest, fastest first."""
    ways = [w for w in sorted(prior, key=lambda w: -prior[w].speedup)
            if w != Inference() and missing_requirement(w) is None]
    first = ways[:1]
    first += [w for w in ways if w.precision == "fp32" and w not in first][:1]
    return first + [w for w in ways if w not in first]


ALWAYS_MEASURED = 2  # the first candidates, measured whatever the budget (the second where it may be needed)
NOT_MEASURED = "not measured: budget spent"


def measure(family: str, build: WayBuilder, ways: Sequence[Inference], sample: Sample, budget: Callable[[Calibration | None, float], float],
            key: str = "", weights: str = "", clock: Callable[[], float] = time.perf_counter,
            step: Callable[[str], None] | None = None) -> Calibration:
    """Time torch fp32 and then each of `ways` on `sample`, within `budget(reference, elapsed)` seconds (the
    first ALWAYS_MEASURED of `ways` whatever it costs); a way not measured before the budget ran out, or that
    failed, is recorded with why."""
    started = clock()
    towers = TOWERS.get(family, ("image",))
    reference_encoder, reference, results = _reference(build, towers, sample, clock)
    shipped = {tower: _packed(encode_reference(reference_encoder, tower)) for tower in towers}
    partial = Calibration(key, family, {}, weights, {}, list(results), 0.0)
    spent = _spent(started, budget, partial, clock)
    began = clock()
    first = _measure_ways(build, ways[:1], towers, sample, reference, clock, 1, spent, step, partial)
    first_took = clock() - began
    # the fastest exact way is measured whatever the budget only where it may be needed now
    fallback = 0 if _settles(first, results) else ALWAYS_MEASURED - 1
    results += first + _measure_ways(build, ways[1:], towers, sample, reference, clock, fallback, spent, step,
                                     partial, expected=first_took)
    return Calibration(key, family, machine(), weights, {"images": len(sample.images), "texts": len(sample.texts),
                                                         "source": sample.source},
                       results, round(clock() - started, 2), datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       shipped)


def _settles(first: list[TowerResult], reference: list[TowerResult]) -> bool:
    """Whether the first way measured held parity and ran faster than torch fp32 on every tower: auto then
    runs it, and the fastest exact way (what a way failing parity falls to) can wait for a later run."""
    rates = {r.tower: r.items_per_second for r in reference}
    return bool(first) and all(r.holds and (r.items_per_second or 0.0) > (rates.get(r.tower) or float("inf"))
                               for r in first)


def resume(found: Calibration, build: WayBuilder, sample: Sample,
           budget: Callable[[Calibration | None, float], float], clock: Callable[[], float] = time.perf_counter,
           step: Callable[[str], None] | None = None) -> Calibration:
    """Measure the ways an earlier run left unmeasured when its budget ran out (its exports and torch fp32 took
    it), at least one, within this run's budget: a later run on the machine learns what the first could not.
    Speeds are timed against torch fp32 again on this run's sample and scaled to the first run's torch fp32, so
    every way's speed stays relative to the same reference."""
    started = clock()
    towers = found.towers()
    _encoder, reference, now = _reference(build, towers, sample, clock)
    then = {r.tower: r.items_per_second for r in found.results if r.way == Inference()}
    scale = {r.tower: (then.get(r.tower) or r.items_per_second) / r.items_per_second for r in now}
    partial = Calibration(found.key, found.family, {}, found.weights, {}, list(found.results), 0.0)
    measured = _measure_ways(build, found.unmeasured(), towers, sample, reference, clock, 1,
                             _spent(started, budget, partial, clock), step)
    measured = [replace(r, items_per_second=round(r.items_per_second * scale[r.tower], 2))
                if r.items_per_second else r for r in measured]
    replaced = {(r.way, r.tower): r for r in measured}
    results = [replaced.get((r.way, r.tower), r) for r in found.results]
    return replace(found, results=results, seconds=round(found.seconds + clock() - started, 2),
                   sample={**found.sample, "resumed": found.sample.get("resumed", 0) + 1})


def _spent(started: float, budget: Callable[[Calibration | None, float], float], partial: Calibration,
           clock) -> Callable[[float], bool]:
    """Whether a way expected to take `upcoming` seconds would end past the budget: a way is started only where
    it should end within it (a first ViT-B-32 run had ended 1.5 s past its 20 s on the one it began at 18.5)."""
    return lambda upcoming=0.0: clock() - started + upcoming > budget(partial, clock() - started)


def _reference(build: WayBuilder, towers: Sequence[str], sample: Sample, clock):
    """torch fp32's encoder, its vectors of the sample per tower, and its timings: what each way is held to."""
    encoder = build(Inference())
    reference, results = {}, []
    for tower in towers:
        vectors, rate = _timed(encoder, tower, sample, clock)
        reference[tower] = vectors
        results.append(TowerResult("torch", "fp32", tower, rate, 1.0, 1.0))
    return encoder, reference, results


def _measure_ways(build: WayBuilder, ways: Sequence[Inference], towers: Sequence[str], sample: Sample,
                  reference: dict[str, np.ndarray], clock, always: int, spent: Callable[[float], bool],
                  step: Callable[[str], None] | None, partial: Calibration | None = None,
                  expected: float = 0.0) -> list[TowerResult]:
    """Each way's results, in order; after the first `always` ways, those that would end past the budget
    (`spent`, each expected to take as long as the way before it, `expected` for the first) are recorded as not
    measured."""
    results: list[TowerResult] = []
    for number, way in enumerate(ways):
        if number >= always and spent(expected):
            results += [TowerResult(way.runtime, way.precision, t, None, error=NOT_MEASURED) for t in towers]
            continue
        if step:
            step(way.describe())
        began = clock()
        results += _measure_way(build, way, towers, sample, reference, clock)
        expected = clock() - began
        if partial is not None:
            partial.results += results[-len(towers):]
    return results


def _measure_way(build: WayBuilder, way: Inference, towers: Sequence[str], sample: Sample,
                 reference: dict[str, np.ndarray], clock) -> list[TowerResult]:
    try:
        encoder = build(way)
        measured = {tower: _timed(encoder, tower, sample, clock) for tower in towers}
    except Exception as exc:  # noqa: BLE001 - a way that cannot run here is measured as such, not fatal
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        return [TowerResult(way.runtime, way.precision, t, None, error=reason) for t in towers]
    return [TowerResult(way.runtime, way.precision, tower, rate, round(min_cosine(reference[tower], vectors), 5),
                        round(neighbour_agreement(reference[tower], vectors), 4))
            for tower, (vectors, rate) in measured.items()]


MIN_TIMED_SECONDS = 0.25  # a pass of a small model's sample takes milliseconds: timed over repeats of it
ONE_TIMING_SECONDS = 1.0  # a pass this long (a large model on a CPU) is timed once, not twice


def _timed(encoder, tower: str, sample: Sample, clock) -> tuple[np.ndarray, float]:
    """The tower's vectors of the sample, and items per second: the better of two timings after a warm-up
    batch (the first batch of a session compiles and allocates), each of whole passes over the sample repeated
    for at least MIN_TIMED_SECONDS; one timing where a pass takes ONE_TIMING_SECONDS."""
    if tower == "image":
        items = [encoder.preprocess_image(image) for image in sample.images]
        run = encoder.encode_preprocessed
    else:
        items, run = sample.texts, encoder.encode_texts
    run(items[:2])
    best, vectors = 0.0, None
    for _timing in range(2):
        start, passes = clock(), 0
        while passes == 0 or clock() - start < MIN_TIMED_SECONDS:
            vectors = run(items)
            passes += 1
        took = clock() - start
        best = max(best, passes * len(items) / max(took, 1e-9))
        if took > ONE_TIMING_SECONDS:
            break
    return np.asarray(vectors, dtype=np.float32), round(best, 2)


def min_cosine(reference: np.ndarray, vectors: np.ndarray) -> float:
    return float(np.min(np.sum(_unit(reference) * _unit(vectors), axis=1)))


TIE = 1.0 - PARITY_COSINE  # neighbours closer than this in fp32's cosine may swap: parity itself allows it


def neighbour_agreement(reference: np.ndarray, vectors: np.ndarray) -> float:
    """The mean share of each item's k nearest other items by fp32's vectors that the way's vectors also rank
    in its top k; k is a third of the sample (at most 10), so agreement by chance stays near a third. A
    neighbour that left the top k counts as kept where fp32 itself put it within TIE of the first item outside
    it: a swap that close is within what a cosine of 0.995 already allows."""
    count = len(reference)
    k = max(1, min(10, count // 3))
    if count < 3:
        return 1.0

    def similar(matrix: np.ndarray) -> np.ndarray:
        found = _unit(matrix) @ _unit(matrix).T
        np.fill_diagonal(found, -np.inf)
        return found

    ours, theirs = similar(reference), similar(vectors)
    shares = []
    for row_ours, row_theirs in zip(ours, theirs):
        order = np.argsort(-row_ours, kind="stable")
        top, outside = order[:k], row_ours[order[k]] if k < count - 1 else -np.inf
        kept = set(np.argsort(-row_theirs, kind="stable")[:k])
        shares.append(sum(1 for j in top if j in kept or row_ours[j] - outside < TIE) / k)
    return float(np.mean(shares))


def _unit(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)


def run_budget(items: dict[str, int]) -> Callable[[Calibration | None, float], float]:
    """BUDGET_SECONDS, or RUN_SHARE of what the run would take at torch fp32's measured rate if that is more."""
    def budget(partial: Calibration | None, _elapsed: float) -> float:
        if partial is None:
            return BUDGET_SECONDS
        rates = {r.tower: r.items_per_second for r in partial.results if r.way == Inference() and r.items_per_second}
        projected = sum(count / rates[tower] for tower, count in items.items() if rates.get(tower))
        return max(BUDGET_SECONDS, RUN_SHARE * projected)
    return budget


@dataclass
class Calibrating:
    """What an index run gives the measuring: its sample (read only if measuring is due), the items it will
    encode per tower (they size the budget and weigh each tower's speed), and a progress bar factory."""

    sample: Callable[[], Sample]
    items: dict[str, int]
    progress: Callable[[str, int], Any] | None = None
    measured: Calibration | None = None  # what this run measured (None: read from the cache, or not measured)

    def note(self, chosen: Inference) -> str | None:
        return note(self.measured, chosen, self.items) if self.measured else None

    def encodes(self, family: str) -> bool:
        """Whether this run encodes anything the ways change (the offline model's ways are its image tower's:
        a run of texts alone has nothing to measure)."""
        return any(self.items.get(tower) for tower in TOWERS.get(family, ("image",)))

    def measure(self, family: str, ways, candidates: list[Inference], key: str) -> Calibration:
        with self._steps(len(candidates)) as step:
            return measure(family, ways, candidates, self.sample(), run_budget(self.items), key, ways.fingerprint(),
                           step=step)

    def resume(self, found: Calibration, ways) -> Calibration:
        with self._steps(len(found.unmeasured())) as step:
            return resume(found, ways, self.sample(), run_budget(self.items), step=step)

    @contextmanager
    def _steps(self, ways: int):
        """A progress step per way, and one for torch fp32 (the reference)."""
        bar = self.progress("calibrating", ways + 1) if self.progress else None
        try:
            yield (lambda _name: bar.update(1)) if bar else None
        finally:
            if bar:
                bar.update(1)
                bar.close()


def recorded_table(recorded: dict[str, Any] | None) -> dict[Inference, Measured] | None:
    """The ways an index's calibration measured, as the choice and the parity rule read them; None if none."""
    return Calibration.from_dict(recorded).table() if recorded else None


def describe_ways(calibration: Calibration) -> list[str]:
    """Each way as measured, those that held parity first, fastest first: each tower's speed over torch fp32,
    the lowest cosine and the neighbours kept; or why it is not offered (outside parity, could not run, not
    measured)."""
    table = calibration.table()
    rates = {(r.way, r.tower): r for r in calibration.results}

    def line(way: Inference, found: Measured) -> str:
        speeds = ", ".join(f"{TOWER_NAMES[t]} {_over(rates[(way.tower(t), t)], rates[(Inference(), t)])}"
                           for t in calibration.towers())
        kept = min((rates[(way.tower(t), t)].neighbours or 1.0) for t in calibration.towers())
        verdict = "" if found.keeps_parity() else ", outside parity"
        return f"{way.describe()} {speeds} (lowest cosine {found.min_cosine:.4f}, neighbours {kept:.2f}{verdict})"

    lines = [line(way, found) for way, found in
             sorted(table.items(), key=lambda item: (not item[1].keeps_parity(), -item[1].speedup))]
    seen = set(table)
    for result in calibration.results:
        if result.way not in seen and result.error:
            seen.add(result.way)
            lines.append(f"{result.way.describe()}: {result.error.removeprefix('not measured: ')}"
                         if result.error.startswith("not measured") else
                         f"{result.way.describe()}: could not run ({result.error})")
    return lines


def _over(result: TowerResult, reference: TowerResult) -> str:
    return f"{result.items_per_second / reference.items_per_second:.2f}x"


def measured_ways(calibration: Calibration) -> int:
    return len({r.way for r in calibration.results if r.items_per_second is not None})


def describe_machine(calibration: Calibration) -> str:
    flags = calibration.machine.get("flags")
    shown = ", ".join(flags) if flags else "instruction sets unknown"
    return f"{calibration.machine.get('cpu', 'unknown CPU')}, {calibration.machine.get('cores', '?')} cores ({shown})"


def note(calibration: Calibration, chosen: Inference, mix: dict[str, float]) -> str:
    """One line for a run that measured: what it cost and what it chose."""
    found = calibration.table(mix).get(chosen)
    speed = f", {found.speedup:.2f}x torch fp32" if found else ""
    left = len(calibration.unmeasured())
    later = f"; {left} more when a new index is built (the time for measuring ran out)" if left else ""
    return (f"measured {measured_ways(calibration)} ways of running the model on this CPU in "
            f"{calibration.seconds:.1f} s (once per machine and weights): running {chosen.describe()}{speed}; "
            f"xmodal info shows them{later}")


REFERENCE_ITEMS = 8  # per tower: a re-check encodes 8 texts or photos (tens of milliseconds)


def encode_reference(encoder, tower: str) -> np.ndarray:
    if tower == "image":
        return np.asarray(encoder.encode_preprocessed([encoder.preprocess_image(image) for image in
                                                       shipped_images(REFERENCE_ITEMS)]), dtype=np.float32)
    return np.asarray(encoder.encode_texts(list(SHIPPED_TEXTS[:REFERENCE_ITEMS])), dtype=np.float32)


def _packed(vectors: np.ndarray) -> str:
    import base64

    return base64.b64encode(np.ascontiguousarray(vectors, dtype="<f4").tobytes()).decode("ascii")


def _unpacked(text: str, rows: int = REFERENCE_ITEMS) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(rows, -1)


def needs_recheck(recorded: dict[str, Any] | None, way: Inference) -> bool:
    """Whether a reduced way an index was built with must be checked again here: measured on another CPU, or
    with other runtime versions (fp32 is fp32 everywhere; an index without a reference cannot be checked)."""
    if not recorded or way.exact or not recorded.get("reference") or not enabled():
        return False
    return recorded.get("machine") != machine()


def recheck(encoder, recorded: dict[str, Any], way: Inference) -> float:
    """The lowest cosine of this machine's `way` to the index's fp32 reference, over every tower it holds;
    remembered per (index calibration, this machine), so a one-shot query pays for it once."""
    parts = [part for tower in way.towers() for part in (tower.runtime, tower.precision)]
    memo_key = {"recheck": recorded.get("key"), "way": parts, "machine": machine()}
    memo = CalibrationCache().root / "rechecks" / f"{digest(memo_key)}.json"
    try:
        return float(json.loads(memo.read_text())["min_cosine"])
    except (OSError, ValueError, KeyError):
        pass
    lowest = min(min_cosine(_unpacked(packed), encode_reference(encoder, tower))
                 for tower, packed in recorded["reference"].items())
    _write_atomically(memo, json.dumps({"key": memo_key, "min_cosine": lowest}))
    return lowest


def describe_calibration(recorded: dict[str, Any]) -> str:
    """An index's calibration in one line: where and on what the ways were measured, each way's speed over
    torch fp32 and its lowest cosine, and why the others are not offered."""
    found = Calibration.from_dict(recorded)
    sample, source = found.sample, found.sample.get("source") or {}
    of = {"run": "of the run that measured", "shipped": "shipped"}
    on = f"{sample.get('images', 0)} photos {of.get(source.get('image'), '')} and {sample.get('texts', 0)} texts " \
         f"{of.get(source.get('text'), '')}".replace("  ", " ").strip()
    weights = "" if found.real_weights else ", random weights"
    return (f"on {describe_machine(found)}, {found.measured_at[:10]}, {on}{weights}: "
            + "; ".join(describe_ways(found)))
