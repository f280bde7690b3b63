"""Storage of an index: the directory layout, the manifest, and the Parquet tables."""
from .layout import IndexDir
from .manifest import MODALITIES, SETS_OF, VECTOR_SETS, AnnSpec, Manifest
from .tables import Failure, ItemRow

__all__ = ["AnnSpec", "Failure", "IndexDir", "ItemRow", "MODALITIES", "Manifest", "SETS_OF", "VECTOR_SETS"]
