"""Exceptions raised by xmodal's library code.

Every message is one line that names the problem and what to do about it; the
CLI prints it as-is and exits non-zero. Nothing here prints or exits.
"""


class XmodalError(Exception):
    """Base class: anything xmodal expects and can explain to a user."""


class InvalidInputError(XmodalError, ValueError):
    """An argument or input file the user gave cannot be used."""


class NoImagesError(InvalidInputError):
    """An image folder holds no supported image files."""


class TextColumnError(InvalidInputError):
    """A text corpus lacks the column named as its text column."""


class UnknownModelError(XmodalError, ValueError):
    """A model spec or weights tag names nothing xmodal can build."""


class ModelUnavailableError(XmodalError, RuntimeError):
    """The model exists, but its weights cannot be had here (no cache, no network)."""


class NotAnIndexError(XmodalError):
    """A directory is not an xmodal index (or is from an unsupported format)."""


class ModelMismatchError(XmodalError):
    """A query or update uses a different model from the one that built the index."""


class ImageDecodeError(XmodalError):
    """An image file cannot be decoded; the message is the reason recorded for it."""


class IndexLockedError(XmodalError):
    """Another process is writing to the same index."""


class IndexWriteError(XmodalError):
    """Writing a new generation failed (disk full, permissions); the last committed index is intact."""
