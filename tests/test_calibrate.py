"""The way a model runs, chosen by measuring it on this machine with the weights in use (models/calibrate.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import CATALOG, env_with_tests_path, write_tiny_open_clip
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.errors import InferenceChoiceError
from xmodal.indexer.models import calibrate, inference, registry
from xmodal.indexer.models.inference import Inference

IMAGES = CATALOG / "images"
FP32 = Inference()


@pytest.fixture
def measuring(monkeypatch, tmp_path):
    """Measuring on (conftest turns it off for every other test), into a cache of this test's own."""
    monkeypatch.setenv(calibrate.CALIBRATE_ENV, "on")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "xmodal" / "calibrated"


class FakeTower:
    """An encoder whose vectors are a fixed projection of its inputs, made `noise` worse, `seconds` per item."""

    def __init__(self, noise: float = 0.0, seconds: float = 0.0, dim: int = 16):
        self.noise, self.seconds = noise, seconds
        self.projection = np.random.default_rng(1).normal(size=(48, dim))

    def preprocess_image(self, image):
        return np.asarray(image.convert("RGB").resize((4, 4)), dtype=np.float32).reshape(-1) / 255.0

    def encode_preprocessed(self, batch):
        return self._vectors(np.stack(batch))

    def encode_texts(self, texts):
        codes = np.array([[ord(c) % 17 for c in (t * 48)[:48]] for t in texts], dtype=np.float32)
        return self._vectors(codes)

    def _vectors(self, inputs):
        time.sleep(self.seconds * len(inputs))
        vectors = inputs @ self.projection
        if self.noise:
            vectors = vectors + np.random.default_rng(len(inputs)).normal(scale=self.noise, size=vectors.shape) \
                * np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def fake_ways(towers: dict[Inference, FakeTower]):
    def build(way: Inference):
        if way not in towers:
            raise RuntimeError(f"{way.describe()} is not installed")
        return towers[way]
    return build


ONNX32, ONNX8, OV16 = Inference("onnx", "fp32"), Inference("onnx", "int8"), Inference("openvino", "bf16")


def test_the_fastest_way_that_keeps_fp32s_vectors_is_chosen_and_a_noisy_one_never():
    towers = {FP32: FakeTower(seconds=0.004), ONNX32: FakeTower(seconds=0.002), ONNX8: FakeTower(noise=0.2),
              OV16: FakeTower(seconds=0.001, noise=0.0005)}
    sample = calibrate.Sample.of([], [])
    found = calibrate.measure("open_clip", fake_ways(towers), [ONNX8, OV16, ONNX32], sample, lambda *_: 60.0)
    table = found.table()
    assert table[ONNX8].min_cosine < 0.995 and not table[ONNX8].keeps_parity()  # 16 photos, 32 texts: measured
    assert table[OV16].keeps_parity() and table[OV16].speedup > table[ONNX32].speedup > 1.5
    # bf16 where this CPU runs it; else (an AVX2 CPU, or XMODAL_CPU_FEATURES saying so) the next fastest that held
    expected = OV16 if inference.missing_requirement(OV16) is None else ONNX32
    assert inference.choose("open_clip", measured=table).inference == expected
    with pytest.raises(InferenceChoiceError, match=r"int8 on onnx breaks parity with fp32 on these weights, measured "
                                                   r"on this machine \(lowest cosine 0\.[0-9]{4}"):
        inference.choose("open_clip", precision="int8", runtime="onnx", measured=table)
    # int8 left to any runtime: the one measured to break parity is dropped; the fastest unmeasured one in the
    # shipped table for this kind of CPU is still asked for (OpenVINO's with VNNI, torch's on an AVX2 CPU)
    shipped = inference.offered("open_clip")
    fastest_int8 = max((w for w in shipped if w.precision == "int8" and w != ONNX8), key=lambda w: shipped[w].speedup)
    assert inference.choose("open_clip", precision="int8", measured=table).inference == fastest_int8


