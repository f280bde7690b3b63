"""Near-duplicates: copies of one photo (resized, re-compressed, lightly cropped), the same text twice.

Two items are duplicates when they are near in the model's space (cosine at least
`threshold`, among each other's nearest neighbours) and their content matches:
photos pixel for pixel once aligned, in the same colours and contrast (search/pixels.py), texts once case, spacing
and punctuation are set aside. A model alone cannot tell a copy from another photo
of the same kind of thing; the content check can. Thresholds were measured
(bench/bench_duplicates.py; docs/duplicates.md).

Groups are connected components over the duplicate pairs. Each keeps one member:
the largest file, then the one with the most metadata, then the lowest row id.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..indexer.errors import InvalidInputError
from ..indexer.imaging import DEFAULT_BACKGROUND, load_image

from .pixels import SAME_PHOTO, PixelSignature, compare, signature

DEFAULT_THRESHOLD = {"image": 0.5, "text": 0.9}  # the content check decides; the model only proposes pairs
NEIGHBOURS = 32


@dataclass
class DuplicateGroup:
    keep: int
    items: list[int]  # row ids, the kept one first, the others by row id
    min_score: float  # the lowest cosine among the pairs that joined the group

    def to_dict(self) -> dict:
        return {"keep": self.keep, "items": self.items, "min_score": round(self.min_score, 6)}


def normalised_text(text: str) -> str:
    """Case, accents' composition, spacing and punctuation set aside."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


class ContentCheck:
    """Whether two items' contents match: photos read (once each) and compared, texts normalised.

    Transparent photos are compared as shown, laid on `background`: a cutout whose hidden half holds the rest of
    the photo is not a copy of the whole photo."""

    def __init__(self, item: Callable[[int], dict], pixels: float = SAME_PHOTO, background: str = DEFAULT_BACKGROUND):
        self._item, self._pixels, self._background = item, pixels, background
        self._signatures: dict[int, PixelSignature | None] = {}

    def same(self, a: int, b: int) -> bool:
        first, second = self._item(a), self._item(b)
        if first["modality"] == "text":
            return normalised_text(first["text"]) == normalised_text(second["text"])
        same_photo = self._same_photo(a, first, b, second)
        if first["modality"] == "product":  # a listing twice: the same photo (or none) and the same text
            return same_photo and normalised_text(first["text"]) == normalised_text(second["text"])
        return same_photo

    def _same_photo(self, a: int, first: dict, b: int, second: dict) -> bool:
        if first.get("path") is None and second.get("path") is None:
            return True
        if self._pixels <= 0:
            return True  # asked to trust the model alone
        left, right = self._signature(a, first), self._signature(b, second)
        return left is not None and right is not None and compare(left, right).same_photo(self._pixels)

    def _signature(self, row_id: int, item: dict) -> PixelSignature | None:
        if row_id not in self._signatures:
            try:
                self._signatures[row_id] = signature(load_image(item["path"], background=self._background)) \
                    if item.get("path") else None
            except Exception:  # a file gone or changed since indexing: it cannot be shown to be a copy
                self._signatures[row_id] = None
        return self._signatures[row_id]


def group_duplicates(row_ids: np.ndarray, pairs: list[tuple[int, int, float]], keep_key: Callable[[int], tuple]
                     ) -> list[DuplicateGroup]:
    """Connected components of the duplicate pairs, each with the member to keep."""
    parent = {int(r): int(r) for r in row_ids}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    lowest: dict[int, float] = {}
    for a, b, score in pairs:
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            parent[root_a] = root_b
            lowest[root_b] = min(score, lowest.pop(root_a, 1.0), lowest.get(root_b, 1.0))
        else:
            lowest[root_a] = min(score, lowest.get(root_a, 1.0))
    members: dict[int, list[int]] = {}
    for row_id in parent:
        members.setdefault(find(row_id), []).append(row_id)
    groups = []
    for root, items in members.items():
        if len(items) < 2:
            continue
        keep = min(items, key=keep_key)
        groups.append(DuplicateGroup(keep, [keep] + sorted(i for i in items if i != keep), lowest.get(root, 1.0)))
    return sorted(groups, key=lambda g: g.items)


def check_threshold(threshold: float) -> None:
    if not -1.0 <= threshold <= 1.0:
        raise InvalidInputError(f"a duplicate threshold is a cosine similarity between -1 and 1 (got {threshold})")
