"""The manifest: what an index holds and which model built it. Written last, atomically."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..models.base import ModelIdentity

FORMAT_NAME = "xmodal-index"
FORMAT_VERSION = 3  # 2: sources are a list with per-source options; items carry their corpus line
# 3: segments with deletion records, vectors as raw .npy files
METRIC = "cosine"  # inner product over L2-normalised vectors
MODALITIES = ("image", "text", "product")
# A product (a table row with a photo) holds two vectors; every other item one. Files and ANN indexes are
# per vector set: embeddings-<set>.parquet and <set>.faiss.
VECTOR_SETS = ("image", "text", "product-image", "product-text")
SETS_OF = {"image": ("image",), "text": ("text",), "product": ("product-image", "product-text")}


@dataclass(frozen=True)
class AnnSpec:
    """Which FAISS index serves one modality, and its search-time knobs."""

    kind: str  # "flat" | "hnsw" | "ivf"
    params: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    """One source an index keeps in sync: an image folder, or a text corpus with its reading options."""

    kind: str  # "images" | "texts"
    path: str  # absolute
    text_column: str | None = None
    encoding: str | None = None
    image_column: str | None = None  # a table whose rows link a photo: each row is one product
    fingerprint: str | None = None  # a corpus's "size:mtime_ns" when last read: unchanged ones are not read again
    na_values: tuple[str, ...] | None = None  # cells that mean missing; None: the default markers
    column_types: dict[str, str] | None = None  # columns whose type is set, not inferred: {"price": "float"}
    columns: list[dict[str, Any]] | None = None  # what the last read found of each column (sources.ColumnInfo)
    id_column: str | None = None  # a table's column of keys: a row is the same item exactly when its key is
    delimiter: str | None = None  # a CSV or TSV table's, as given; None: a CSV file's is sniffed, a TSV's is tab
    decimal: str | None = None  # the decimal mark of its numbers, as given; None: as the table shows (sources)

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.path

    @property
    def as_read(self) -> "Source":
        """The source as named: without what reading it found (its fingerprint and columns)."""
        return replace(self, fingerprint=None, columns=None)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        if self.na_values is not None:
            data["na_values"] = list(self.na_values)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Source":
        source = cls(**data)
        return replace(source, na_values=tuple(source.na_values)) if source.na_values is not None else source


@dataclass(frozen=True)
class SegmentSet:
    """One vector set inside a segment: how many vectors, stored how, searched with what."""

    count: int
    ann: AnnSpec
    dtype: str = "float32"


@dataclass(frozen=True)
class SegmentRef:
    """What a manifest records of a segment: enough to open it, and to decide when to compact it."""

    name: str
    rows: int
    sets: dict[str, SegmentSet] = field(default_factory=dict)
    deleted: str | None = None  # the segment's current deletion file (cumulative), if any row was deleted
    deleted_count: int = 0
    legacy: bool = False  # a format-2 generation folder read as a segment
    words: str | None = None  # the folder of its word index (store/words.py); None: written before words

    @property
    def live(self) -> int:
        return self.rows - self.deleted_count

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["sets"] = {name: {"count": s.count, "ann": asdict(s.ann), "dtype": s.dtype} for name, s in self.sets.items()}
        return {k: v for k, v in data.items() if v not in (None, False)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SegmentRef":
        sets = {name: SegmentSet(int(s["count"]), AnnSpec(s["ann"]["kind"], dict(s["ann"].get("params") or {})),
                                 s.get("dtype", "float32")) for name, s in (data.get("sets") or {}).items()}
        return cls(data["name"], int(data["rows"]), sets, data.get("deleted"), int(data.get("deleted_count", 0)),
                   bool(data.get("legacy", False)), data.get("words"))


def _sources_from(data: dict[str, Any]) -> list[Source]:
    recorded = data.get("sources") or []
    if isinstance(recorded, dict):  # format 1: {"images": [...], "texts": [...]}, one text column for all
        settings = data.get("settings") or {}
        return [Source("images", p) for p in recorded.get("images", [])] + [
            Source("texts", p, settings.get("text_column")) for p in recorded.get("texts", [])]
    return [Source.from_dict(s) for s in recorded]


@dataclass
class Manifest:
    generation: str
    model: ModelIdentity
    counts: dict[str, int]
    failures: int
    ann: dict[str, AnnSpec]
    next_row_id: int
    created_at: str
    updated_at: str
    sources: list[Source] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)  # index_type: re-used by re-runs
    last_run: dict[str, Any] = field(default_factory=dict)
    segments: list[SegmentRef] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)  # the ways measured to choose the model's (calibrate.py)
    metric: str = METRIC
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    @property
    def is_legacy(self) -> bool:
        """Written by format 2 or older: one generation folder holds everything."""
        return any(s.legacy for s in self.segments)

    @property
    def background(self) -> str | None:
        """What its transparent photos are laid on ("#rrggbb"); None: built before backgrounds were recorded,
        when alpha was dropped."""
        return self.settings.get("background")

    def to_json(self) -> str:
        data = asdict(self)
        data["model"] = self.model.to_dict()
        data["sources"] = [s.to_dict() for s in self.sources]
        data["segments"] = [s.to_dict() for s in self.segments]
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        counts = {m: int(data["counts"].get(m, 0)) for m in MODALITIES}
        ann = {m: AnnSpec(a["kind"], dict(a.get("params") or {})) for m, a in data["ann"].items()}
        if int(data["format_version"]) < 3:  # the generation folder itself is the one segment
            segments = [SegmentRef(data["generation"], sum(counts.values()),
                                   {s: SegmentSet(-1, spec) for s, spec in ann.items()}, legacy=True)]
        else:
            segments = [SegmentRef.from_dict(s) for s in data.get("segments") or []]
        return cls(
            generation=data["generation"],
            model=ModelIdentity.from_dict(data["model"]),
            counts=counts,
            failures=int(data["failures"]),
            ann=ann,
            segments=segments,
            next_row_id=int(data["next_row_id"]),
            created_at=data["created_at"],
            updated_at=data["updated_at"],
            sources=_sources_from(data),
            settings=dict(data.get("settings") or {}),
            last_run=dict(data.get("last_run") or {}),
            calibration=dict(data.get("calibration") or {}),
            metric=data.get("metric", METRIC),
            format=data["format"],
            format_version=int(data["format_version"]),  # as read; a commit writes the current format
        )