def test_torch_fp32_is_the_floor_auto_never_runs_slower():
    """The issue's AVX2 machine: ONNX Runtime's fp32 measured slower than torch's; auto then runs torch."""
    towers = {FP32: FakeTower(seconds=0.001), ONNX32: FakeTower(seconds=0.003)}
    found = calibrate.measure("open_clip", fake_ways(towers), [ONNX32], calibrate.Sample.of([], []),
                              lambda *_: 60.0)
    assert found.table()[ONNX32].speedup < 1.0
    assert inference.choose("open_clip", measured=found.table()).inference == FP32


def test_a_way_this_cpu_lacks_falls_back_to_the_fastest_way_measured_here(avx2_cpu):
    table = {FP32: inference.Measured(1.0, 1.0, holds=True), ONNX32: inference.Measured(0.8, 1.0, holds=True),
             Inference("onnx", "int8"): inference.Measured(1.3, 0.999, holds=True)}
    choice = inference.choose("open_clip", "openvino", "bf16", measured=table)
    assert choice.inference == Inference("onnx", "int8")
    assert choice.note == ("bf16 on openvino is not available here (this CPU lacks avx512_bf16 and amx_bf16): running "
                           "int8 on onnx, the fastest way measured here that keeps fp32's vectors")


def test_measuring_stops_at_its_budget_and_says_which_ways_it_left():
    towers = {FP32: FakeTower(), ONNX32: FakeTower(seconds=0.02), ONNX8: FakeTower()}
    found = calibrate.measure("open_clip", fake_ways(towers), [ONNX32, ONNX8, OV16], calibrate.Sample.of([], []),
                              lambda *_: 0.0)
    by_way = {(r.way, r.tower): r for r in found.results}
    # the first two candidates (the table's choice and the fastest exact way) whatever the budget
    assert by_way[(ONNX32, "image")].items_per_second and by_way[(ONNX8, "image")].items_per_second
    assert by_way[(OV16, "image")].error == by_way[(OV16, "text")].error == "not measured: budget spent"
    assert set(found.table()) == {FP32, ONNX32, ONNX8}


