"""xmodal's offline indexer: image folders and text corpora -> one CLIP space -> FAISS + Parquet.

Importing this package is cheap: torch, open_clip and faiss load only when used.
"""
from .errors import (
    EmptyCorpusError, ImageDecodeError, InvalidInputError, ModelMismatchError, ModelUnavailableError,
    NoImagesError, NotAnIndexError, TextColumnError, UnknownModelError, XmodalError,
)
from .pipeline import IndexConfig, IndexReport, build_index

__all__ = [
    "EmptyCorpusError", "ImageDecodeError", "IndexConfig", "IndexReport", "InvalidInputError",
    "ModelMismatchError", "ModelUnavailableError", "NoImagesError", "NotAnIndexError", "TextColumnError",
    "UnknownModelError", "XmodalError", "build_index",
]
