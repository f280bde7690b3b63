"""Text corpora are read as text: encodings, byte-order marks, bad and empty rows, typed metadata."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.errors import CorpusEncodingError, EmptyCorpusError, InvalidInputError
from xmodal.indexer.build.sources import read_corpus
from xmodal.search import open_index
from fakes import FakeEncoder
from test_cli import xmodal

LATIN1_CSV = "id,text,price\n1,café latte,3\n2,crème brûlée,5\n3,,4\n4,a red car,18500\n"


def test_a_latin1_corpus_is_refused_with_file_line_and_option(tmp_path):
    path = tmp_path / "menu.csv"
    path.write_bytes(LATIN1_CSV.encode("latin-1"))
    with pytest.raises(CorpusEncodingError) as caught:
        read_corpus(path)
    assert str(caught.value) == ("menu.csv is not utf-8: line 2 cannot be decoded (and 1 more of its 5 lines); "
                                 "name the file's encoding, e.g. encoding='latin-1'")
    assert caught.value.for_cli().endswith("e.g. --encoding latin-1")


def test_a_latin1_corpus_reads_as_text_with_its_encoding(tmp_path):
    path = tmp_path / "menu.csv"
    path.write_bytes(LATIN1_CSV.encode("latin-1"))
    corpus = read_corpus(path, encoding="latin-1")
    assert [r.text for r in corpus.records] == ["café latte", "crème brûlée", "a red car"]
    assert [r.line for r in corpus.records] == [2, 3, 5]
    assert corpus.records[0].metadata == {"id": 1, "price": 3}
    assert [(s.line, s.reason) for s in corpus.skipped] == [(4, "empty text")]


def test_utf8_with_a_byte_order_mark_keeps_its_first_column_name(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefftext,colour\n红色汽车,red\n".encode("utf-8"))
    corpus = read_corpus(path)
    assert corpus.records[0].text == "红色汽车" and corpus.records[0].metadata == {"colour": "red"}


def test_a_few_undecodable_rows_are_skipped_with_their_lines(tmp_path):
    lines = [f"listing number {i}".encode() for i in range(300)]
    lines[41] = b"caf\xe9 with a broken byte"
    path = tmp_path / "notes.txt"
    path.write_bytes(b"\n".join(lines) + b"\n")
    corpus = read_corpus(path)
    assert len(corpus.records) == 299
    assert [(s.line, s.reason.split(";")[0]) for s in corpus.skipped] == [(42, "not valid utf-8")]
    assert "caf" not in " ".join(r.text for r in corpus.records)


def test_quoted_newlines_keep_line_numbers_and_metadata_is_typed(tmp_path):
    path = tmp_path / "listings.csv"
    path.write_text('sku,text,zip,weight,in_stock\n'
                    '"A1","first line\nsecond line",01234,1.5,true\n'
                    'B2,plain,02000,2,FALSE\n'
                    'C3,"",03000,,true\n'
                    'D4,too,many,fields,here,!\n', encoding="utf-8")
    corpus = read_corpus(path)
    assert [(r.line, r.text) for r in corpus.records] == [(2, "first line\nsecond line"), (4, "plain")]
    assert corpus.records[0].metadata == {"sku": "A1", "zip": "01234", "weight": 1.5, "in_stock": True}
    assert corpus.records[1].metadata["in_stock"] is False
    assert [(s.line, s.reason) for s in corpus.skipped] == [
        (5, "empty text"), (6, "has 6 fields where the header has 5")]


def test_jsonl_bad_lines_and_mixed_number_types(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"text": "a red car", "price": 5}\n{not json}\n[1, 2]\n'
                    '{"text": "a blue mug", "price": 2.5, "tags": ["x"]}\n{"text": "   "}\n', encoding="utf-8")
    corpus = read_corpus(path)
    assert [(r.line, r.metadata["price"]) for r in corpus.records] == [(1, 5.0), (4, 2.5)]
    assert corpus.records[1].metadata["tags"] == '["x"]'
    assert [(s.line, s.reason.split(" (")[0]) for s in corpus.skipped] == [
        (2, "not valid JSON"), (3, "not a JSON object"), (5, "empty text")]


def test_parquet_binary_texts_decode_with_the_encoding(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"text": pa.array([b"caf\xe9", b"plain", None], pa.binary()), "n": [1, 2, 3]}), path)
    assert [r.text for r in read_corpus(path, encoding="latin-1").records] == ["café", "plain"]
    corpus = read_corpus(path)
    assert [r.text for r in corpus.records] == ["plain"]
    assert [(s.line, s.reason.split(";")[0]) for s in corpus.skipped] == [(1, "not valid utf-8"), (3, "empty text")]


def test_unknown_encoding_and_a_folder_as_corpus(tmp_path):
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="unknown encoding 'klingon'"):
        read_corpus(tmp_path / "t.txt", encoding="klingon")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InvalidInputError, match="is a folder, not a file"):
        read_corpus(tmp_path / "dir.csv")


def test_skipped_rows_are_recorded_in_the_index_with_their_lines(tmp_path):
    path = tmp_path / "menu.csv"
    path.write_bytes(LATIN1_CSV.encode("latin-1"))
    out = tmp_path / "idx"
    report = build_index(out, IndexConfig(texts=[path], encoding="latin-1"), encoder=FakeEncoder())
    assert [(f.line, f.reason) for f in report.failures] == [(4, "empty text")]
    assert report.stats.failed == 1 and report.counts["text"] == 3
    index = open_index(out, encoder=FakeEncoder())
    assert [(f.path, f.line) for f in index.failures()] == [(str(path), 4)]
    assert {index.item(h.row_id)["text"] for h in index.search(text="x", target="text", k=5)} == {
        "café latte", "crème brûlée", "a red car"}
    again = build_index(out, IndexConfig(texts=[path], encoding="latin-1"), encoder=FakeEncoder())
    assert not again.committed and again.stats.failed == 0


def test_cli_refuses_a_latin1_corpus_then_indexes_it_with_encoding(tmp_path):
    path = tmp_path / "menu.csv"
    path.write_bytes(LATIN1_CSV.encode("latin-1"))
    out = tmp_path / "idx"
    refused = xmodal("index", "--texts", str(path), "--out", str(out), "--model", "python:fakes:make_encoder")
    assert refused.returncode == 2 and not out.exists()
    assert refused.stderr == ("error: menu.csv is not utf-8: line 2 cannot be decoded (and 1 more of its 5 lines); "
                              "name the file's encoding, e.g. --encoding latin-1\n")
    built = xmodal("index", "--texts", str(path), "--out", str(out), "--model", "python:fakes:make_encoder",
                   "--encoding", "latin-1")
    assert built.returncode == 0, built.stderr
    assert f"skipped {path}:4: empty text" in built.stderr
    found = json.loads(xmodal("search", str(out), "latte", "--target", "text", "--json").stdout)
    texts = [h["text"] for h in found["hits"]]
    assert sorted(texts) == ["a red car", "café latte", "crème brûlée"]


# ---- corpora that hold no rows ------------------------------------------------------------------------------

def _empty_parquet(path):
    pq.write_table(pa.table({"text": pa.array([], pa.string()), "price": pa.array([], pa.int64())}), path)


EMPTY_CORPORA = {
    "zero.csv": lambda p: p.write_bytes(b""),
    "header.csv": lambda p: p.write_text("text,price\n"),
    "zero.tsv": lambda p: p.write_bytes(b""),
    "header.tsv": lambda p: p.write_text("text\tprice\n\n"),
    "zero.jsonl": lambda p: p.write_bytes(b""),
    "blank.jsonl": lambda p: p.write_text("\n  \n"),
    "zero.txt": lambda p: p.write_bytes(b""),
    "rows0.parquet": _empty_parquet,
}


@pytest.mark.parametrize("name", sorted(EMPTY_CORPORA))
def test_a_corpus_with_no_rows_is_refused_and_nothing_is_written(tmp_path, name):
    """An empty table used to be indexed as nothing, exit 0: refused like a table without its text column."""
    path = tmp_path / name
    EMPTY_CORPORA[name](path)
    out = tmp_path / "idx"
    with pytest.raises(EmptyCorpusError) as caught:
        build_index(out, IndexConfig(texts=[path]), encoder=FakeEncoder())
    assert str(caught.value) == (f"text corpus {path} holds no rows (it is empty, or a header alone); put rows in "
                                 "it, or leave it out of this run")
    assert not out.exists()


def test_an_empty_table_of_products_is_refused_too(tmp_path):
    path = tmp_path / "products.csv"
    path.write_text("description,image\n")
    with pytest.raises(EmptyCorpusError, match="products.csv holds no rows"):
        build_index(tmp_path / "idx", IndexConfig(texts=[path], text_column="description", image_column="image"),
                    encoder=FakeEncoder())


def test_an_empty_corpus_beside_sources_with_items_is_refused_the_same_way(tmp_path, texts_csv):
    """One rule, whatever else the run names: as a new image folder without images is refused beside others."""
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    out = tmp_path / "idx"
    with pytest.raises(EmptyCorpusError, match="empty.jsonl holds no rows"):
        build_index(out, IndexConfig(texts=[texts_csv, empty]), encoder=FakeEncoder())
    assert not out.exists()
    build_index(out, IndexConfig(texts=[texts_csv]), encoder=FakeEncoder())
    with pytest.raises(EmptyCorpusError):  # added to an existing index: refused, the index as it was
        build_index(out, IndexConfig(texts=[empty]), encoder=FakeEncoder())
    assert open_index(out).manifest.counts["text"] == 4 and len(open_index(out).manifest.sources) == 1


def test_a_corpus_the_index_holds_may_be_emptied_and_its_texts_go(tmp_path, texts_csv):
    out = tmp_path / "idx"
    build_index(out, IndexConfig(texts=[texts_csv]), encoder=FakeEncoder())
    texts_csv.write_text("sku,text,price\n")
    report = build_index(out, IndexConfig(), encoder=FakeEncoder())
    assert report.counts["text"] == 0 and report.stats.removed == 4


def test_cli_refuses_an_empty_csv_in_one_line_exit_2(tmp_path):
    path = tmp_path / "listings.csv"
    path.write_text("description,price\n")
    out = tmp_path / "idx"
    done = xmodal("index", "--texts", str(path), "--text-column", "description", "--out", str(out),
                  "--model", "python:fakes:make_encoder")
    assert done.returncode == 2 and not out.exists()
    assert done.stderr == (f"error: text corpus {path} holds no rows (it is empty, or a header alone); put rows in "
                           "it, or leave it out of this run\n")


@pytest.mark.parametrize("image_column", [None, "image"])
def test_a_table_whose_every_row_is_malformed_is_refused_in_one_line(tmp_path, image_column):
    """Every row skipped gave an empty index and exit 0 (or, for products, 'nothing to index')."""
    path = tmp_path / "export.csv"
    path.write_text("sku,description,image\nA1,a red mug,mug.jpg,extra\nA2,a jug,jug.jpg,x,y\n")
    out = tmp_path / "idx"
    done = xmodal("index", "--texts", str(path), "--text-column", "description", "--out", str(out),
                  "--model", "python:fakes:make_encoder", *(["--image-column", image_column] if image_column else []))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"error: text corpus {path} holds no row that can be indexed (all 2 skipped; the first, "
                           "line 2: has 4 fields where the header has 3); fix the file, or leave it out of this run; "
                           "if its cells are not separated by ',', name the delimiter with --delimiter\n")
    assert not out.exists()


def test_a_table_the_index_holds_is_not_emptied_by_an_export_gone_wrong(tmp_path, texts_csv):
    out = tmp_path / "idx"
    build_index(out, IndexConfig(texts=[texts_csv]), encoder=FakeEncoder())
    texts_csv.write_text("sku,text,price\n1,a red car,3,EUR\n2,a blue car,4,EUR\n")  # a column added to the rows only
    with pytest.raises(EmptyCorpusError, match=r"holds no row that can be indexed \(all 2 skipped; the first, line 2: "
                                               r"has 4 fields where the header has 3\)"):
        build_index(out, IndexConfig(texts=[texts_csv]), encoder=FakeEncoder())
    assert open_index(out).manifest.counts["text"] == 4


def test_a_quote_never_closed_is_refused_naming_the_line_it_opened_on(tmp_path):
    """An unclosed quote took the rest of the file into one text, without a word."""
    path = tmp_path / "export.csv"
    path.write_text('sku,description,price\nA1,a red mug,5\nA2,"a jug,7\nA3,a bowl,3\nA4,a plate,2\n')
    out = tmp_path / "idx"
    done = xmodal("index", "--texts", str(path), "--text-column", "description", "--out", str(out),
                  "--model", "python:fakes:make_encoder")
    assert done.returncode == 2 and not out.exists()
    assert done.stderr == ("error: export.csv line 3: a quote opens there and is never closed, so lines 3-5 would "
                           'read as one field; close the quote (a quote inside a quoted field is written twice: ""), '
                           "then run again\n")


@pytest.mark.parametrize("stray", ['A5,a "plate,2', 'A5,Monitor 27",2'])
def test_rows_merged_by_a_stray_quote_are_skipped_with_their_lines(tmp_path, stray):
    """A quote opened on one row and closed on a later one merged the rows between into one, without a word; a
    quoted field that holds newlines is still one field."""
    path = tmp_path / "export.csv"
    path.write_text(f'sku,description,price\nA1,"a red mug,\nwith a handle",5\nA2,"a jug,7\nA3,a bowl,3\n'
                    f'A4,a cup,4\n{stray}\nA6,a pan,1\n')
    corpus = read_corpus(path, "description")
    assert [(r.line, r.text) for r in corpus.records] == [(2, "a red mug,\nwith a handle"), (8, "a pan")]
    assert [(s.line, s.reason) for s in corpus.skipped] == [
        (4, "a quote opened on line 4 closes only on line 7, so lines 4-7 read as one row: a stray quote? fix the "
            "quoting")]