class FakeClock:
    """Seconds that pass only as ClockedTowers encode: measuring's timings and budget, exactly repeatable."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ClockedTower(FakeTower):
    def __init__(self, clock: FakeClock, seconds: float):
        super().__init__()
        self.clock, self.per_item = clock, seconds

    def _vectors(self, inputs):
        self.clock.now += self.per_item * len(inputs)
        return super()._vectors(inputs)


def test_a_way_is_started_only_where_it_should_end_within_the_budget():
    """A way that would end past the budget, expected to take as long as the way before it, is left for a
    later run instead of started just before the budget runs out and finished after it."""
    sample = calibrate.Sample.of([], [])

    def measured(ways, budget):
        clock = FakeClock()
        towers = {FP32: ClockedTower(clock, 0.01), ONNX8: ClockedTower(clock, 0.005),
                  ONNX32: ClockedTower(clock, 0.005)}
        return calibrate.measure("open_clip", fake_ways(towers), ways, sample, lambda *_: budget, clock=clock)

    reference = measured([], 1e9).seconds
    with_first = measured([ONNX8], 1e9).seconds
    first_took = with_first - reference
    budget = with_first + first_took / 2  # time left for half a way like the first
    found = measured([ONNX8, ONNX32], budget)
    assert found.unmeasured() == [ONNX32] and found.seconds <= budget
    found = measured([ONNX8, ONNX32], with_first + first_took * 1.5)  # time for a whole one
    assert found.unmeasured() == [] and ONNX32 in found.table()


def test_the_exact_way_is_measured_past_the_budget_only_where_the_first_way_did_not_settle_it():
    """The fastest exact way is what a way failing parity falls to: measured whatever the budget where the
    first way broke parity or ran no faster than torch fp32, left to a later run where the first won."""
    sample = calibrate.Sample.of([], [])
    for first, fallback_measured in ((FakeTower(seconds=0.0005), False), (FakeTower(seconds=0.0005, noise=0.2), True),
                                     (FakeTower(seconds=0.004), True)):
        towers = {FP32: FakeTower(seconds=0.002), ONNX8: first, ONNX32: FakeTower(seconds=0.001)}
        found = calibrate.measure("open_clip", fake_ways(towers), [ONNX8, ONNX32], sample, lambda *_: 0.0)
        assert (ONNX32 in found.table()) == fallback_measured
        assert found.unmeasured() == ([] if fallback_measured else [ONNX32])
        expected = ONNX8 if not fallback_measured else ONNX32
        assert inference.choose("open_clip", measured=found.table()).inference == expected


def test_a_later_run_measures_the_ways_an_earlier_budget_left_against_the_same_reference():
    """Speeds measured later, on a busier machine, are scaled to the first run's torch fp32; at least one way is
    measured per run whatever its budget, so every way is measured in the end."""
    ov32 = Inference("openvino", "fp32")
    # the first way slower than torch fp32, so the second is measured whatever the budget (at the same speed,
    # timing noise decided whether the first had won)
    towers = {FP32: FakeTower(seconds=0.002), ONNX32: FakeTower(seconds=0.003), ONNX8: FakeTower(), OV16:
              FakeTower(seconds=0.0005), ov32: FakeTower(seconds=0.002)}
    sample = calibrate.Sample.of([], [])
    first = calibrate.measure("open_clip", fake_ways(towers), [ONNX32, ONNX8, OV16, ov32], sample, lambda *_: 0.0)
    assert first.unmeasured() == [OV16, ov32]
    busier = {way: FakeTower(seconds=tower.seconds * 2) for way, tower in towers.items()}
    second = calibrate.resume(first, fake_ways(busier), sample, lambda *_: 0.0)
    assert second.unmeasured() == [ov32] and second.sample["resumed"] == 1
    assert second.table()[OV16].speedup == pytest.approx(4.0, rel=0.35)  # 0.002 s over 0.0005 s, not halved
    assert [r for r in second.results if r.way in (FP32, ONNX32)] == [r for r in first.results
                                                                      if r.way in (FP32, ONNX32)]
    third = calibrate.resume(second, fake_ways(busier), sample, lambda *_: 60.0)
    assert third.unmeasured() == [] and third.table()[ov32].speedup == pytest.approx(1.0, rel=0.35)
    assert third.seconds >= second.seconds >= first.seconds


def test_a_way_that_cannot_run_here_is_recorded_not_fatal():
    found = calibrate.measure("open_clip", fake_ways({FP32: FakeTower()}), [OV16], calibrate.Sample.of([], []),
                              lambda *_: 60.0)
    assert [r.error for r in found.results if r.way == OV16] == ["RuntimeError: bf16 on openvino is not installed"] * 2
    assert calibrate.describe_ways(found)[-1] == ("bf16 on openvino: could not run (RuntimeError: bf16 on openvino "
                                                  "is not installed)")


def test_neighbour_agreement_sees_a_reordering_the_cosine_allows_and_lets_near_ties_swap():
    def on_a_circle(degrees: np.ndarray) -> np.ndarray:
        vectors = np.zeros((len(degrees), 16))
        vectors[:, 0], vectors[:, 1] = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
        return vectors

    spread = np.arange(24) * 2.0  # neighbours 2 degrees apart: their cosines differ by more than 0.005 at the edge
    turned = spread + np.where(np.arange(24) % 2, 5.6, -5.6)  # each turned 5.6 degrees: cosine 0.9952
    assert calibrate.min_cosine(on_a_circle(spread), on_a_circle(turned)) > 0.995
    assert calibrate.neighbour_agreement(on_a_circle(spread), on_a_circle(turned)) < calibrate.MIN_NEIGHBOURS
    assert calibrate.neighbour_agreement(on_a_circle(spread), on_a_circle(spread)) == 1.0
    rng = np.random.default_rng(0)
    cluster = rng.normal(size=(1, 64)) + rng.normal(scale=0.02, size=(24, 64))  # all within 0.005 of each other
    assert calibrate.neighbour_agreement(cluster, cluster + rng.normal(scale=0.004, size=cluster.shape)) == 1.0


def test_the_shipped_tables_choice_and_the_fastest_exact_way_are_measured_first():
    """Else a reduced way outside parity on the user's weights left torch fp32, the slowest, as the only way."""
    prior = inference.offered("offline")
    first, second = calibrate.candidates(prior)[:2]
    assert first == inference.choose("offline").inference  # bf16 on openvino, or fp32 on onnx
    assert second.precision == "fp32" and second != first
    first, second = calibrate.candidates(inference.offered("open_clip"))[:2]
    assert first.precision != "fp32" and second.precision == "fp32"  # the table knows no parity of these


