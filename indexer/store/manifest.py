"""The manifest: what an index holds and which model built it. Written last, atomically."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from ..models.base import ModelIdentity

FORMAT_NAME = "xmodal-index"
FORMAT_VERSION = 1
METRIC = "cosine"  # inner product over L2-normalised vectors
MODALITIES = ("image", "text")


@dataclass(frozen=True)
class AnnSpec:
    """Which FAISS index serves one modality, and its search-time knobs."""

    kind: str  # "flat" | "hnsw" | "ivf"
    params: dict[str, int] = field(default_factory=dict)


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
    sources: dict[str, list[str]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # text_column, index_type: re-used by re-runs
    last_run: dict[str, Any] = field(default_factory=dict)
    metric: str = METRIC
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        data["model"] = self.model.to_dict()
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Manifest":
        return cls(
            generation=data["generation"],
            model=ModelIdentity.from_dict(data["model"]),
            counts={m: int(data["counts"].get(m, 0)) for m in MODALITIES},
            failures=int(data["failures"]),
            ann={m: AnnSpec(a["kind"], dict(a.get("params") or {})) for m, a in data["ann"].items()},
            next_row_id=int(data["next_row_id"]),
            created_at=data["created_at"],
            updated_at=data["updated_at"],
            sources=dict(data.get("sources") or {}),
            settings=dict(data.get("settings") or {}),
            last_run=dict(data.get("last_run") or {}),
            metric=data.get("metric", METRIC),
            format=data["format"],
            format_version=int(data["format_version"]),
        )
