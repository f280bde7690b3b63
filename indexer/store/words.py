"""A segment's word index: its rows' words in a tantivy index inside the segment folder, searched by BM25.

Each segment holds the words of its own rows, written with its vectors before the manifest that names it
(so a commit publishes words and vectors together), and is filtered by the segment's own deletion file, as
its vectors are. xmodal's analyser (indexer/words.py) decides the terms on both sides: a row's terms are
stored joined by spaces under tantivy's whitespace tokenizer, and a query's terms are looked up as they are.

A row's words are its text, its photo's file name, its key (a table's id column, also marked by a term of
its own, words.key_term, that an exact id lookup finds) and its table's text columns (`columns`: None for
every text column; named columns are taken whatever their type, a number as its digits). Numbers are
not words by default: price 42 would otherwise answer "size 42"; they stay numbers for filters.

The manifest records, per segment, the folder of its words (None: written before words), and once per
index the analysis and columns they were written with (`words_setting`); a commit whose setting differs
writes every segment's words again (build/commit.py).
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import numpy as np
import pyarrow as pa

from .. import words as analyser

WORDS_FOLDER = "words"  # a fresh segment's; words added to an older segment later are words-<generation>
_ROW_ID, _WORDS = "row_id", "words"
_TOKENIZER = "xmodal-terms"
_LONGEST_TERM = 200  # characters; tantivy refuses terms over 65,530 bytes, and none is typed that long
_WRITER_MEMORY = 64_000_000  # bytes: tantivy's indexing buffer (one thread: a segment's words are small)


def words_setting(columns: list[str] | None = None) -> dict[str, Any]:
    """What the manifest records of the words: this process's analysis, and the columns (None: text ones)."""
    return {"analyser": analyser.identity(), "columns": list(columns) if columns is not None else None}


def row_words(items: pa.Table, columns: list[str] | None = None) -> Iterator[tuple[int, str]]:
    """(row id, its terms joined by spaces) of each row of an items table that has any."""
    row_ids = items.column("row_id").to_pylist()
    texts = _column(items, "text")
    keys = _column(items, "key")
    names = _photo_names(items)
    values = _metadata_values(items, columns)
    for at, row_id in enumerate(row_ids):
        parts = [texts[at], names[at]] + [v[at] for v in values]
        key = keys[at]
        if key is not None and key not in parts:  # a numeric id column is in the metadata as a number
            parts.append(key)
        terms = [t for part in parts if part for t in analyser.analyse(part) if len(t) <= _LONGEST_TERM]
        if key is not None and len(analyser.key_term(key)) <= _LONGEST_TERM:
            terms.append(analyser.key_term(key))
        if terms:
            yield row_id, " ".join(terms)


def _photo_names(items: pa.Table) -> list[str | None]:
    """A photo's file name without its extension (SHO-004.jpg, red_car_01.png): shops name photos by SKU, and
    a folder of photos has no other words. A text's path is its corpus file, which names no row."""
    paths, modalities = _column(items, "path"), _column(items, "modality")
    return [PurePosixPath(p.replace("\\", "/").split("?")[0]).stem if p and m != "text" else None for p, m in zip(paths, modalities)]


def _column(items: pa.Table, name: str) -> list[Any]:
    return items.column(name).to_pylist() if name in items.column_names else [None] * len(items)


def _metadata_values(items: pa.Table, columns: list[str] | None) -> list[list[str | None]]:
    """The cells of the table columns searched as words, column by column, as text."""
    if "metadata" not in items.column_names:
        return []
    struct = items.column("metadata").combine_chunks()
    names = [struct.type.field(i).name for i in range(struct.type.num_fields)]
    values = []
    for name, cells in zip(names, struct.flatten()):  # flatten: a row without metadata has none of its cells
        if columns is None and not _is_text(cells.type):
            continue
        if columns is not None and name not in columns:
            continue
        values.append([None if v is None else _as_text(v) for v in cells.to_pylist()])
    return values