def test_the_budget_is_twenty_seconds_or_a_twentieth_of_a_large_run():
    budget = calibrate.run_budget({"image": 100_000, "text": 0})
    reference = calibrate.Calibration("k", "open_clip", {}, "tag:x", {}, [
        calibrate.TowerResult("torch", "fp32", "image", 20.0, 1.0, 1.0)], 0.0)
    assert budget(None, 0.0) == calibrate.BUDGET_SECONDS
    assert budget(reference, 0.0) == pytest.approx(0.05 * 100_000 / 20.0)
    assert calibrate.run_budget({"image": 50, "text": 0})(reference, 0.0) == calibrate.BUDGET_SECONDS


# ---- on a real model, through an index run ------------------------------------------------------------------

def _index(spec: str, out, **options):
    return build_index(out, IndexConfig(images=[IMAGES], model=spec, workers=0, **options))


def test_an_index_run_measures_once_and_a_new_checkpoint_measures_again(measuring, tmp_path):
    model = write_tiny_open_clip(tmp_path / "model")
    first = _index(f"local-dir:{model}", tmp_path / "a.idx")
    assert first.calibration_note.startswith("measured ") and "once per machine and weights" in first.calibration_note
    entries = list(measuring.glob("*.json"))
    assert len(entries) == 1
    recorded = json.loads((tmp_path / "a.idx" / "manifest.json").read_text())["calibration"]
    ways = {(r["runtime"], r["precision"]) for r in recorded["results"] if r["items_per_second"]}
    assert ("torch", "fp32") in ways and len(ways) >= 2
    assert recorded["sample"]["images"] == 12 and recorded["sample"]["source"] == {"image": "run", "text": "shipped"}
    chosen = _way_of(tmp_path / "a.idx")
    assert chosen.describe() in first.model and calibrate.Calibration.from_dict(recorded).table()[chosen].keeps_parity()

    again = _index(f"local-dir:{model}", tmp_path / "b.idx")  # the same weights on the same machine: read back
    assert again.calibration_note is None and list(measuring.glob("*.json")) == entries
    write_tiny_open_clip(model, seed=1)  # new weights in the same folder
    third = _index(f"local-dir:{model}", tmp_path / "c.idx")
    assert third.calibration_note is not None and len(list(measuring.glob("*.json"))) == 2


def test_a_new_index_measures_what_the_first_runs_budget_left_and_a_rerun_does_not(measuring, monkeypatch,
                                                                                    tmp_path):
    model = f"local-dir:{write_tiny_open_clip(tmp_path / 'model')}"
    with monkeypatch.context() as tight:
        tight.setattr(calibrate, "BUDGET_SECONDS", 0.0)  # the first run measures only what it always measures
        first = _index(model, tmp_path / "a.idx")
    [entry] = measuring.glob("*.json")
    left = calibrate.Calibration.from_dict(json.loads(entry.read_text())["calibration"]).unmeasured()
    if not left:
        pytest.skip("this machine runs only the ways always measured (no other runtime installed)")
    assert first.calibration_note.endswith(f"{len(left)} more when a new index is built (the time for measuring "
                                           "ran out)")
    rerun = _index(model, tmp_path / "a.idx")
    assert rerun.calibration_note is None  # a re-run keeps its index's way: nothing measured
    second = _index(model, tmp_path / "b.idx")
    assert second.calibration_note is not None and "more when" not in second.calibration_note
    found = calibrate.Calibration.from_dict(json.loads(entry.read_text())["calibration"])
    assert found.unmeasured() == [] and found.sample["resumed"] == 1
    recorded = json.loads((tmp_path / "b.idx" / "manifest.json").read_text())["calibration"]
    assert {(r["runtime"], r["precision"]) for r in recorded["results"]} >= {(w.runtime, w.precision) for w in left}


