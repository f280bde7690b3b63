"""The CLI through typer's runner and as a real `xmodal` subprocess, bad input included."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image
from typer.testing import CliRunner

from fakes import FakeEncoder
from xmodal.cli import app
from xmodal.indexer import IndexConfig, build_index
from conftest import CATALOG, env_with_tests_path, noise_image

FAKE = "python:fakes:make_encoder"
runner = CliRunner()


def xmodal(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    exe = shutil.which("xmodal") or ""
    command = [exe] if exe else [sys.executable, "-c", "from xmodal import cli; cli.run()"]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=timeout,
                          env=env_with_tests_path())


@pytest.fixture
def catalog_index(tmp_path):
    out = tmp_path / "catalog-index"
    result = runner.invoke(app, ["index", str(CATALOG / "images"), "--out", str(out), "--texts",
                                 str(CATALOG / "listings.csv"), "--text-column", "description",
                                 "--model", FAKE, "--workers", "0"])
    assert result.exit_code == 0, result.output
    return out


def test_help_answers_without_importing_torch():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom xmodal import cli\n"
            "r = CliRunner().invoke(cli.app, ['--help'])\n"
            "print(r.exit_code, 'torch' in sys.modules, 'index' in r.output)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=env_with_tests_path())
    assert out.stdout.split() == ["0", "False", "True"], out.stderr


# Each option that takes one of a set, the set the code checks it against, and that check.
def _choice_options():
    from xmodal.indexer.build.sources import COLUMN_TYPES, check_column_types
    from xmodal.indexer.imaging import DECODE_MODES, check_decode_mode
    from xmodal.indexer.models import device, inference
    from xmodal.indexer.store.ann import INDEX_TYPES, choose_ann
    from xmodal.indexer.store.segments import VECTOR_DTYPES, check_vector_dtype
    from xmodal.search.fusion import FUSIONS
    from xmodal.search.query import TARGETS, Query
    from xmodal.search.recommend import STRATEGIES

    return {
        "--runtime": ((*inference.RUNTIMES, inference.AUTO), lambda v: inference.choose("open_clip", runtime=v)),
        "--precision": ((*inference.PRECISIONS, inference.AUTO), lambda v: inference._checked(v, inference.PRECISIONS,
                                                                                               "precision")),
        "--device": (device.DEVICES, lambda v: device.resolve_device(v.replace(":N", ":0"))),
        "--index-type": (INDEX_TYPES, lambda v: choose_ann(10, v)),
        "--vectors": (VECTOR_DTYPES, check_vector_dtype),
        "--decode": (DECODE_MODES, check_decode_mode),
        "--column-types": (tuple(COLUMN_TYPES), lambda v: check_column_types({"price": v})),
        "--target": (TARGETS, lambda v: Query(text="a", target=v).checked()),
        "--strategy": (STRATEGIES, lambda v: Query(text="a", strategy=v).checked()),
        "--fusion": (FUSIONS, lambda v: Query(text="a", fusion=v).checked()),
    }


LISTED = re.compile(r"(?:[\w-]+(?::\w+)?, )*[\w-]+(?::\w+)? or [\w-]+(?::\w+)?")  # "a, b or c", the first in a help text


def _listed(help_text: str) -> tuple[str, ...]:
    found = LISTED.search(help_text or "")
    return tuple(re.split(r", | or ", found.group(0))) if found else ()


def test_every_option_with_choices_lists_exactly_what_is_accepted():
    """--help lists, for each option that takes one of a set, exactly the values its check accepts: each listed
    value passes the check (a GPU asked for on a machine without one is refused as absent, not unknown), an
    unlisted one does not."""
    from typer.main import get_command

    from xmodal.indexer.errors import XmodalError

    options = _choice_options()
    seen = set()
    for name, command in get_command(app).commands.items():
        for param in command.params:
            for flag in set(param.opts) & set(options):
                accepted, check = options[flag]
                assert set(_listed(param.help)) == set(accepted), f"xmodal {name} {flag}: {param.help}"
                seen.add(flag)
                for value in accepted:
                    try:
                        check(value)
                    except XmodalError as refused:
                        assert "unknown" not in str(refused), f"{flag} {value}: {refused}"
                with pytest.raises(XmodalError, match="unknown"):
                    check("bogus")
    assert seen == set(options)
    modalities = {n: _listed(p.help) for n, c in get_command(app).commands.items() for p in c.params
                  if "--modality" in p.opts}
    from xmodal.search import TARGETS  # the kinds of item, products among them

    assert modalities == {"duplicates": TARGETS, "list": TARGETS}
    for command, modality in (("duplicates", "bogus"), ("list", "bogus")):
        refused = runner.invoke(app, [command, "any.idx", "--modality", modality])
        assert refused.exit_code != 0
        assert _listed(refused.output) == modalities[command], refused.output


def test_index_prints_a_summary(tmp_path):
    out = tmp_path / "idx"
    result = runner.invoke(app, ["index", str(CATALOG / "images"), "--out", str(out), "--model", FAKE,
                                 "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "indexed 12 images, 0 texts; skipped 0;" in result.output and "items/s" in result.output
    assert "on cpu" in result.output


def test_search_json_and_table(catalog_index):
    result = runner.invoke(app, ["search", str(catalog_index), "I want to buy a red car", "--json", "-k", "3"])
    assert result.exit_code == 0, result.output
    result_json = json.loads(result.output)
    hits = result_json["hits"]
    assert result_json["count"] == 3 and result_json["k"] == 3 and result_json["target"] == "image"
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["path"].endswith("01-red-car.png") and hits[0]["modality"] == "image"
    assert {"rank", "score", "row_id", "modality", "path", "text", "metadata"} <= set(hits[0])
    table = runner.invoke(app, ["search", str(catalog_index), "red car", "--target", "text", "-k", "2"])
    assert table.exit_code == 0
    assert table.output.splitlines()[0].split()[:3] == ["1", "+1.0000", "text"]
    assert "price=18500" in table.output


def test_info_json_has_counts_failures_and_model(catalog_index):
    result = runner.invoke(app, ["info", str(catalog_index), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["counts"] == {"image": 12, "text": 12, "product": 0}
    assert info["failures"] == 0
    assert info["model"]["spec"] == FAKE and info["model"]["dim"] == 13


def test_real_subprocess_index_search_info(tmp_path):
    images = tmp_path / "images"
    shutil.copytree(CATALOG / "images", images)
    (images / "truncated.png").write_bytes((images / "01-red-car.png").read_bytes()[:300])
    out = tmp_path / "idx"
    built = xmodal("index", str(images), "--out", str(out), "--texts", str(CATALOG / "listings.csv"),
                   "--text-column", "title", "--model", FAKE, "--workers", "2")
    assert built.returncode == 0, built.stderr
    assert "indexed 12 images, 12 texts; skipped 1 (1 image);" in built.stdout
    assert "truncated.png" in built.stderr and "Traceback" not in built.stderr
    found = xmodal("search", str(out), "我想买一辆红色汽车", "--json", "-k", "1")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["hits"][0]["path"].endswith("01-red-car.png")
    info = json.loads(xmodal("info", str(out), "--json").stdout)
    assert info["counts"] == {"image": 12, "text": 12, "product": 0} and info["failures"] == 1


def test_skipped_and_failed_add_up_on_re_runs(tmp_path):
    """'skipped 3' beside 'failed 2' after re-runs: skipped is all the index could not take, failed what failed
    in this run; the rest is said apart, with how it is retried."""
    images = tmp_path / "images"
    images.mkdir()
    noise_image(1).save(images / "good.png")
    for name in ("bad1.jpg", "bad2.jpg"):
        (images / name).write_bytes(b"not a photo")
    out = tmp_path / "idx"
    first = xmodal("index", str(images), "--out", str(out), "--model", FAKE, "--workers", "0")
    assert "skipped 2 (2 images);" in first.stdout and first.stdout.rstrip().endswith("failed 2"), first.stdout
    (images / "bad3.jpg").write_bytes(b"not a photo either")
    second = xmodal("index", str(images), "--out", str(out))
    assert "skipped 3 (3 images);" in second.stdout
    assert ("failed 1 (2 skipped as before: a file is retried once it changes, or with --retry-failed)"
            in second.stdout), second.stdout
    idle = xmodal("index", "--out", str(out))
    assert "failed 0 (3 skipped as before: a file is retried once it changes, or with --retry-failed; " \
           "nothing changed)" in idle.stdout, idle.stdout
    info = xmodal("info", str(out)).stdout
    assert "3 skipped" in info and "failed 0 (3 skipped as before) in" in info, info


def test_an_oversized_photo_names_the_command_line_option_on_the_command_line(tmp_path):
    """'raise the limit (max_pixels)' named the Python keyword to a command-line user."""
    images = tmp_path / "images"
    images.mkdir()
    noise_image(1).save(images / "good.png")
    Image.new("1", (20_000, 20_000)).save(images / "poster.png")  # 400 megapixels, a few kB
    out = tmp_path / "idx"
    built = xmodal("index", str(images), "--out", str(out), "--model", FAKE, "--workers", "0")
    assert built.returncode == 0, built.stderr
    assert "poster.png: decompression bomb: 20000x20000 is 400 megapixels, over the limit of 300; if it is a real " \
           "photo, raise the limit (--max-pixels)" in built.stderr and "max_pixels" not in built.stderr
    listed = xmodal("info", str(out), "--failures")
    assert "raise the limit (--max-pixels)" in listed.stdout and "max_pixels" not in listed.stdout
    from xmodal.search import open_index

    assert open_index(out).failures()[0].reason.endswith("raise the limit (max_pixels)")  # Python's own terms
    retried = build_index(out, IndexConfig(images=[images], workers=0, retry_failed=True), encoder=FakeEncoder())
    assert retried.failures[0].reason.endswith("raise the limit (max_pixels)")


def _assert_one_line_error(result, needle: str):
    assert result.exit_code != 0
    lines = [l for l in result.output.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.output
    assert "Traceback" not in result.output


def test_bad_inputs_give_one_line_and_write_nothing(tmp_path, catalog_index):
    out = tmp_path / "never"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hello")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 40)
    cases = [
        (["index", str(tmp_path / "missing"), "--out", str(out)], "does not exist"),
        (["index", str(CATALOG / "listings.csv"), "--out", str(out)],
         f"{CATALOG / 'listings.csv'} is a text corpus, not an image folder; "
         f"index it with --texts {CATALOG / 'listings.csv'}"),
        (["index", str(empty), "--out", str(out)], "no images found"),
        (["index", str(CATALOG / "images"), "--out", str(out), "--model", "no-such-model"], "unknown model"),
        (["index", str(CATALOG / "images"), "--out", str(out), "--model", FAKE, "--texts",
          str(CATALOG / "listings.csv"), "--text-column", "caption"], "no column 'caption'"),
        (["index", str(CATALOG / "images"), "--out", str(out), "--index-type", "annoy"], "unknown --index-type"),
        (["index", str(CATALOG / "images"), "--out", str(out), "--model", FAKE, "--decode", "fast"],
         "unknown image decoding 'fast'; use reduced or exact"),
        (["index", str(CATALOG / "images"), "--out", str(catalog_index), "--model", FAKE, "--decode", "exact"],
         "this index decodes images reduced (recorded when it was built); --decode exact applies to a new index"),
        (["eval", str(CATALOG / "images"), "--model", FAKE, "--decode", "fast"], "unknown image decoding 'fast'"),
        (["search", str(empty), "red car"], "not an xmodal index"),
        (["search", str(catalog_index), "red car", "-k", "0"], "-k must be a whole number of at least 1"),
        (["search", str(catalog_index), "--image", str(tmp_path / "nope.jpg")], "does not exist"),
        (["search", str(catalog_index), "--image", str(corrupt)], "cannot be read"),
        (["search", str(catalog_index)], "give a query: a text, --image FILE, or liked items (--like ITEM)"),
        (["info", str(tmp_path / "missing")], "does not exist"),
        (["search", str(corrupt), "red car"], "is a file, not an index folder"),
        (["models", "zzz-no-such"], "no model names contain 'zzz-no-such'"),
    ]
    before = sorted(p.name for p in catalog_index.rglob("*"))
    for args, needle in cases:
        _assert_one_line_error(runner.invoke(app, args), needle)
    assert not out.exists()
    assert sorted(p.name for p in catalog_index.rglob("*")) == before


def test_model_without_weights_fails_in_one_line_in_a_real_process(tmp_path):
    result = xmodal("index", str(CATALOG / "images"), "--out", str(tmp_path / "idx"), timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: weights ViT-B-32")
    assert not (tmp_path / "idx").exists()


def test_help_is_clean_and_version_and_short_help_answer():
    for command in ["--help", "index -h", "search -h", "info -h", "eval -h", "list -h", "remove -h", "models -h",
                    "duplicates -h"]:
        result = runner.invoke(app, command.split())
        assert result.exit_code == 0, command
        assert "<list" not in result.output and "<str>" not in result.output, command
        assert not re.search(r"\w \.(\s|$)", result.output), command  # a default stripped out of the sentence
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("xmodal ")


def test_summaries_count_in_words_and_say_when_no_model_loaded(tmp_path):
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(CATALOG / "images" / "01-red-car.png", folder)
    first = runner.invoke(app, ["index", str(folder), "--out", str(tmp_path / "idx"), "--model", FAKE, "--workers", "0"])
    assert "indexed 1 image, 0 texts; skipped 0;" in first.output
    again = runner.invoke(app, ["index", "--out", str(tmp_path / "idx")])
    assert again.output.startswith("model: python:fakes:make_encoder, 13-d (not loaded: nothing to encode)\n")
    no_texts = runner.invoke(app, ["search", str(tmp_path / "idx"), "red car", "--target", "text"])
    assert no_texts.exit_code == 2 and no_texts.output == (
        f"error: {tmp_path / 'idx'} holds no texts (it holds 1 image); search --target image instead, "
        "or index --texts FILE into it\n")


def test_a_missing_target_is_refused_before_the_model_loads(catalog_index, tmp_path, monkeypatch):
    import xmodal.search.engine as engine
    from xmodal.indexer.errors import InvalidInputError
    from xmodal.search import open_index

    images_only = tmp_path / "images-only"
    runner.invoke(app, ["index", str(CATALOG / "images"), "--out", str(images_only), "--model", FAKE, "--workers", "0"])

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(engine, "load_encoder_for", no_model)
    with pytest.raises(InvalidInputError, match="holds no texts"):
        open_index(images_only).search(text="a red car", target="text")


def test_progress_moves_with_every_decoded_image(tmp_path):
    from fakes import FakeEncoder
    from xmodal.indexer import IndexConfig, build_index

    updates = []

    class Recorder:
        def update(self, n):
            updates.append(n)

        def close(self):
            pass

    build_index(tmp_path / "idx", IndexConfig(images=[CATALOG / "images"], workers=2, batch_size=64),
                encoder=FakeEncoder(), progress=lambda label, total: Recorder())
    assert updates == [1] * 12