def _is_text(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _as_text(value: Any) -> str:
    """A cell as the words it shows: 42.0 as 42 (how a shopper types it), lists item by item."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return " ".join(_as_text(v) for v in value if v is not None)
    return str(value)


def write_words(folder: Path, items: pa.Table, columns: list[str] | None = None) -> int:
    """Write the word index of `items` into `folder` (replaced if there); returns how many rows have words."""
    import tantivy

    if folder.exists():  # a killed run's partial words under the same name: no manifest names them
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    index = tantivy.Index(_schema(), str(folder))
    index.register_tokenizer(_TOKENIZER, tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).build())
    writer = index.writer(_WRITER_MEMORY, 1)
    count = 0
    for row_id, terms in row_words(items, columns):
        document = tantivy.Document()
        document.add_unsigned(_ROW_ID, row_id)  # Document(row_id=n) would be an i64, which a u64 field refuses
        document.add_text(_WORDS, terms)
        writer.add_document(document)
        count += 1
    writer.commit()
    writer.wait_merging_threads()
    return count


def _schema():
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field(_ROW_ID, indexed=False, fast=True)
    # Frequencies without positions: BM25 needs no more, and phrases are not searched (yet).
    builder.add_text_field(_WORDS, tokenizer_name=_TOKENIZER, index_option="freq")
    return builder.build()


class SegmentWords:
    """One segment's word index as one manifest sees it: opened on first search, its deleted rows skipped."""

    def __init__(self, folder: Path, deleted: np.ndarray):
        self.folder = folder
        self._deleted = deleted
        self._searcher = None
        self._schema = None

    def _open(self):
        if self._searcher is None:
            import tantivy

            index = tantivy.Index.open(str(self.folder))
            index.config_reader("Manual", 0)  # written once: no thread watching it for commits
            self._schema, self._searcher = index.schema, index.searcher()
        return self._searcher

    def search(self, terms: list[str], k: int, weights: dict[str, float] | None = None,
               admitted: np.ndarray | None = None, every: bool = False) -> list[tuple[int, float]]:
        """The `k` live rows best matching `terms` (analysed as a query's), by BM25: [(row id, score)].

        `every`: only rows holding all the terms; else any of them. `weights` scale each term's score (an
        index's inverse document frequency over all its segments, in place of this segment's: search/words.py).
        `admitted`: sorted row ids, the only ones returned (a filter, a kind of item)."""
        import tantivy

        terms = list(dict.fromkeys(t for t in terms if len(t) <= _LONGEST_TERM))
        if not terms or k <= 0:
            return []
        searcher = self._open()
        occur = tantivy.Occur.Must if every else tantivy.Occur.Should
        clauses = []
        for term in terms:
            clause = tantivy.Query.term_query(self._schema, _WORDS, term)
            weight = 1.0 if weights is None else weights.get(term, 1.0)
            clauses.append((occur, clause if weight == 1.0 else tantivy.Query.boost_query(clause, weight)))
        query = tantivy.Query.boolean_query(clauses)
        limit = k + min(len(self._deleted), 64)  # dropped rows are dropped after: ask for more, more again if short
        while True:
            hits = searcher.search(query, limit, count=False).hits
            row_ids = searcher.fast_field_values(_ROW_ID, [address for _, address in hits])
            found = [(int(row), float(score)) for (score, _), row in zip(hits, row_ids)]
            found = self._kept(found, admitted)
            if len(found) >= k or len(hits) < limit:
                return found[:k]
            limit *= 4

    def _kept(self, found: list[tuple[int, float]], admitted: np.ndarray | None) -> list[tuple[int, float]]:
        if not found or (admitted is None and not len(self._deleted)):
            return found
        rows = np.array([r for r, _ in found], np.int64)
        keep = ~np.isin(rows, self._deleted) if len(self._deleted) else np.ones(len(rows), bool)
        if admitted is not None:
            at = np.minimum(np.searchsorted(admitted, rows), max(len(admitted) - 1, 0))
            keep &= (admitted[at] == rows) if len(admitted) else False
        return [hit for hit, kept in zip(found, keep) if kept]

    def document_frequency(self, term: str) -> int:
        """Rows holding `term`, deleted ones included (as BM25 counts them here)."""
        return int(self._open().doc_freq(_WORDS, term)) if len(term) <= _LONGEST_TERM else 0

    def count(self) -> int:
        """Rows with words, deleted ones included."""
        return int(self._open().num_docs)