def test_a_run_that_measured_lets_the_torch_model_go_once_its_way_runs_exported(measuring, monkeypatch, tmp_path):
    """Measuring loads the torch model (the reference, and what exports are made from); an exported way chosen,
    the rest of the run does not hold it (ViT-B-32: 2.4 GB against 1.5 GB for a first run's photos)."""
    import gc
    import weakref

    from PIL import Image

    from xmodal.indexer.models import openclip

    loaded = []
    load_open_clip = openclip.load_open_clip
    monkeypatch.setattr(openclip, "load_open_clip", lambda *args: loaded.append(load_open_clip(*args)) or loaded[-1])
    spec = f"local-dir:{write_tiny_open_clip(tmp_path / 'model')}"
    photos = [Image.open(path).convert("RGB") for path in sorted(IMAGES.iterdir())[:6]]
    calibrating = calibrate.Calibrating(lambda: calibrate.Sample.of(photos, []), {"image": 6, "text": 0})
    encoder = registry.load_encoder(spec, None, "cpu", "onnx", "fp32", calibrating=calibrating)
    assert encoder.identity.inference == ONNX32 and calibrating.measured is not None
    torch_models = [weakref.ref(found.model) for found in loaded]
    loaded.clear()
    gc.collect()
    assert torch_models and all(model() is None for model in torch_models)
    assert encoder.encode_texts(["a red car"]).shape == (1, encoder.identity.dim)  # exported: no torch needed


def test_a_cpu_without_bf16_never_measures_or_runs_bf16(measuring, avx2_cpu, tmp_path):
    model = write_tiny_open_clip(tmp_path / "model")
    _index(f"local-dir:{model}", tmp_path / "a.idx")
    recorded = json.loads((tmp_path / "a.idx" / "manifest.json").read_text())["calibration"]
    assert "bf16" not in {r["precision"] for r in recorded["results"]}
    assert "bf16" not in {way.precision for way in _way_of(tmp_path / "a.idx").towers()}
    assert "avx512_bf16" not in recorded["machine"]["flags"]


def test_a_way_that_breaks_parity_on_these_weights_is_refused_with_its_cosine(measuring, monkeypatch, tmp_path):
    """An int8 tower made to break parity on purpose: asked for, it is refused; left to auto, never run."""
    real = registry._OpenClipWays.__call__

    def with_broken_int8(self, way):
        encoder = real(self, way)
        if way.precision == "int8":
            encoder.encode_preprocessed = lambda batch, inner=encoder.encode_preprocessed: _skewed(inner(batch))
        return encoder

    monkeypatch.setattr(registry._OpenClipWays, "__call__", with_broken_int8)
    model = write_tiny_open_clip(tmp_path / "model")
    with pytest.raises(InferenceChoiceError, match=r"int8 on onnx breaks parity with fp32 on these weights"):
        _index(f"local-dir:{model}", tmp_path / "a.idx", runtime="onnx", precision="int8")
    assert not (tmp_path / "a.idx").exists()  # refused before anything was written
    _index(f"local-dir:{model}", tmp_path / "b.idx")  # measured already: auto reads it back
    assert _way_of(tmp_path / "b.idx").tower("image").precision != "int8"  # its texts may: they held


def _way_of(index) -> Inference:
    from xmodal.indexer.models import ModelIdentity

    return ModelIdentity.from_dict(json.loads((index / "manifest.json").read_text())["model"]).inference


def _skewed(vectors: np.ndarray) -> np.ndarray:
    turned = vectors + 0.3 * np.roll(vectors, 1, axis=1)
    return turned / np.linalg.norm(turned, axis=1, keepdims=True)


