"""Typed search results."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Hit:
    """One result, best first by `rank` (1-based); `score` is cosine similarity in [-1, 1]."""

    rank: int
    score: float
    row_id: int
    modality: str
    path: str | None = None
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float] | None = None  # products: the score of each part it has (image, text)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
