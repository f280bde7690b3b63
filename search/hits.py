"""Typed search results."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
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
    # the parts of its score: a product's photo and description (image, text); in a hybrid search its vector
    # score (a product's fusion of its parts) and its words' BM25 (words; 0: it holds none of them)
    scores: dict[str, float] | None = None
    key: str | None = None  # the row's key in its table's id column, where the table has one
    key_column: str | None = None  # that id column

    @property
    def reference(self) -> str:
        """How a later search names this item (--like, like=...): its key where it has one, else its row id.
        A key outlives a re-indexed table; a row id names another product once its row is gone."""
        return f"{self.key_column}:{self.key}" if self.key is not None and self.key_column else str(self.row_id)

    def to_dict(self) -> dict[str, Any]:
        """Its fields as a JSON-ready dict, with `reference`. Its dicts are copied (a caller may edit them
        without touching the hit), their values not: copying each value deeply, as dataclasses.asdict does,
        was a fifth of the service's time per request."""
        out = {f.name: getattr(self, f.name) for f in _FIELDS}
        out["metadata"] = dict(self.metadata) if self.metadata is not None else None
        out["scores"] = dict(self.scores) if self.scores is not None else None
        out["reference"] = self.reference
        return out


_FIELDS = fields(Hit)


class Hits(list):
    """The hits of one search, best first; for a spoken query, `transcript` is what was heard (search.voice);
    `language` is the query's (heard, or by its script; None: not known) and `translation`
    the English searched in its place (search.translate), or None; `mode` how its text was matched (hybrid,
    vector or lexical)."""

    def __init__(self, hits=(), transcript=None, language=None, translation=None, mode="vector"):
        super().__init__(hits)
        self.mode = mode
        self.transcript = transcript
        self.language = language
        self.translation = translation
