"""A way per tower (issue 30): where one tower's fastest way breaks parity on the weights in use, or is well
behind the other tower's fastest, each tower runs the fastest way measured to hold parity on it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from conftest import CATALOG, env_with_tests_path, write_tiny_open_clip
from test_calibrate import FakeTower, _skewed, fake_ways, measuring  # noqa: F401 - measuring is a fixture
from xmodal.indexer import IndexConfig, ModelMismatchError, build_index
from xmodal.indexer.errors import InferenceChoiceError
from xmodal.indexer.models import ModelIdentity, calibrate, inference, registry
from xmodal.indexer.models.calibrate import Calibration, TowerResult
from xmodal.indexer.models.inference import Inference
from xmodal.search import open_index

FP32, ONNX32, ONNX8 = Inference(), Inference("onnx", "fp32"), Inference("onnx", "int8")
OV32, OV8 = Inference("openvino", "fp32"), Inference("openvino", "int8")


class TwoTowers:
    """An encoder whose image tower is one fake and its text tower another."""

    def __init__(self, image: FakeTower, text: FakeTower):
        self.preprocess_image, self.encode_preprocessed = image.preprocess_image, image.encode_preprocessed
        self.encode_texts = text.encode_texts


def test_a_text_tower_breaking_parity_no_longer_holds_the_image_tower_back(monkeypatch):
    """int8's text tower is made to break parity, its image tower to hold it: photos run int8, texts the fastest
    way that keeps fp32's vectors on them; a whole way asked for is still refused whole."""
    towers = {FP32: FakeTower(seconds=0.004), ONNX32: FakeTower(seconds=0.002),
              OV8: TwoTowers(image=FakeTower(seconds=0.0005), text=FakeTower(noise=0.2))}
    found = calibrate.measure("open_clip", fake_ways(towers), [OV8, ONNX32], calibrate.Sample.of([], []),
                              lambda *_: 60.0)
    table, split = found.table(), Inference.per_tower(OV8, ONNX32)
    assert split.describe() == "int8 on openvino for photos, fp32 on onnx for texts"
    assert not table[OV8].keeps_parity() and table[split].keeps_parity()
    assert table[split].speedup > table[ONNX32].speedup
    photos_only = found.table({"image": 1000, "text": 0})
    assert photos_only[split].speedup > 1.5 * photos_only[ONNX32].speedup  # photos at int8's speed
    if inference.missing_requirement(split) is None:
        assert inference.choose("open_clip", measured=table).inference == split
    with pytest.raises(InferenceChoiceError, match="int8 on openvino breaks parity"):
        inference.choose("open_clip", runtime="openvino", precision="int8", measured=table)
    assert inference.choose("open_clip", precision="fp32", measured=table).inference == ONNX32
    # the parity rule per way: fp32 queries beside it, the whole int8 way (its texts broken) not
    assert inference.accepts("open_clip", split, FP32, table) and inference.accepts("open_clip", split, ONNX32, table)
    assert not inference.accepts("open_clip", split, OV8, table)
    monkeypatch.setattr(inference, "_installed", lambda module: module != "onnxruntime")
    assert "onnxruntime is not installed" in inference.missing_requirement(split)  # either tower's need counts


def _result(way: Inference, tower: str, rate: float, cosine: float = 0.999) -> TowerResult:
    return TowerResult(way.runtime, way.precision, tower, rate, cosine, 1.0)


def _measured(*rows: tuple[Inference, float, float]) -> Calibration:
    """ways timed: (way, photos per second, texts per second), all holding parity, torch fp32 at 10 and 10."""
    results = [_result(FP32, "image", 10.0, 1.0), _result(FP32, "text", 10.0, 1.0)]
    for way, photos, texts in rows:
        results += [_result(way, "image", photos), _result(way, "text", texts)]
    return Calibration("key", "open_clip", {}, "tag:none", {}, results, 0.0)


def test_a_tower_keeps_the_way_both_hold_unless_its_own_is_a_tenth_faster():
    """Two runtimes in one process cost memory and start-up: worth it for more than a timing's noise."""
    close = _measured((OV8, 60.0, 60.0), (ONNX8, 50.0, 63.0))
    assert not any(way.split for way in close.table())
    apart = _measured((OV8, 60.0, 60.0), (ONNX8, 50.0, 90.0))
    assert Inference.per_tower(OV8, ONNX8) in apart.table()
    torch_only = Calibration("key", "open_clip", {}, "tag:none", {},
                             [_result(FP32, "image", 10.0, 1.0), _result(FP32, "text", 10.0, 1.0),
                              _result(Inference("torch", "int8"), "image", 30.0),
                              _result(Inference("torch", "int8"), "text", 12.0, 0.9)], 0.0)
    assert not any(way.split for way in torch_only.table())  # torch's towers load together: never apart
    offline = Calibration("key", "offline", {}, "tag:none", {},
                          [_result(FP32, "image", 10.0, 1.0), _result(OV8, "image", 60.0)], 0.0)
    assert list(offline.table()) == [FP32, OV8]  # one tower measured: nothing to split


