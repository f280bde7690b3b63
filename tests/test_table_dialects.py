"""A shop's real exports: ';'-separated tables with decimal commas (Excel where the comma is the decimal mark),
delimiters sniffed or named, and a missing-value hint that never offers a number as a missing marker.

Real files, indexed by a real `xmodal index` subprocess where the CLI is what is tested.
"""
from __future__ import annotations

import json
import shlex

import pytest

from fakes import FakeEncoder
from test_cli import FAKE, xmodal
from test_columns import column_lines, refused, titles
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.build.sources import read_corpus
from xmodal.indexer.errors import InvalidInputError
from xmodal.indexer.store import IndexDir

EXCEL = """sku;title;description;price;weight
A1;Red mug;a red mug with a handle;12,5;0,35
A2;Blue jug;a blue jug, one litre;7;1,2
A3;Green bowl;a green bowl;3,25;0,4
A4;Golden watch;a golden watch;120;0,1
"""


@pytest.fixture
def excel(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(EXCEL, encoding="utf-8")
    return path


def index(table, out, *options):
    run = xmodal("index", "--texts", str(table), "--text-column", "description", "--out", str(out), "--model", FAKE,
                 *options)
    assert run.returncode == 0, run.stderr
    return run


def test_a_semicolon_export_is_split_and_its_decimal_commas_read_and_the_run_says_so(excel, tmp_path):
    """The whole header was one column ('sku;title;description;...'), and 12,5 no number."""
    out = tmp_path / "idx"
    run = index(excel, out)
    said = "export.csv; delimiter ';' (sniffed), decimal ',' (inferred from its numbers)"
    assert column_lines(run) == [f"column sku ({said}): text, 0 nulls", f"column title ({said}): text, 0 nulls",
                                 f"column price ({said}): float, 0 nulls", f"column weight ({said}): float, 0 nulls"]
    assert titles(out, "price < 10") == {"Blue jug", "Green bowl"}
    assert titles(out, "price == 12.5 and weight > 0.3") == {"Red mug"}
    [source] = IndexDir(out).read_manifest().sources
    assert source.delimiter is None and source.decimal is None  # found in the file, and found again next time


def test_decimal_and_delimiter_can_be_named_and_are_recorded(excel, tmp_path):
    out = tmp_path / "idx"
    run = index(excel, out, "--decimal", ".")  # as the file says otherwise: the prices are text, and say why
    assert "column price (export.csv; delimiter ';' (sniffed)): text, 0 nulls; mostly numbers, but line 2 holds " \
           "'12,5' (a number with a decimal comma: read them so with --decimal ,)" in column_lines(run)
    again = index(excel, out, "--delimiter", ";", "--decimal", ",")
    assert "column price (export.csv; delimiter ';', decimal ','): float, 0 nulls" in column_lines(again)
    [source] = IndexDir(out).read_manifest().sources
    assert (source.delimiter, source.decimal) == (";", ",")
    info = xmodal("info", str(out))
    assert "texts, text_column description, delimiter ';', decimal ,)" in info.stdout
    wrong = xmodal("index", "--texts", str(excel), "--out", str(out), "--delimiter", ",")
    assert wrong.returncode == 2 and wrong.stderr == (
        f"error: text corpus {excel} holds no row that can be indexed (all 4 skipped; the first, line 2: has 3 "
        "fields where the header has 1); fix the file, or leave it out of this run; if its cells are not separated "
        "by ',', name the delimiter with --delimiter\n")
    whole = tmp_path / "whole.csv"
    whole.write_text("sku;title;description\nA1;Red mug;a red mug\n")
    wrong = xmodal("index", "--texts", str(whole), "--text-column", "description", "--out", str(tmp_path / "new"),
                   "--delimiter", ",")
    assert wrong.returncode == 2 and wrong.stderr == (
        "error: whole.csv has no column 'description'; its columns are sku;title;description (choose one with "
        "--text-column); if its cells are separated by ';', name it with --delimiter ;\n")
    bad = xmodal("index", "--texts", str(excel), "--out", str(out), "--delimiter", ":")
    assert bad.returncode == 2 and bad.stderr == "error: unknown delimiter ':' in --delimiter; use , ; | or tab\n"
    bad = xmodal("index", "--texts", str(excel), "--out", str(out), "--decimal", ";")
    assert bad.returncode == 2 and bad.stderr == "error: unknown decimal mark ';' in --decimal; use . or ,\n"


@pytest.mark.parametrize("text,delimiter", [
    ("title\tprice\tdescription\nmug\t5\ta mug, red\n", "\t"),
    ("title|price|description\nmug|5|a mug; red, big\n", "|"),
    ("title,price,description\nmug,5,a mug; red; big\n", ","),
    ("description\na mug; red\n", ","),  # one column: nothing to tell, and nothing said
])
def test_the_delimiter_is_the_one_that_splits_the_header_as_the_rows(tmp_path, text, delimiter):
    path = tmp_path / "t.csv"
    path.write_text(text)
    corpus = read_corpus(path, "description")
    assert corpus.dialect.delimiter == delimiter and [r.text for r in corpus.records] == [text.split("\n")[1].split(
        delimiter)[-1]]
    shown = "tab" if delimiter == "\t" else repr(delimiter)
    assert corpus.dialect.describe(".csv") == (None if delimiter == "," else f"delimiter {shown} (sniffed)")


def test_a_decimal_comma_is_inferred_only_where_no_number_has_a_point(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("description;price;weight\na mug;12,5;1.5\n")
    corpus = read_corpus(path, "description")
    assert corpus.dialect.decimal == "." and corpus.records[0].metadata == {"price": "12,5", "weight": 1.5}
    tsv = tmp_path / "t.tsv"
    tsv.write_text("description\tprice\na mug\t12,5\n")
    assert read_corpus(tsv, "description").records[0].metadata == {"price": "12,5"}  # only ';' tells
    assert build_index(tmp_path / "idx", IndexConfig(texts=[tsv], text_column="description", decimal=","),
                       encoder=FakeEncoder()).columns[str(tsv)][0].type == "float"


def test_the_missing_value_hint_never_offers_a_number(tmp_path):
    """For prices 5, "12,5", 7 the hint was --na-values "NA,N/A,null,None,-,nan,12,5": split at the comma, 12
    and 5 became missing, the real price 5 with them, and the next hint offered ...,12,5,12,5."""
    path = tmp_path / "prices.csv"
    path.write_text('title,price,description\nMug,5,a mug\nJug,"12,5",a jug\nBowl,7,a bowl\n')
    out = tmp_path / "idx"
    run = index(path, out)
    assert column_lines(run)[1] == ("column price (prices.csv): text, 0 nulls; mostly numbers, but line 3 holds "
                                    "'12,5' (a number with a decimal comma: read them so with --decimal ,)")
    message = refused(out, "price < 10")
    assert message == ("error: price is text, not numbers: line 3 of prices.csv holds '12,5', a number with a "
                       "decimal comma; index prices.csv again with --decimal ,\n")
    assert "na-values" not in message
    fixed = index(path, out, "--decimal", ",")
    assert "column price (prices.csv; delimiter ',' (sniffed), decimal ','): float, 0 nulls" in column_lines(fixed)
    assert titles(out, "price < 10") == {"Mug", "Bowl"} and titles(out, "price == 12.5") == {"Jug"}
    assert titles(out, "price == 5") == {"Mug"}  # the real 5 is a 5, not a missing value


@pytest.mark.parametrize("cell,fix", [("1,234,567", "a number with grouped digits, which are not read as one; "
                                                    "write it as 1234567"),
                                      ("12.5", "a number with a decimal point; index prices.csv again with "
                                               "--decimal .")])
def test_other_numbers_are_not_offered_as_missing_either(tmp_path, cell, fix):
    path = tmp_path / "prices.csv"
    path.write_text(f'title;price;description\nMug;5;a mug\nJug;{cell};a jug\nBowl;7;a bowl\nPan;1,5;a pan\n')
    out = tmp_path / "idx"
    index(path, out, "--decimal", ",")
    said = f"error: price is text, not numbers: line 3 of prices.csv holds {cell!r}, {fix}\n"
    assert refused(out, "price < 10") == said


def test_a_set_type_names_the_decimal_mark_not_a_missing_marker(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text('title,price,description\nMug,5,a mug\nJug,"12,5",a jug\n')
    run = xmodal("index", "--texts", str(path), "--text-column", "description", "--out", str(tmp_path / "idx"),
                 "--model", FAKE, "--column-types", "price=float")
    assert run.returncode == 2 and run.stderr == (
        "error: prices.csv line 3: price holds '12,5', which is not a float (--column-types sets price=float); fix "
        "that line, or read it with --decimal ,\n")


def test_na_values_hold_a_comma_as_a_json_list_and_the_hint_writes_one(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text('title,price,description\nMug,5,a mug\nJug,"ask us, we deliver",a jug\nBowl,7,a bowl\n')
    out = tmp_path / "idx"
    index(path, out)
    message = refused(out, "price < 10")
    suggested = """'["NA", "N/A", "null", "None", "-", "nan", "ask us, we deliver"]'"""
    assert message == ("error: price is text, not numbers: line 3 of prices.csv holds 'ask us, we deliver'; if that "
                       f"means a missing value, index prices.csv again with --na-values {suggested}, or fix that "
                       "line\n")
    [markers] = shlex.split(suggested)  # the hint as a shell passes it
    fixed = index(path, out, "--na-values", markers)
    assert "column price (prices.csv): int, 1 null" in column_lines(fixed)
    assert IndexDir(out).read_manifest().sources[0].na_values == tuple(json.loads(markers))
    assert titles(out, "price == null") == {"Jug"} and titles(out, "price < 10") == {"Mug", "Bowl"}
    info = xmodal("info", str(out))
    assert 'na_values ["NA", "N/A", "null", "None", "-", "nan", "ask us, we deliver"]' in info.stdout
    bad = xmodal("index", "--texts", str(path), "--out", str(out), "--na-values", '["NA", 5]')
    assert bad.returncode == 2 and bad.stderr.startswith("error: --na-values '[\"NA\", 5]' starts like a JSON list")


def test_the_api_takes_the_same_options(excel, tmp_path):
    report = build_index(tmp_path / "idx", IndexConfig(texts=[excel], text_column="description", delimiter=";",
                                                       decimal=",", na_values=["n/a", "a, b"]), encoder=FakeEncoder())
    assert report.dialects[str(excel)].describe(".csv") == "delimiter ';', decimal ','"
    assert {c.name: c.type for c in report.columns[str(excel)]}["price"] == "float"
    with pytest.raises(InvalidInputError, match=r"unknown delimiter ':' in delimiter; use , ; \| or tab"):
        build_index(tmp_path / "idx", IndexConfig(texts=[excel], delimiter=":"), encoder=FakeEncoder())


def test_an_export_with_a_column_left_empty_indexes(tmp_path):
    """A column with no value in any row (an export's unused 'image' or 'note') crashed the run with pyarrow's
    'Function 'equal' has no kernel matching input types (null, null)'."""
    path = tmp_path / "export.csv"
    path.write_text("sku;description;price;note\nA1;a red mug;12,5;\nA2;a jug;7;\n")
    out = tmp_path / "idx"
    run = index(path, out)
    assert "column note (export.csv; delimiter ';' (sniffed), decimal ',' (inferred from its numbers)): no values, " \
           "2 nulls" in column_lines(run)
    assert "encoded 0, reused 2" in index(path, out, "--decimal", ",").stdout
