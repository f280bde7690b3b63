"""`xmodal eval` end to end with the deterministic fake encoder, whose answers are known by hand."""
from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

from xmodal.cli import app
from conftest import CATALOG
from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.errors import InvalidInputError
from xmodal.search.evaluation import evaluate

runner = CliRunner()
FAKE = "python:fakes:make_encoder"


@pytest.fixture
def labelled(tmp_path):
    """3 cars, 2 shoes, 2 mugs: the fake separates the classes perfectly, with ties inside each."""
    root = tmp_path / "labelled"
    for cls, names in {"car": ["01-red-car", "02-blue-car", "03-green-car"],
                       "shoe": ["04-red-shoe", "05-white-shoe"], "mug": ["08-yellow-mug", "09-red-mug"]}.items():
        (root / cls).mkdir(parents=True)
        for name in names:
            shutil.copy(CATALOG / "images" / f"{name}.png", root / cls)
    return root


def test_labelled_folder_figures_by_hand(labelled):
    result = evaluate(labelled, encoder=FakeEncoder(), ks=(1, 5), workers=0)
    assert result.kind == "labelled-folder" and result.items == {"images": 7, "classes": 3}
    t2i = result.text_to_image
    assert t2i["precision@1"] == 1.0
    assert t2i["recall@1"] == pytest.approx(round((1 / 3 + 1 / 2 + 1 / 2) / 3, 4))
    assert t2i["precision@5"] == pytest.approx(round((3 / 5 + 2 / 5 + 2 / 5) / 3, 4))
    assert t2i["recall@5"] == 1.0 and t2i["mAP"] == 1.0
    assert result.image_to_text == {"top1": 1.0, "top5": 1.0}


def test_captions_file_recall_both_ways():
    result = evaluate(CATALOG / "listings.csv", encoder=FakeEncoder(), caption_column="description", workers=0)
    assert result.kind == "captions" and result.items == {"images": 12, "captions": 12}
    assert result.text_to_image == {"recall@1": 1.0, "recall@5": 1.0, "recall@10": 1.0}
    assert result.image_to_text["recall@1"] == 1.0


def test_captions_with_a_wrong_pairing_lose_recall(tmp_path):
    rows = ["image,caption", "images/01-red-car.png,a red car", "images/02-blue-car.png,a red mug",
            "images/09-red-mug.png,a blue car"]
    shutil.copytree(CATALOG / "images", tmp_path / "images")
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    result = evaluate(tmp_path / "pairs.csv", encoder=FakeEncoder(), ks=(1,), workers=0)
    assert result.text_to_image["recall@1"] == pytest.approx(round(1 / 3, 4))


def test_eval_of_an_approximate_index_reports_ann_recall(tmp_path, labelled):
    encoder = FakeEncoder()
    build_index(tmp_path / "idx", IndexConfig(images=[labelled], workers=0, index_type="hnsw"), encoder=encoder)
    from xmodal.search import open_index

    result = evaluate(labelled, index=tmp_path / "idx", encoder=encoder, ks=(1, 5))
    assert result.ann["index_type"] == "hnsw" and result.ann["recall@5"] == pytest.approx(1.0)
    assert result.text_to_image["mAP"] == 1.0
    assert open_index(tmp_path / "idx", encoder=encoder).manifest.counts["image"] == 7


def test_cli_eval_json_and_table(labelled):
    result = runner.invoke(app, ["eval", str(labelled), "--model", FAKE, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["text_to_image"]["precision@10"] == pytest.approx(round((3 + 2 + 2) / 10 / 3, 4))
    assert data["image_to_text"]["top1"] == 1.0 and data["model"]["spec"] == FAKE
    table = runner.invoke(app, ["eval", str(labelled), "--model", FAKE, "-k", "1"])
    assert "text->image:  precision@1 1.0000" in table.output


def test_eval_bad_inputs(tmp_path, labelled):
    with pytest.raises(InvalidInputError, match="does not exist"):
        evaluate(tmp_path / "missing", encoder=FakeEncoder())
    (tmp_path / "one" / "only").mkdir(parents=True)
    with pytest.raises(InvalidInputError, match="one subfolder per class"):
        evaluate(tmp_path / "one", encoder=FakeEncoder())
    with pytest.raises(InvalidInputError, match="name the image column with image_column"):
        evaluate(CATALOG / "listings.csv", encoder=FakeEncoder(), caption_column="title", image_column="photo")
    with pytest.raises(InvalidInputError, match=r"no column 'caption'.*\(choose one with caption_column\)"):
        evaluate(CATALOG / "listings.csv", encoder=FakeEncoder())  # eval's own option, not index's text_column
    for args, needle in [(["-k", "0"], "-k takes"), (["--prompt", "no slot"], "--prompt must contain")]:
        out = runner.invoke(app, ["eval", str(labelled), "--model", FAKE, *args])
        assert out.exit_code == 2 and needle in out.output


def test_cli_eval_runs_the_way_asked_and_fp32_scores_alike(labelled, tiny_spec, tmp_path, monkeypatch):
    """`xmodal eval --runtime/--precision`: the way asked is the way measured; fp32 on ONNX Runtime gives torch
    fp32's figures, and a way the model does not offer is refused in one line."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    figures = {}
    for runtime in ("torch", "onnx"):
        result = runner.invoke(app, ["eval", str(labelled), "--model", tiny_spec, "--json", "--runtime", runtime,
                                     "--precision", "fp32"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert (data["model"]["runtime"], data["model"]["precision"]) == (runtime, "fp32")
        figures[runtime] = (data["text_to_image"], data["image_to_text"])
    for on_torch, on_onnx in zip(*figures.values()):
        assert on_onnx == pytest.approx(on_torch, abs=1e-6)
    refused = runner.invoke(app, ["eval", str(labelled), "--model", "offline", "--precision", "int8"])
    assert refused.exit_code != 0 and "does not run int8" in refused.output
