"""Reading sources: image files under folders, and text corpora (txt, csv, tsv, jsonl, parquet).

One room per job, and this face over them (the builder imports only what is here):

- `folders`: walking photo folders;
- `formats`: reading tables, each format as rows (a new table format goes there);
- `columns`: typing columns: missing cells, numbers, types set or inferred;
- `photos`: resolving a row's photo cell (a new kind of photo cell goes there); `photo_urls`: fetching the
  cells that are URLs into the index's cache;
- `keys`: an id column's keys; `parquet`: plain Parquet files read as columns;
- `corpus` and `records`: a corpus read (or streamed) into records and skipped rows.
"""
from .columns import (COLUMN_TYPES, DEFAULT_NA_VALUES, ColumnInfo, ColumnTyping, check_column_types, check_decimal,
                      na_values_argument, parse_column_types, parse_na_values)
from .corpus import PreparedCorpus, empty_corpus_error, prepare_corpus, read_corpus, read_texts, stream_corpus
from .folders import FolderWalk, find_images, list_images, no_images_error, walk_images
from .formats import DEFAULT_ENCODING, DEFAULT_TEXT_COLUMN, TEXT_FORMATS, Dialect, check_corpus, check_delimiter
from .keys import key_text
from .photo_urls import URLCounts, URLFetching, drop_other_tables, fetch_photo_urls
from .photos import PhotoCell, resolve_photo
from .records import Corpus, SkippedRow, TextBatch, TextRecord

__all__ = ["COLUMN_TYPES", "DEFAULT_ENCODING", "DEFAULT_NA_VALUES", "DEFAULT_TEXT_COLUMN", "TEXT_FORMATS",
           "ColumnInfo", "ColumnTyping", "Corpus", "Dialect", "FolderWalk", "PhotoCell", "PreparedCorpus",
           "SkippedRow", "TextBatch", "TextRecord", "URLCounts", "URLFetching", "check_column_types",
           "check_corpus", "check_decimal", "check_delimiter", "drop_other_tables", "empty_corpus_error",
           "fetch_photo_urls", "find_images", "key_text", "list_images", "na_values_argument", "no_images_error",
           "parse_column_types", "parse_na_values", "prepare_corpus", "read_corpus", "read_texts",
           "resolve_photo", "stream_corpus", "walk_images"]
