"""xmodal's offline indexer: image folders and text corpora -> one CLIP space -> FAISS + Parquet.

Layers, each importing only those below it (tests/test_packaging.py holds them):
errors <- imaging, models/ (encoders) <- store/ (the index on disk, the ANN) <- build/ (the builder).
This face is what search/ and the CLI use. Importing it is cheap: torch, open_clip and faiss load when used.
"""
from .build import IndexConfig, IndexReport, build_index, compact_index, list_items, remove_items
from .errors import (
    CLI,
    EmptyCorpusError, ImageDecodeError, InvalidInputError, ModelMismatchError, ModelUnavailableError,
    NoImagesError, NotAnIndexError, TextColumnError, UnknownModelError, XmodalError, one_of,
)
from .build import COLUMN_TYPES
from .imaging import DECODE_MODES, MAX_PIXELS, describe_background
from .models import AUTO, DEFAULT_MODEL, DEVICES, PRECISIONS, RUNTIMES, accepted_ways, describe_calibration, list_models, \
    recorded_table
from .store import INDEX_TYPES, VECTOR_DTYPES, IndexDir

__all__ = [
    "AUTO", "CLI", "COLUMN_TYPES", "DECODE_MODES", "DEFAULT_MODEL", "DEVICES", "MAX_PIXELS", "PRECISIONS", "RUNTIMES",
    "VECTOR_DTYPES",
    "EmptyCorpusError", "INDEX_TYPES", "ImageDecodeError", "IndexConfig", "IndexDir", "IndexReport",
    "InvalidInputError", "ModelMismatchError", "ModelUnavailableError", "NoImagesError", "NotAnIndexError",
    "TextColumnError", "UnknownModelError", "XmodalError", "build_index", "compact_index", "describe_background",
    "list_items", "list_models", "one_of", "remove_items", "accepted_ways", "describe_calibration", "recorded_table",
]