def xmodal(*args: str, cache) -> subprocess.CompletedProcess:
    env = {**env_with_tests_path(), "XDG_CACHE_HOME": str(cache), calibrate.CALIBRATE_ENV: "on"}
    return subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.run()", *args], env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_says_it_measured_once_and_info_shows_what(tmp_path):
    model = write_tiny_open_clip(tmp_path / "model")
    out, cache = tmp_path / "a.idx", tmp_path / "cache"
    built = xmodal("index", str(IMAGES), "--out", str(out), "--model", f"local-dir:{model}", cache=cache)
    assert built.returncode == 0, built.stderr
    notes = [line for line in built.stderr.splitlines() if line.startswith("note: measured")]
    assert len(notes) == 1 and "ways of running the model on this CPU in" in notes[0]
    info = xmodal("info", str(out), cache=cache)
    measured = next(line for line in info.stdout.splitlines() if line.startswith("measured: "))
    assert "12 photos of the run that measured and 32 texts shipped" in measured
    assert "fp32 on torch photos 1.00x, texts 1.00x (lowest cosine 1.0000, neighbours 1.00)" in measured
    summary = json.loads(xmodal("info", str(out), "--json", cache=cache).stdout)
    assert all(0.0 < r["min_cosine"] <= 1.0 for r in summary["calibration"]["results"] if r["items_per_second"])
    assert "fp32 on torch" in summary["accepts"]  # the way chosen kept parity on these weights: fp32 queries too
    again = xmodal("index", str(IMAGES), "--out", str(tmp_path / "b.idx"), "--model", f"local-dir:{model}",
                   cache=cache)
    assert again.returncode == 0 and "note: measured" not in again.stderr


# ---- a query on another machine -----------------------------------------------------------------------------

class WayTower(FakeTower):
    def __init__(self, way: Inference, noise: float = 0.0):
        super().__init__(noise=noise)
        from xmodal.indexer.models.base import ModelIdentity

        self.identity = ModelIdentity("open_clip", "fake", None, 16, runtime=way.runtime, precision=way.precision)
        self.inference_note = None


def test_a_query_on_another_machine_rechecks_a_reduced_way_against_the_index_reference(measuring, monkeypatch):
    towers = {FP32: FakeTower(), OV16: FakeTower(noise=0.0005)}
    recorded = calibrate.measure("open_clip", fake_ways(towers), [OV16], calibrate.Sample.of([], []),
                                 lambda *_: 60.0).to_dict()
    assert not calibrate.needs_recheck(recorded, OV16)  # measured on this very machine
    assert not calibrate.needs_recheck(recorded, Inference("openvino", "fp32"))  # fp32 is fp32 everywhere
    elsewhere = {**recorded, "machine": {**recorded["machine"], "cpu": "another CPU"}}
    assert calibrate.needs_recheck(elsewhere, OV16)

    here = {"way": WayTower(OV16, noise=0.2)}  # bf16 here is not what it was where the index was built
    monkeypatch.setattr(registry, "_recorded_encoder",
                        lambda identity, device, runtime, precision: here["way"] if precision != "fp32"
                        else WayTower(Inference(runtime or "torch", "fp32")))
    identity = here["way"].identity
    encoder = registry.load_encoder_for(identity, "cpu", calibration=elsewhere)
    assert encoder.identity.inference == Inference("openvino", "fp32")
    assert encoder.inference_note.startswith("bf16 on openvino gives a lowest cosine of 0.")
    assert encoder.inference_note.endswith("not the parity measured where it was built: running fp32 on openvino")

    here["way"] = WayTower(OV16, noise=0.0005)
    other = {**elsewhere, "key": "another index"}
    assert registry.load_encoder_for(identity, "cpu", calibration=other) is here["way"]  # parity holds here
    remembered = list((measuring / "rechecks").glob("*.json"))
    assert len(remembered) == 2  # one per index and machine: the next query reads it back
    here["way"] = WayTower(OV16, noise=0.2)  # would fail now, but the answer for this index here is known
    assert registry.load_encoder_for(identity, "cpu", calibration=other) is here["way"]
