"""Storage of an index: the directory layout, the manifest, and the Parquet tables."""
from .ann import INDEX_TYPES, SearchResult, VectorIndex
from .layout import IndexDir
from .manifest import MODALITIES, SETS_OF, VECTOR_SETS, AnnSpec, Manifest
from .segments import VECTOR_DTYPES, SegmentReader
from .tables import Failure, ItemRow, concat_items, read_failures
from .words import SegmentWords

__all__ = ["AnnSpec", "Failure", "INDEX_TYPES", "IndexDir", "ItemRow", "MODALITIES", "Manifest", "SETS_OF",
           "SearchResult", "SegmentReader", "SegmentWords", "VECTOR_DTYPES", "VECTOR_SETS", "VectorIndex", "concat_items", "read_failures"]