def test_an_index_records_a_way_per_tower_and_reads_its_old_manifests_as_before():
    identity = ModelIdentity("open_clip", "ViT-B-32", None, 512, runtime="onnx", precision="fp32")
    assert "text_runtime" not in identity.to_dict()  # one way for both towers: recorded as before
    split = identity.with_way(Inference.per_tower(OV8, ONNX32))
    recorded = split.to_dict()
    assert (recorded["runtime"], recorded["precision"], recorded["text_runtime"], recorded["text_precision"]) == \
        ("openvino", "int8", "onnx", "fp32")
    assert ModelIdentity.from_dict(recorded) == split and split.inference == Inference.per_tower(OV8, ONNX32)
    assert split.with_way(ONNX32) == identity and split.compatibility_key() == identity.compatibility_key()


# ---- on a real model, through an index run, a query and an update ----------------------------------------------

SLOWER_SECONDS = 0.003  # per photo, on every way but int8's: int8 photos are then clearly the fastest


@pytest.fixture
def rigged_ways(monkeypatch):
    """Every int8 way's text tower made to break parity, every other way's image tower slower than int8's."""
    real = registry._OpenClipWays.__call__

    def rigged(self, way):
        encoder = real(self, way)
        if way.split:
            return encoder
        if way.precision == "int8":
            encoder.encode_texts = lambda texts, inner=encoder.encode_texts: _skewed(inner(texts))
        else:
            encoder.encode_preprocessed = lambda batch, inner=encoder.encode_preprocessed: \
                time.sleep(SLOWER_SECONDS * len(batch)) or inner(batch)
        return encoder

    monkeypatch.setattr(registry._OpenClipWays, "__call__", rigged)


def _xmodal(*args: str, cache) -> subprocess.CompletedProcess:
    """A real `xmodal` process that says, as it ends, whether it imported torch."""
    code = ("import json, sys\nfrom xmodal import cli\ntry:\n    cli.run()\nfinally:\n"
            "    print(json.dumps('torch' in sys.modules), file=sys.stderr)\n")
    env = {**env_with_tests_path(), "XDG_CACHE_HOME": str(cache), calibrate.CALIBRATE_ENV: "on"}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=300)


def test_photos_run_int8_and_texts_a_way_that_holds_end_to_end(measuring, rigged_ways, tmp_path):
    model = f"local-dir:{write_tiny_open_clip(tmp_path / 'model')}"
    photos_folder, out = tmp_path / "photos", tmp_path / "split.idx"
    shutil.copytree(CATALOG / "images", photos_folder)
    report = build_index(out, IndexConfig(images=[photos_folder], model=model, workers=0))
    way = open_index(out).manifest.model.inference
    assert way.split, report.model
    photos, texts = way.tower("image"), way.tower("text")
    assert photos.precision == "int8" and texts.precision != "int8"
    assert {photos.runtime, texts.runtime} <= set(inference.EXPORTED_RUNTIMES)
    assert way.describe() in report.model and way.describe() in report.calibration_note

    # a query runs the index's way per tower: its text vectors are the text way's, ranked as torch fp32's
    index = open_index(out)
    hits = index.search("a red car", k=6, target="image")
    assert index.loaded_encoder.identity.inference == way
    exact = open_index(out, runtime="torch", precision="fp32").search("a red car", k=6, target="image")
    assert [h.row_id for h in hits] == [h.row_id for h in exact]
    np.testing.assert_allclose([h.score for h in hits], [h.score for h in exact], atol=1e-3)
    outside = r"ones are outside the parity .* leave (--)?runtime and (--)?precision out"
    with pytest.raises(ModelMismatchError, match=outside):
        open_index(out, runtime=photos.runtime, precision="int8").search("a red car")  # int8's texts break it

    cache = tmp_path / "cache"
    info = _xmodal("info", str(out), cache=cache)
    assert info.returncode == 0, info.stderr
    assert f"encoding: {way.describe()}; queries and updates may run" in info.stdout
    measured = next(line for line in info.stdout.splitlines() if line.startswith("measured: "))
    assert measured.index(way.describe()) < measured.index("fp32 on torch photos 1.00x")  # held, and fastest
    searched = _xmodal("search", str(out), "a red car", "--json", cache=cache)
    assert searched.returncode == 0, searched.stderr
    assert json.loads(searched.stderr.strip().splitlines()[-1]) is False  # both towers exported: no torch
    assert [hit["row_id"] for hit in json.loads(searched.stdout)["hits"]][:3] == [h.row_id for h in exact[:3]]

    # an update, a new process: auto reads the same measurements, chooses the same way, and is accepted
    before = json.loads((out / "manifest.json").read_text())["model"]
    Image.open(photos_folder / "01-red-car.png").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(
        photos_folder / "13-red-car-turned.png")
    updated = _xmodal("index", str(photos_folder), "--out", str(out), "--model", model, cache=cache)
    assert updated.returncode == 0, updated.stderr
    assert json.loads((out / "manifest.json").read_text())["model"] == before
    assert len(open_index(out)) == 13
