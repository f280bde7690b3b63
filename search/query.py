"""One search request, spelled once: the CLI builds it from its options, the service from JSON (its request
model is generated from these fields), and the API takes it (or the same fields as keywords).

Checked in one place (`Query.checked`), before any model loads or any image is read.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from numbers import Real
from pathlib import Path
from typing import Sequence, Union

import numpy as np
from PIL import Image

from ..indexer.errors import InvalidInputError, option
from ..indexer.store import MODALITIES
from .examples import Term, WeightedTerm
from .fetch import ImageURL
from .fusion import DEFAULT_FUSION, FUSIONS
from .hybrid import DEFAULT_FUSION as DEFAULT_WORD_FUSION, FUSIONS as WORD_FUSIONS, MODES, check_mode, check_word_weight
from .recommend import DEFAULT_STRATEGY, STRATEGIES, check_strategy
from .voice import AudioInput

TARGETS = MODALITIES
TRANSLATIONS = ("auto", "off", "speech")
QueryImage = Union[str, Path, ImageURL, Image.Image]


def _doc(text: str, **kwargs):
    return field(metadata={"doc": text}, **kwargs)


@dataclass(frozen=True)
class Query:
    """What to search for, how much of it, and which items may be hits."""

    text: str | None = _doc("The query text.", default=None)
    image: QueryImage | None = _doc("A query image: a path, an http(s) URL or a PIL image.", default=None)
    audio: AudioInput | None = _doc("A spoken query: an audio file's path or bytes, or 16 kHz mono samples; "
                                    "heard, then searched as the text heard.", default=None)
    language: str | None = _doc("The query's language: for a spoken one a Whisper code (en, zh, ...; default: as "
                                "heard); for a typed one, what Latin letters are (default: told by the script, "
                                "xmodal.indexer.models.languages).", default=None)
    translate: str | bool = _doc(f"Where the index's model reads English alone, a query in another language is "
                                 f"turned into English: {', '.join(TRANSLATIONS)} (auto: Chinese by dictionary; "
                                 f"off: searched as typed or heard; speech: Whisper translates the spoken query; "
                                 f"true is speech, false off).", default="auto")
    like: Sequence[Term] = _doc("Liked examples: row ids, references (sku:ABC), texts, images or vectors.",
                                default=())
    dislike: Sequence[Term] = _doc("Disliked examples, likewise.", default=())
    add: Sequence[WeightedTerm] = _doc("Terms added to the query, each optionally weighted: (2.0, 'red').",
                                       default=())
    subtract: Sequence[WeightedTerm] = _doc("Terms subtracted from the query, likewise.", default=())
    where: str | None = _doc("A metadata filter, e.g. price < 20000 and colour == 'red'.", default=None)
    target: str | None = _doc("image, text or product (default: products if the index holds any, else images, "
                              "else texts).", default=None)
    k: int = _doc("How many hits.", default=10)
    weights: dict[str, float] | None = _doc("Products: the weight of each part, {'image': W, 'text': W} "
                                            "(default: by what the query is).", default=None)
    fusion: str = _doc(f"Products: how the parts' scores are fused ({', '.join(FUSIONS)}).", default=DEFAULT_FUSION)
    strategy: str = _doc(f"How examples are combined ({', '.join(STRATEGIES)}).", default=DEFAULT_STRATEGY)
    dedup: bool = _doc("Collapse near-duplicate hits into the best-ranked one.", default=False)
    mode: str | None = _doc(f"How a text query is matched: {', '.join(MODES)} (hybrid: its words and its meaning, "
                            "fused; vector: its meaning alone; lexical: the items holding each of its words, by BM25; "
                            "default: hybrid where the index has a word index, else vector).", default=None)
    word_weight: float | None = _doc("Hybrid: the words' share of the fused score, 0 to 1 (default: by the kind of "
                                     "query, search.hybrid.WORD_WEIGHTS).", default=None)
    word_fusion: str = _doc(f"Hybrid: how the word and vector rankings fuse ({', '.join(WORD_FUSIONS)}; relative: "
                            "scores scaled to 0..1 and weighted; rrf: reciprocal ranks).", default=DEFAULT_WORD_FUSION)

    def checked(self) -> Query:
        """This query with its weights filled in, or InvalidInputError naming what is wrong and how to fix it."""
        check_k(self.k)
        if self.audio is not None and (self.text is not None or self.image is not None):
            other = "a text" if self.text is not None else "an image"
            raise InvalidInputError(f"give one query: spoken ({option('audio')}) or {other}, not both")
        if self.target is not None:
            check_target(self.target)
        check_strategy(self.strategy)
        check_mode(self.mode)
        check_word_weight(self.word_weight)
        if self.word_fusion not in WORD_FUSIONS:
            raise InvalidInputError(f"unknown {option('word_fusion')} {self.word_fusion!r}; use one of {', '.join(WORD_FUSIONS)}")
        translate = self.translate
        if isinstance(translate, bool):  # the switch it was: true has Whisper translate
            translate = "speech" if translate else "off"
        if translate not in TRANSLATIONS:
            raise InvalidInputError(f"unknown {option('translate')} {self.translate!r}; use one of {', '.join(TRANSLATIONS)}")
        if self.fusion not in FUSIONS:
            raise InvalidInputError(f"unknown fusion {self.fusion!r}; use one of {', '.join(FUSIONS)}")
        return replace(self, weights=_checked_weights(self.weights, self.target), translate=translate)

    def resolved(self, default_target: str) -> Query:
        """Checked, with the index's default target where none was asked for."""
        return replace(self, target=self.target or default_target).checked()

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("doc", "") for f in fields(cls)}


def check_k(k: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise InvalidInputError(f"{option('k')} must be a whole number of at least 1 (got {k!r})")


def check_target(target: str) -> None:
    if target not in TARGETS:
        raise InvalidInputError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")


def _checked_weights(weights: dict[str, float] | None, target: str | None) -> dict[str, float] | None:
    """The weights asked for, checked; None: the defaults of the query's kind."""
    if weights is None:
        return None
    unknown = sorted(set(weights) - {"image", "text"})
    if unknown:
        raise InvalidInputError(f"unknown part {unknown[0]!r} in the weights; use image=W,text=W")
    if any(not isinstance(w, Real) or isinstance(w, bool) or not np.isfinite(w) or w < 0 for w in weights.values()):
        raise InvalidInputError("weights must be numbers of at least 0, e.g. image=0.7,text=0.3")
    if target == "product" and sum(weights.get(p, 0.0) for p in ("image", "text")) <= 0:
        raise InvalidInputError("the weights sum to zero; give a part a weight, e.g. image=1,text=0")
    return {"image": float(weights.get("image", 0.0)), "text": float(weights.get("text", 0.0))}
