"""xmodal: cross-modal vector search. Index image folders and text corpora into one CLIP space, then
find images from text, texts from images, and like from like.

    import xmodal
    xmodal.build_index("shop.idx", xmodal.IndexConfig(texts=["listings.csv"], text_column="description"))
    hits = xmodal.open_index("shop.idx").search(text="a red car", k=5)

`import xmodal` is cheap: the names below load their modules (and torch, faiss) when first used, so the
CLI answers `--version` or a bad option without loading a model.
"""
from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("xmodal")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

# name -> the module (relative to this package) that defines it
_PUBLIC = {
    "build_index": ".indexer", "IndexConfig": ".indexer", "IndexReport": ".indexer",
    "open_index": ".search", "SearchIndex": ".search", "Hit": ".search", "ImageURL": ".search", "Query": ".search",
    "list_items": ".indexer", "remove_items": ".indexer", "compact_index": ".indexer",
    "list_models": ".indexer.models", "evaluate": ".search", "transcribe": ".search", "Transcript": ".search",
    **{name: ".indexer.errors" for name in (
        "XmodalError", "InvalidInputError", "NoImagesError", "TextColumnError", "KeyColumnError",
        "EmptyCorpusError", "CorpusEncodingError", "UnknownModelError", "ModelUnavailableError",
        "NotAnIndexError", "IndexNotReadyError", "ModelMismatchError", "ImageURLError", "URLQueriesOffError",
        "ImageDecodeError", "IndexLockedError", "IndexWriteError", "ClusterError", "DecodeWorkerError",
        "AudioError", "VoiceUnavailableError", "VoiceOffError", "InferenceChoiceError",
        "TranslationUnavailableError")},
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module 'xmodal' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
