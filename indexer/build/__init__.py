"""Building an index: sources -> decoding -> encoder -> store, resumable and incremental; and editing one.

This face is what the rest of xmodal uses; the modules behind it are the builder's own.
"""
from .edit import compact_index, list_items, remove_items
from .encode_files import encode_image_files
from .pipeline import IndexConfig, IndexReport, build_index
from .sources import COLUMN_TYPES, DEFAULT_NA_VALUES, find_images, na_values_argument, read_texts

__all__ = ["COLUMN_TYPES", "DEFAULT_NA_VALUES", "IndexConfig", "IndexReport", "build_index", "compact_index",
           "encode_image_files", "find_images", "list_items", "na_values_argument", "read_texts", "remove_items"]
