"""Query terms: what a search is made of, and how they combine.

A term is a text, an image (a file, an image URL, or a PIL image), a row id of an
indexed item, or a vector. Likes and dislikes are terms; so are the terms added to or subtracted
from a query (`add`/`subtract`), each with an optional weight, as in rclip:
q = normalise(query + sum(w * added) - sum(w * subtracted)).

An Example is a term embedded: one vector per part ("image", "text") for a
product, one vector for anything else, usable against either part.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from ..indexer.errors import InvalidInputError

from .fetch import ImageURL, is_url

Term = Union[int, str, Path, ImageURL, Image.Image, np.ndarray]
WeightedTerm = Union[Term, tuple[float, Term]]
WEIGHT_PREFIX = re.compile(r"^(\d+(?:\.\d*)?|\.\d+):(.*)$", re.S)  # "2:sunset", "0.5:photo.jpg"


@dataclass
class Example:
    vectors: dict[str, np.ndarray]  # part -> unit vector; "any" for a single-vector term
    row_id: int | None = None  # an indexed item: never returned as a hit
    weight: float = 1.0
    label: str = ""
    kind: str = "vector"  # what it was made from: "text", "image", "product", or "vector" (a bare embedding)

    def for_part(self, part: str) -> np.ndarray:
        """This example's vector for a part, or its other vector: one space holds both."""
        return self.vectors.get(part, next(iter(self.vectors.values())))


def parse_cli_term(raw: str) -> tuple[float, Term]:
    """`[W:]TERM` from the command line: digits are a row id, a URL an image to fetch, an existing file an
    image, the rest a text."""
    weight, term = split_weight_prefix(raw)
    if term.strip().isdigit():
        return weight, int(term)
    if is_url(term):
        return weight, ImageURL(term.strip())
    if os.path.isfile(os.path.expanduser(term)):
        return weight, Path(os.path.expanduser(term))
    return weight, term


def split_weight_prefix(raw: str) -> tuple[float, str]:
    """`W:TERM` -> (W, TERM); anything else has weight 1. A weight with nothing after it is refused: '2:' was
    searched as the text '2:'."""
    match = WEIGHT_PREFIX.match(raw)
    if not match:
        return 1.0, raw
    if not match.group(2).strip():
        raise InvalidInputError(f"the term {raw!r} has a weight but nothing to weigh; write WEIGHT:TERM, "
                                "e.g. 2:sunset")
    return float(match.group(1)), match.group(2)


def split_weight(term: WeightedTerm) -> tuple[float, Term]:
    if isinstance(term, tuple):
        if len(term) != 2 or not isinstance(term[0], (int, float)):
            raise InvalidInputError(f"a weighted term is a (weight, term) pair, not {term!r}")
        return float(term[0]), term[1]
    return 1.0, term


def combine(base: Example | None, added: list[Example], subtracted: list[Example]) -> Example | None:
    """The query algebra, part by part: normalise(base + sum(w * added) - sum(w * subtracted))."""
    if base is None and not added:
        if subtracted:
            raise InvalidInputError("subtracting terms needs something to subtract from: a query or an added term")
        return None
    if base is not None and not added and not subtracted:
        return base
    terms = ([base] if base else []) + added
    parts = sorted({p for e in terms + subtracted for p in e.vectors} - {"any"}) or ["any"]
    vectors = {}
    for part in parts:
        total = sum(e.weight * e.for_part(part) for e in terms) - sum(e.weight * e.for_part(part) for e in subtracted)
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise InvalidInputError("the added and subtracted terms cancel out; change their weights")
        vectors[part] = (total / norm).astype(np.float32)
    return Example(vectors, label="query", kind=_common_kind(terms + subtracted))


def _common_kind(examples: list[Example]) -> str:
    kinds = {e.kind for e in examples}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def describe(term: Any) -> str:
    if isinstance(term, ImageURL):
        return term.url
    if isinstance(term, np.ndarray):
        return f"a {term.shape[-1]}-d vector"
    if isinstance(term, Image.Image):
        return "an image"
    return repr(term) if isinstance(term, str) else str(term)


@dataclass
class QueryPlan:
    """What a search scores by: liked and disliked examples (the query counts as one more liked one),
    and the indexed items named anywhere in it, which are never hits."""

    liked: list[Example] = field(default_factory=list)
    disliked: list[Example] = field(default_factory=list)
    excluded: set[int] = field(default_factory=set)
    query: Example | None = None  # the text or image searched with, as given (no terms added or subtracted)

    @property
    def kind(self) -> str:
        """What the search is made of: "image" (photos only), "text" (texts only) or "mixed"; it picks the
        default weights of a product's parts (search/fusion.py)."""
        kinds = {e.kind for e in self.liked + self.disliked}
        return kinds.pop() if len(kinds) == 1 and kinds <= {"image", "text"} else "mixed"

    @property
    def plain_query(self) -> Example | None:
        """The query alone, when nothing else shapes the search: its cosines are the scores."""
        alone = len(self.liked) == 1 and self.liked[0] is self.query and not self.disliked
        return self.query if alone else None
