"""The query engine: encoder -> ANN index -> item store -> typed hits.

Open once, query many times: the model loads on the first query that needs it.
Everything is opened when the index is: items files are opened (a hit's row is
read when needed, search/items.py), vectors and FAISS indexes memory-mapped, so an
open index keeps answering even after later commits have collected its segments.

A search is a plan of liked and disliked examples (a text or image query, likes,
dislikes, the query algebra's terms), scored per part with a strategy
(search/recommend.py), among the items a filter admits (search/filters.py);
products fuse their photo and description scores (search/fusion.py).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
from PIL import Image

from ..indexer import words as analyser
from ..indexer.errors import PYTHON, ImageDecodeError, Wording, InvalidInputError, ModelMismatchError, command, option
from ..indexer.imaging import DEFAULT_BACKGROUND, flatten, load_image
from ..indexer.models import UNREAD_SHARE, Encoder, script_language, check_parity, encode_images, image_input_side, load_encoder_for, \
    recorded_table
from ..indexer.build import DEFAULT_NA_VALUES
from ..indexer.store import SETS_OF, IndexDir, Manifest, SegmentReader, read_failures

from .duplicates import DEFAULT_THRESHOLD, NEIGHBOURS, ContentCheck, DuplicateGroup, check_threshold, group_duplicates
from .examples import Example, QueryPlan, WeightedTerm, combine, describe, split_weight
from .fetch import ImageURL, fetch_image, is_url
from .filters import BUILT_IN_COLUMNS, Filter, TextCause, parse_filter
from .fusion import DEFAULT_FUSION, default_weights, fuse, identical_to_query
from .hits import Hit, Hits
from .hybrid import DEFAULT_FUSION as DEFAULT_WORD_FUSION, DEPTH, WORD_WEIGHTS, WordQuery, check_mode, fuse_words, query_kind
from .items import ItemStore
from .pixels import SAME_PHOTO
from .placement import SearchPlacement, choose_placement
from .query import TARGETS, Query, QueryImage, check_k, check_target
from .recommend import DEFAULT_STRATEGY, PartQuery
from .vectors import StoredVectors, VectorPart
from .words import WordIndex
from .understanding import Understood, language_note, understand
from .voice import (MAX_AUDIO_SECONDS, OFFLINE, AudioInput, SpeechRecognizer, Transcript, catalog_script,
                    recognizer, simplified)

PARTS = {"image": ("image",), "text": ("text",), "product": ("image", "text")}
EXACT_SUBSET = 20_000  # a filtered or strategy search over at most this many items scores them all exactly
PROBE_DEPTH = 1_000  # above that, each probe of the ANN index brings this many candidates (at least 10 k)
FILTER_CACHE = 64  # filters whose admitted row ids an open index remembers


@dataclass(frozen=True)
class Ranked:
    row_id: int
    score: float
    parts: dict[str, float] | None = None
    first: bool = False  # ranked before all others whatever its score: its photo or description is the query


class SearchIndex:
    def __init__(self, index_dir: IndexDir, manifest: Manifest, device: str | None = None,
                 encoder: Encoder | None = None, speech: SpeechRecognizer | None = None,
                 runtime: str | None = None, precision: str | None = None):
        self._dir = index_dir
        self._way = (runtime, precision)  # None: the way the index records (models.inference)
        self.speech = speech  # None: the offline Whisper base, loaded at the first spoken query
        self.max_audio_seconds = MAX_AUDIO_SECONDS
        self._script: str | None = None
        self.manifest = manifest
        self._device = device
        self._generation = index_dir.generation_path(manifest.generation)
        segments, parts = [SegmentReader(index_dir.root, ref) for ref in manifest.segments], {}
        for segment, ref in zip(segments, manifest.segments):
            deleted = segment.deleted()
            for vector_set in ref.sets:
                row_ids, matrix = segment.vectors(vector_set)
                live = ~np.isin(row_ids, deleted) if len(deleted) else None
                parts.setdefault(vector_set, []).append(VectorPart(row_ids, matrix, live, segment.ann(vector_set)))
        self._items = ItemStore(segments)
        self._words = WordIndex([segment.words() for segment in segments])
        self._languages: dict[str | None, float] = {}  # a language: the share of the texts written in it
        self._ids_by_modality: dict[str, np.ndarray] = {}
        self._sets = {vector_set: StoredVectors(found) for vector_set, found in parts.items()}
        self._failures = read_failures(self._generation / "failures.parquet")
        self._filter_tables: dict[str, pa.Table] = {}
        self._admitted_cache: dict[tuple[str, str], np.ndarray] = {}  # the same filter again costs nothing
        self._encoder: Encoder | None = None
        self._placement: SearchPlacement | None = None
        if encoder is not None:
            self._check_model(encoder)
            self._encoder = encoder

    @property
    def path(self) -> Path:
        return self._dir.root

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = load_encoder_for(self.manifest.model, self._device, *self._way,
                                             calibration=self.manifest.calibration)
            self._check_model(self._encoder)
        return self._encoder

    @property
    def loaded_encoder(self) -> Encoder | None:
        """The query encoder if a query has loaded it; None before (loading it costs seconds)."""
        return self._encoder

    def __len__(self) -> int:
        return len(self._items)

    # ---- searching ---------------------------------------------------------------------------------------

    def search(self, query: Query | str | None = None, image: QueryImage | None = None, **fields: Any) -> list[Hit]:
        """Hits for a query, best first: a `Query`, or its fields as keywords (`search("a red car", k=5,
        target="product", where="price < 20000")`); see `Query` for each field.

        The query is a text or an image (a path, an http(s) URL, or a PIL image), and/or liked
        examples; disliked examples, terms to add or subtract, and a metadata filter refine it.
        Examples are texts, images (Paths, ImageURLs or PIL images), row ids of indexed items,
        references (sku:ABC) or vectors; a row id named anywhere is never a hit. With `dedup`,
        near-duplicate hits (copies of one photo, the same text twice) collapse into the best-ranked
        one, and k distinct hits come back where the index holds them. Products: `weights` of the
        photo and description parts (None: by what the query is, search.fusion.DEFAULT_WEIGHTS).
        """
        query = self.checked(_as_query(query, image, fields))
        transcript = None
        if query.audio is not None:  # heard, then searched exactly as that text
            transcript = self.hear(query.audio, query.language, query.translate == "speech")
        return self.search_heard(query, transcript)

    def search_heard(self, query: Query, transcript: Transcript | None = None) -> Hits:
        """`search` for a checked query whose recording, if any, `transcript` heard already (the service hears
        outside its search slots): searched as that text, its words both as heard and in English."""
        allowed = self._admitted(query.target, query.where)
        if transcript is not None:
            query = replace(query, text=transcript.text, audio=None)
        understood = self.understood(query, transcript)
        words = self._word_query(query, understood)
        query = understood.query
        lexical = words is not None and words.mode == "lexical"  # words alone: nothing to embed, no model to load
        plan = QueryPlan() if lexical else self._plan(query.text, query.image, query.like, query.dislike, query.add,
                                                      query.subtract, query.strategy)

        def ranked_to(depth: int) -> list[Ranked]:
            return self._rank(query.target, plan, query.strategy, allowed, depth, query.weights, query.fusion, words)

        ranked = self._distinct(query.target, ranked_to, query.k) if query.dedup else ranked_to(query.k)
        return Hits(self._hits([ranked])[0], transcript, understood.language, understood.translation,
                    words.mode if words is not None else "vector")

    @property
    def has_words(self) -> bool:
        """Whether the index has a word index over all its rows (xmodal index writes one; older indexes get it
        on their next run): what hybrid and lexical searches need."""
        return self._words.exists

    def _word_query(self, query: Query, understood: Understood) -> WordQuery | None:
        """What a search asks of the words (None: vectors alone): the terms of the query as typed or heard,
        and of its English where it was translated."""
        if (query.mode or "hybrid") == "lexical":
            _check_lexical(query)
        translation = [understood.translation.text] if understood.translation else []
        language = understood.language
        unread = (language is not None and not self.manifest.model.reads_language(language)
                  and self._texts_share(language) >= UNREAD_SHARE)
        return self._words_for(query.text, translation, query.mode, query.word_weight, query.word_fusion, unread)

    def _texts_share(self, language: str | None) -> float:
        """The share of a sample of the index's texts written in `language` (by script)."""
        if language not in self._languages:
            texts = self._items.sample_texts()
            self._languages[language] = sum(script_language(t) == language for t in texts) / max(len(texts), 1)
        return self._languages[language]

    def _words_for(self, text: str | None, translations: Sequence[str], mode: str | None, weight: float | None = None,
                   fusion: str = DEFAULT_WORD_FUSION, unread: bool = False) -> WordQuery | None:
        """What searching `text` asks of the words (None: vectors alone), with the terms of its translations.
        `unread`: the query and many of the index's texts are in a language the model does not read, so its
        vectors can hardly match them; its words can."""
        mode = mode or ("hybrid" if self.has_words else "vector")
        if mode == "vector":
            return None
        if not self.has_words:
            raise InvalidInputError(f"{self.path} has no word index over all its rows ({self._words.missing} of its "
                                    f"{len(self.manifest.segments)} segments were written before xmodal kept words); "
                                    f"run {command('index')} on it again to add one, or search with "
                                    f"{option('mode', 'vector')}")
        if text is None:
            return None  # an image, or examples alone: nothing to find as words
        said = tuple(tuple(analyser.query_terms(each)) for each in [text, *translations])
        kind = query_kind(text, len(said[0]), unread)
        weight = weight if weight is not None else WORD_WEIGHTS[kind]
        return WordQuery(said, text, mode, weight, fusion)

    def checked(self, query: Query) -> Query:
        """`query` with this index's default target where it names none, checked against the index (it holds
        that target; the filter is valid here): an InvalidInputError before any model loads or anything is
        heard."""
        query = query.resolved(self.default_target)
        self._check_holds(query.target)
        self._admitted(query.target, query.where)  # parsed and kept: the search that follows reuses it
        return query

    def hear(self, audio: AudioInput, language: str | None = None, translate: bool = False,
             name: str | None = None) -> Transcript:
        """The text spoken in `audio`, as this index searches it: Chinese heard in traditional characters is
        written in simplified ones where the index's texts are (search.voice)."""
        speech = self.speech or recognizer(OFFLINE, self._device)
        heard = speech.transcribe(audio, language, translate, self.max_audio_seconds, name)
        return simplified(heard) if heard.language.startswith("zh") and self._writes_simplified() else heard

    def understood(self, query: Query, transcript: Transcript | None = None) -> Understood:
        """`query` (typed, or its text as `transcript` heard it) as this index searches it: its language, and
        its English where the index's model reads English alone (search.understanding)."""
        return understand(self.manifest.model, query, transcript)

    def language_note(self, hits: Hits, wording: Wording = PYTHON, translate: str | bool = "auto") -> str | None:
        """One line where a search's query, in a language the index's model does not read, was searched
        untranslated (asked with `translate`): what reads it, and how to translate it."""
        understood = Understood(Query(translate=translate).checked(), hits.language, hits.translation)
        return language_note(self.manifest.model, understood, hits.transcript, wording)

    def _writes_simplified(self) -> bool:
        if self._script is None:
            self._script = catalog_script(self._items.sample_texts())
        return self._script == "simplified"

    def duplicates(self, modality: str = "image", threshold: float | None = None, pixels: float = SAME_PHOTO,
                   neighbours: int = NEIGHBOURS) -> list[DuplicateGroup]:
        """Groups of near-duplicate items of one kind (image, text or product), each with the one to keep."""
        check_target(modality)
        self._check_holds(modality, choice="modality")
        threshold = DEFAULT_THRESHOLD.get(modality, DEFAULT_THRESHOLD["image"]) if threshold is None else threshold
        check_threshold(threshold)
        vector_set = self._dedup_set(modality)
        stored = self._stored(vector_set)
        check = ContentCheck(self.item, pixels, self.shown_background)
        pairs = []
        for ids, queries in stored.chunks(1024):
            for row_id, found in zip(ids.tolist(), stored.search(queries, neighbours + 1)):
                for other, score in zip(found.row_ids.tolist(), found.scores.tolist()):
                    if row_id < other and score >= threshold and check.same(row_id, other):
                        pairs.append((row_id, other, score))
        candidates = self._ids_of(modality)
        return group_duplicates(candidates, pairs, self._keep_key)

    def _distinct(self, target: str, ranked_to: Callable[[int], list[Ranked]], k: int) -> list[Ranked]:
        """The best k hits of which none duplicates a better one: asks for more until k are distinct."""
        depth, threshold = 4 * k, DEFAULT_THRESHOLD.get(target, DEFAULT_THRESHOLD["image"])
        check = ContentCheck(self.item, background=self.shown_background)
        stored = self._stored(self._dedup_set(target))
        while True:
            ranked = ranked_to(depth)
            kept: list[Ranked] = []
            vectors = []
            for candidate in ranked:
                vector = stored.vector(candidate.row_id)
                near = [r for r, v in zip(kept, vectors) if vector is not None and v is not None
                        and float(v @ vector) >= threshold]
                if any(check.same(r.row_id, candidate.row_id) for r in near):
                    continue
                kept.append(candidate)
                vectors.append(vector)
                if len(kept) == k:
                    return kept
            if len(ranked) < depth:
                return kept  # nothing more to ask for
            depth *= 4

    def _dedup_set(self, modality: str) -> str:
        """The vectors that propose duplicate pairs: a product's photo (its text when it has none)."""
        if modality != "product":
            return modality
        return "product-image" if "product-image" in self._sets else "product-text"

    def _keep_key(self, row_id: int) -> tuple:
        item = self.item(row_id)
        filled = sum(v is not None for v in (item.get("metadata") or {}).values())
        size = item.get("size") if item["modality"] != "text" else 0
        return (-(size or 0), -filled, row_id)

    def search_vector(self, vector: np.ndarray, target: str = "image", k: int = 10,
                      where: str | None = None) -> list[Hit]:
        """Hits for a query vector made with the index's model."""
        check_k(k)
        check_target(target)
        self._check_holds(target)
        plan = QueryPlan(liked=[self._vector_example(vector)])
        ranked = self._rank(target, plan, DEFAULT_STRATEGY, self._admitted(target, where), k, None, DEFAULT_FUSION)
        return self._hits([ranked])[0]

    def search_many(self, texts: Sequence[str] = (), images: Sequence[str | Path | ImageURL | Image.Image] = (),
                    vectors: np.ndarray | Sequence[np.ndarray] = (), *, target: str = "image", k: int = 10,
                    where: str | None = None, mode: str | None = None) -> list[list[Hit]]:
        """Hits for many queries at once: texts, then images, then vectors, one list of hits per query.

        Texts and images are encoded in batches and every segment is searched once for all of them,
        which is several times the throughput of one query at a time. Texts are matched as `mode` says
        (Query.mode: hybrid by default where the index has words), untranslated.
        """
        check_k(k)
        check_target(target)
        self._check_holds(target)
        allowed = self._admitted(target, where)
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise InvalidInputError(f"query texts must be non-empty strings (got {text!r})")
        check_mode(mode)
        if mode == "lexical" and (len(images) or len(vectors)):
            raise InvalidInputError(f"{option('mode', 'lexical')} finds words; give texts alone")
        words = [self._words_for(text, (), mode) for text in texts]
        if mode == "lexical":
            return self._hits([self._rank(target, QueryPlan(), DEFAULT_STRATEGY, allowed, k, None, DEFAULT_FUSION, w)
                               for w in words])
        queries = [self._vector_example(v).vectors["any"] for v in vectors]
        encoded = []
        if texts:
            encoded.append(self.encoder.encode_texts(list(texts)))
        if images:
            pictures = [i if isinstance(i, Image.Image) else self.load_query_image(i) for i in images]
            encoded.append(encode_images(self.encoder, [flatten(p, self.image_background) for p in pictures]))
        matrix = np.concatenate(encoded + ([np.stack(queries)] if queries else [])).astype(np.float32) \
            if encoded or queries else np.zeros((0, self.manifest.model.dim), np.float32)
        if target == "product" or any(w is not None for w in words):
            kinds = ["text"] * len(texts) + ["image"] * len(images) + ["vector"] * len(queries)
            examples = [Example({"any": q}, kind=kind) for q, kind in zip(matrix, kinds)]
            plans = [QueryPlan(liked=[e], query=e if e.kind != "vector" else None) for e in examples]
            words += [None] * (len(plans) - len(words))
            ranked = [self._rank(target, plan, DEFAULT_STRATEGY, allowed, k, None, DEFAULT_FUSION, w)
                      for plan, w in zip(plans, words)]
        else:
            ranked = [[Ranked(int(i), float(s)) for i, s in zip(r.row_ids, r.scores)]
                      for r in self._stored(target).search(matrix, k, allowed)]
        return self._hits(ranked)

    def preload(self) -> "SearchIndex":
        """Read every stored vector and ANN file once now, so that a long-lived reader's first queries find
        them in memory.

        Everything an open index reads was opened (vectors memory-mapped) when it was opened, so later
        commits that collect its segments never break it; this only warms the page cache.
        """
        for stored in self._sets.values():
            for part in stored.parts:
                if part.ann is not None:
                    part.ann.warm()
                for start in range(0, len(part.matrix), 65_536):
                    np.add.reduce(part.matrix[start:start + 65_536], axis=0)
        return self

    @property
    def generation(self) -> str:
        return self.manifest.generation

    def embed_text(self, text: str) -> np.ndarray:
        return self.encoder.encode_texts([text])[0]

    def embed_image(self, image: str | Path | ImageURL | Image.Image) -> np.ndarray:
        picture = image if isinstance(image, Image.Image) else self.load_query_image(image)
        return encode_images(self.encoder, [flatten(picture, self.image_background)])[0]

    def query_min_side(self) -> int | None:
        """Query photos are decoded as the index's photos were: reduced to the model's input, or exactly."""
        if self.manifest.settings.get("image_decode", "exact") != "reduced":
            return None
        return image_input_side(self.encoder)

    @property
    def image_background(self) -> str | None:
        """Query photos are laid on the index's background, as its photos were: a stored cutout queried by its
        own file scores 1.0. None: an index from before backgrounds, whose photos' alpha was dropped."""
        return self.manifest.background

    @property
    def shown_background(self) -> str:
        """What thumbnails and the duplicates' pixel check lay transparent photos on: the index's background
        (what its model saw), white for an index from before (what a shop shows; no vector depends on it)."""
        return self.manifest.background or DEFAULT_BACKGROUND

    def load_query_image(self, path: str | Path | ImageURL) -> Image.Image:
        """A query image from a file, or fetched from a URL (search/fetch.py), decoded as the index's photos were."""
        if isinstance(path, ImageURL) or is_url(path):
            return fetch_image(str(path), min_side=self.query_min_side(), background=self.image_background)
        if Path(path).is_dir():
            raise InvalidInputError(f"query image {path} is a folder; give one image file from it")
        if not Path(path).is_file():
            raise InvalidInputError(f"query image {path} does not exist; check the path")
        try:
            return load_image(path, min_side=self.query_min_side(), background=self.image_background)
        except ImageDecodeError as exc:
            raise InvalidInputError(f"query image {path} cannot be read ({exc}); use a valid image file") from None

    # ---- what the index holds -----------------------------------------------------------------------------

    def failures(self, wording: Wording = PYTHON) -> list:
        """What the index could not take (files, table rows, product photos), with reasons in `wording`'s terms."""
        return [f.worded(wording) for f in self._failures]

    def embeddings(self, vector_set: str) -> tuple[np.ndarray, np.ndarray]:
        """(row_ids, vectors) stored for a vector set (image, text, product-image, product-text), as float32."""
        return self._stored(vector_set).subset(None)

    def item(self, row_id: int) -> dict[str, Any]:
        return self._items.rows([row_id])[0]

    def items(self, offset: int = 0, limit: int = 100, modality: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        """(how many items of that kind the index holds, `limit` of them from `offset` in row id order)."""
        if modality not in (None, *TARGETS):
            raise InvalidInputError(f"unknown modality {modality!r}; use one of {', '.join(TARGETS)}")
        ids = self._items.row_ids if modality is None else self._ids_of(modality)
        return len(ids), self._items.rows(ids[offset:offset + limit].tolist())

    def columns(self, target: str) -> list[str]:
        """The columns a filter on `target` items may name: their metadata, then the built-ins."""
        return list(self._filter_table(target).column_names[1:])

    # ---- plans --------------------------------------------------------------------------------------------

    def _plan(self, text, image, like, dislike, add, subtract, strategy: str) -> QueryPlan:
        if text is not None and image is not None:
            raise InvalidInputError("give one query: a text or an image, not both (add the other as a term)")
        if text is not None and not text.strip():
            raise InvalidInputError("the query text is empty; type what you are looking for")
        both = sorted({int(t) for t in like if _is_row_id(t)} & {int(t) for t in dislike if _is_row_id(t)})
        if both:
            raise InvalidInputError(f"row {both[0]} is both liked and disliked; keep it in one of the two")
        plan = QueryPlan()
        base = None
        if text is not None:
            base = Example({"any": self.embed_text(text)}, label=text, kind="text")
        elif image is not None:
            base = Example({"any": self.embed_image(image)}, label=str(image), kind="image")
        plan.query = base
        terms = {name: [self._example(t, plan, weighted=True) for t in items]
                 for name, items in (("add", add), ("subtract", subtract))}
        query = combine(base, terms["add"], terms["subtract"])
        plan.liked = ([query] if query else []) + [self._example(t, plan) for t in like]
        plan.disliked = [self._example(t, plan) for t in dislike]
        both = sorted({e.row_id for e in plan.liked if e.row_id is not None}
                      & {e.row_id for e in plan.disliked if e.row_id is not None})
        if both:  # named twice, by row id and by key
            raise InvalidInputError(f"row {both[0]} is both liked and disliked; keep it in one of the two")
        if not plan.liked and (strategy == "average_vector" or not plan.disliked):
            what = (f"a query text, {option('image', 'FILE')} or {option('like', 'ITEM')}" if plan.disliked
                    else f"a query: a text, {option('image', 'FILE')}, or liked items ({option('like', 'ITEM')})")
            raise InvalidInputError(f"give {what}" + (f" (or use {option('strategy', 'best_score')} to search "
                                                       "away from disliked items alone)" if plan.disliked else ""))
        return plan

    def _example(self, term: WeightedTerm, plan: QueryPlan, weighted: bool = False) -> Example:
        weight, term = split_weight(term) if weighted else (1.0, term)
        if weight < 0:
            raise InvalidInputError(f"a term's weight cannot be negative ({weight} for {describe(term)}); "
                                    "subtract the term instead")
        if isinstance(term, (bool, np.bool_)):
            raise InvalidInputError(f"{term!r} is not a query term; use a text, an image, a row id or a vector")
        if isinstance(term, (int, np.integer)):
            example = self._stored_example(int(term))
            plan.excluded.add(int(term))
        elif isinstance(term, np.ndarray):
            example = self._vector_example(term)
        elif isinstance(term, (Path, ImageURL, Image.Image)):
            example = Example({"any": self.embed_image(term)}, label=str(term), kind="image")
        elif isinstance(term, str) and (keyed := self._keyed_row(term)) is not None:
            example = self._stored_example(keyed)
            plan.excluded.add(keyed)
        elif isinstance(term, str):
            if not term.strip():
                raise InvalidInputError("a text term is empty; give words, an image file or a row id")
            example = Example({"any": self.embed_text(term)}, label=term, kind="text")
        else:
            raise InvalidInputError(f"{describe(term)} is not a query term; use a text, an image, a row id or a vector")
        example.weight = weight
        return example

    def _stored_example(self, row_id: int) -> Example:
        try:
            modality = self.item(row_id)["modality"]
        except KeyError:
            raise InvalidInputError(f"no item with row id {row_id} in {self.path}; {command('list')} shows the ids") \
                from None
        vectors = {}
        for vector_set, part in zip(SETS_OF[modality], PARTS[modality]):
            found = self._stored(vector_set).vector(row_id)
            if found is not None:
                vectors[part] = found
        if not vectors:
            raise InvalidInputError(f"item {row_id} has no vector (its photo and text could not be read)")
        return Example(vectors, row_id=row_id, label=f"#{row_id}", kind=modality)

    def _vector_example(self, vector: np.ndarray) -> Example:
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        if vector.shape[0] != self.manifest.model.dim:
            raise ModelMismatchError(
                f"a query vector has {vector.shape[0]} dimensions, the index {self.manifest.model.dim}; "
                "embed it with the index's model"
            )
        norm = float(np.linalg.norm(vector))
        if norm < 1e-12 or not np.isfinite(norm):
            raise InvalidInputError("a query vector is zero (or not finite); give a real embedding")
        return Example({"any": vector / norm})

    # ---- ranking ------------------------------------------------------------------------------------------

    def _rank(self, target: str, plan: QueryPlan, strategy: str, allowed: np.ndarray | None, k: int,
              weights: dict[str, float] | None, fusion: str, words: WordQuery | None = None) -> list[Ranked]:
        if plan.excluded:
            allowed = np.setdiff1d(self._ids_of(target) if allowed is None else allowed,
                                   np.fromiter(plan.excluded, np.int64))
        if words is not None:
            return self._rank_with_words(target, plan, strategy, allowed, k, weights, fusion, words)
        queries = self._part_queries(target, plan, strategy)
        if target != "product":
            ids, scores = self._best(target, queries[target], allowed, k)
            return [Ranked(int(i), float(s)) for i, s in zip(ids, scores)]
        return self._rank_products(queries, allowed, k, weights or default_weights(plan.kind), fusion,
                                   plan.plain_query is not None)

    def _part_queries(self, target: str, plan: QueryPlan, strategy: str) -> dict[str, PartQuery]:
        dim = self.manifest.model.dim
        return {part: PartQuery(_stack([e.for_part(part) for e in plan.liked], dim),
                                _stack([e.for_part(part) for e in plan.disliked], dim), strategy)
                for part in PARTS[target]}

    def _rank_with_words(self, target: str, plan: QueryPlan, strategy: str, allowed: np.ndarray | None, k: int,
                         weights: dict[str, float] | None, fusion: str, words: WordQuery) -> list[Ranked]:
        """Lexical: the items holding every word, by BM25. Hybrid: the vector and word rankings' candidates,
        each scored both ways and fused (search/hybrid.py). Either way an item whose key the query names
        comes first."""
        admitted = self._word_admitted(target, allowed)
        first = self._words.keyed(words.text, admitted) if words.text else []
        if words.mode == "lexical":
            found = self._holding_every_word(words, k + len(first), admitted)
            order = first + [row for row in found if row not in first]
            return [Ranked(row, found.get(row, 0.0), {"words": found.get(row, 0.0)}) for row in order[:k]]
        depth = max(DEPTH, 2 * k)
        by_vector = self._rank(target, plan, strategy, allowed, depth, weights, fusion)
        by_words = dict(self._words.search(words.terms, depth, admitted))
        if not by_words and not first:
            return by_vector[:k]  # no item holds a word of it: the vector ranking, its scores still cosines
        seen = {r.row_id for r in by_vector}
        others = [row for row in dict.fromkeys(first + list(by_words)) if row not in seen]
        candidates = by_vector + self._scored(target, plan, strategy, np.array(others, np.int64), weights, fusion)
        vector = np.array([c.score for c in candidates])
        word_scores = np.array([by_words.get(c.row_id, 0.0) for c in candidates])
        fused = fuse_words(vector, word_scores, words.weight, words.fusion)
        ids = np.array([c.row_id for c in candidates], np.int64)
        ahead = np.isin(ids, np.array(first, np.int64)) | np.array([c.first for c in candidates])
        top_ids, top_scores = _top(ids, fused, k, first=ahead)
        where = {c.row_id: (c, w) for c, w in zip(candidates, word_scores)}
        return [Ranked(int(i), float(s), _explained(*where[int(i)])) for i, s in zip(top_ids, top_scores)]

    def _holding_every_word(self, words: WordQuery, k: int, admitted: np.ndarray | None) -> dict[int, float]:
        """The k best rows holding every word of the query as typed, or every word of its translation."""
        found: dict[int, float] = {}
        for terms in words.said:
            for row, score in self._words.search(terms, k, admitted, every=True):
                found[row] = max(score, found.get(row, 0.0))
        return dict(sorted(found.items(), key=lambda hit: (-hit[1], hit[0]))[:k])

    def _scored(self, target: str, plan: QueryPlan, strategy: str, ids: np.ndarray, weights: dict[str, float] | None,
                fusion: str) -> list[Ranked]:
        """`ids` scored as the vector ranking scores them (nan for one without a vector)."""
        if not len(ids):
            return []
        queries = self._part_queries(target, plan, strategy)
        if target == "product":
            fused, parts = self._product_scores(queries, ids, weights or default_weights(plan.kind), fusion)
            return [Ranked(int(i), float(s), {p: float(v[n]) for p, v in parts.items() if not np.isnan(v[n])})
                    for n, (i, s) in enumerate(zip(ids, fused))]
        stored = self._stored(target)
        scores = np.full(len(ids), np.nan)
        positions = stored.positions(ids)
        have = positions >= 0
        if have.any():
            scores[have] = queries[target].scores(stored.take(positions[have]))
        return [Ranked(int(i), float(s)) for i, s in zip(ids, scores)]

    def _word_admitted(self, target: str, allowed: np.ndarray | None) -> np.ndarray | None:
        """Sorted row ids a word search may return: the filter's, else the target's (None: every row with
        words is one, the index holding nothing else)."""
        if allowed is not None:
            return np.unique(allowed)
        if all(not n or m == target for m, n in self.manifest.counts.items()):
            return None
        return self._ids_of(target)  # ascending already (ItemStore.ids_of), and cached

    def _best(self, vector_set: str, query: PartQuery, allowed: np.ndarray | None, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ids and scores of the k best of one vector set, exact where the ANN index is not enough."""
        single = query.single_vector
        if single is not None and (allowed is None or len(allowed) > EXACT_SUBSET):
            result = self._stored(vector_set).search(single, k, allowed)[0]
            return result.row_ids, result.scores
        ids, vectors = self._stored(vector_set).subset(self._candidates(vector_set, query, allowed, k))
        return _top(ids, query.scores(vectors), k)

    def _candidates(self, vector_set: str, query: PartQuery, allowed: np.ndarray | None, k: int) -> np.ndarray | None:
        """The rows worth scoring exactly: all admitted ones when few, else the ANN neighbours of each probe."""
        count = len(self._stored(vector_set)) if allowed is None else len(allowed)
        if count <= EXACT_SUBSET:
            return allowed
        depth = max(PROBE_DEPTH, 10 * k)
        found = [r.row_ids for r in self._stored(vector_set).search(query.probes(), depth, allowed)]
        return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)

    def _rank_products(self, queries: dict[str, PartQuery], allowed: np.ndarray | None, k: int,
                       weights: dict[str, float], fusion: str, plain: bool) -> list[Ranked]:
        """Products by the fusion of their parts' scores; with a plain query (its cosines are the scores), a
        product whose photo or description is the query itself comes first."""
        sets = {part: f"product-{part}" for part in PARTS["product"]}
        pools = [self._candidates(s, queries[p], allowed, k) for p, s in sets.items() if s in self._sets]
        ids = self._ids_of("product") if allowed is None else allowed
        if pools and all(p is not None for p in pools):
            ids = np.unique(np.concatenate(pools))
        fused, part_scores = self._product_scores(queries, ids, weights, fusion)
        identical = identical_to_query(part_scores, weights) if plain else np.zeros(len(ids), bool)
        top_ids, top_scores = _top(ids, fused, k, first=identical)
        where = {int(i): n for n, i in enumerate(ids)}
        return [Ranked(int(i), float(s), {p: float(part_scores[p][where[int(i)]]) for p in part_scores
                                           if not np.isnan(part_scores[p][where[int(i)]])}, bool(identical[where[int(i)]]))
                for i, s in zip(top_ids, top_scores)]

    def _product_scores(self, queries: dict[str, PartQuery], ids: np.ndarray, weights: dict[str, float],
                        fusion: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Products' fused scores, and each part's (nan where a product lacks that part)."""
        sets = {part: f"product-{part}" for part in PARTS["product"]}
        part_scores, population = {}, {}
        for part, vector_set in sets.items():
            stored = self._stored(vector_set)
            scores = np.full(len(ids), np.nan)
            positions = stored.positions(ids)
            have = positions >= 0
            scores[have] = queries[part].scores(stored.take(positions[have]))
            part_scores[part] = scores
            sample = queries[part].scores(stored.sample()) if len(stored) else np.zeros(0)
            population[part] = (float(sample.mean()), float(sample.std())) if len(sample) else (0.0, 1.0)
        return fuse(part_scores, weights, fusion, population), part_scores

    # ---- filters ------------------------------------------------------------------------------------------

    def _admitted(self, target: str, where: str | None) -> np.ndarray | None:
        """Row ids of the `target` items the filter admits (None: no filter, all of them)."""
        if where is None:
            return None
        key = (target, where)
        if key not in self._admitted_cache:
            condition: Filter = parse_filter(where)
            table = self._filter_table(target)
            if len(self._admitted_cache) >= FILTER_CACHE:
                self._admitted_cache.pop(next(iter(self._admitted_cache)))
            admitted = condition.mask(table, self._text_causes())
            self._admitted_cache[key] = table.column("row_id").to_numpy()[admitted]
        return self._admitted_cache[key]

    def _text_causes(self) -> dict[str, TextCause]:
        """Per metadata column that is mostly numbers but was read as text, the line of its corpus that made
        it text (recorded by the run that read it): what a filter comparing it with a number names."""
        causes = {}
        for source in self.manifest.sources:
            for column in source.columns or []:
                if column.get("type") == "text" and column.get("first_text_line") is not None:
                    na_values = DEFAULT_NA_VALUES if source.na_values is None else source.na_values
                    causes.setdefault(column["name"], TextCause(Path(source.path).name, column["first_text_line"],
                                                                column["first_text_value"], tuple(na_values),
                                                                column.get("first_text_number")))
        return causes

    def _filter_table(self, target: str) -> pa.Table:
        """row_id, the metadata fields, then the built-in columns, for the items of one kind."""
        if target not in self._filter_tables:
            items = self._items.table(target, ["row_id", "metadata", *BUILT_IN_COLUMNS])
            columns = {"row_id": items.column("row_id")}
            if "metadata" in items.column_names:
                metadata = items.column("metadata").combine_chunks()
                for index, field in enumerate(metadata.type):
                    columns[field.name] = metadata.field(index)  # a metadata name shadows a built-in one
            for name in BUILT_IN_COLUMNS:
                columns.setdefault(name, items.column(name))
            self._filter_tables[target] = pa.table(columns)
        return self._filter_tables[target]

    # ---- helpers ------------------------------------------------------------------------------------------

    @property
    def placement(self) -> SearchPlacement:
        """Where this index's vectors are scanned (search.placement), decided at the first search."""
        if self._placement is None:
            self._placement = choose_placement(self._device)
            for stored in self._sets.values():
                stored.place(self._placement)
        return self._placement

    def _stored(self, vector_set: str) -> StoredVectors:
        self.placement  # noqa: B018 (vectors go to a GPU before their first search)
        return self._sets.get(vector_set) or StoredVectors([])

    def _ids_of(self, modality: str) -> np.ndarray:
        if modality not in self._ids_by_modality:
            self._ids_by_modality[modality] = self._items.ids_of(modality)
        return self._ids_by_modality[modality]

    @property
    def default_target(self) -> str:
        """What a search returns unless told: products where the index holds any (the shop's case), else
        images, else texts."""
        counts = self.manifest.counts
        return next((t for t in ("product", "image", "text") if counts.get(t)), "image")

    def _check_holds(self, target: str, choice: str = "target") -> None:
        """`choice`: the caller's option that chose `target`, named in the hint."""
        if self.manifest.counts.get(target, 0) and any(s in self._sets for s in SETS_OF[target]):
            return
        held = ", ".join(f"{n} {m}" + ("s" if n != 1 else "") for m, n in self.manifest.counts.items() if n) or "nothing"
        others = [m for m, n in self.manifest.counts.items() if n and m != target]
        verb = "search" if choice == "target" else "use"
        hint = f"{verb} {option(choice, others[0])} instead, or " if others else ""
        source = {"text": option("texts", "FILE"), "image": "an image folder",
                  "product": f"a table with {option('image_column', 'NAME')}"}[target]
        raise InvalidInputError(f"{self.path} holds no {target}s (it holds {held}); {hint}index {source} into it")

    def _hits(self, ranked_lists: list[list[Ranked]]) -> list[list[Hit]]:
        """Typed hits, their items read together (by row group)."""
        rows = iter(self._items.rows([r.row_id for ranked in ranked_lists for r in ranked]))
        return [[self._hit(rank, r, next(rows)) for rank, r in enumerate(ranked, start=1)] for ranked in ranked_lists]

    def _hit(self, rank: int, ranked: Ranked, row: dict[str, Any]) -> Hit:
        key = row.get("key")
        return Hit(rank=rank, score=ranked.score, row_id=ranked.row_id, modality=row["modality"],
                   path=row.get("path"), text=row.get("text"), metadata=row.get("metadata") or {},
                   scores=ranked.parts, key=key, key_column=self._id_column_of(row.get("source")) if key else None)

    def _id_column_of(self, source: str | None) -> str | None:
        return next((s.id_column for s in self.manifest.sources if s.path == source and s.kind == "texts"), None)

    def _keyed_row(self, term: str) -> int | None:
        """The row a `COLUMN:KEY` term names, where COLUMN is an id column of this index; None for any other text."""
        column, colon, key = term.partition(":")
        sources = [s.path for s in self.manifest.sources if s.kind == "texts" and s.id_column == column.strip()]
        if not colon or not sources or not key.strip():
            return None
        found = self._items.with_key(key.strip(), sources)
        if not found:
            raise InvalidInputError(f"no item has {column.strip()} {key.strip()!r} in {self.path}; "
                                    f"{command('list')} shows what it holds")
        if len(found) > 1:
            raise InvalidInputError(f"{column.strip()} {key.strip()!r} names {len(found)} items (rows "
                                    f"{', '.join(map(str, found))}) of different tables; name one by its row id")
        return found[0]

    def _check_model(self, encoder: Encoder) -> None:
        built, given = self.manifest.model, encoder.identity
        if built.compatibility_key() != given.compatibility_key():
            raise ModelMismatchError(
                f"this index was built with {built.describe()}, not {given.describe()}; "
                "query it with the model that built it"
            )
        check_parity(built, given, recorded_table(self.manifest.calibration))


OPEN_ATTEMPTS = 3


def open_index(path: str | Path, device: str | None = None, encoder: Encoder | None = None,
               asr_model: str | SpeechRecognizer = OFFLINE, runtime: str | None = None,
               precision: str | None = None) -> SearchIndex:
    """Open an index for searching; raises NotAnIndexError if `path` is not one. Spoken queries are heard
    with `asr_model` (search.voice: offline, a faster-whisper size, or a folder), loaded when first used.
    Queries are encoded the way the index records (`runtime`, `precision`: None), or the way named
    (torch/onnx, fp32/bf16/int8, auto), where that way's vectors hold parity with the index's."""
    index_dir = IndexDir(Path(path))
    speech = asr_model if isinstance(asr_model, SpeechRecognizer) else recognizer(asr_model, device)
    for _ in range(OPEN_ATTEMPTS - 1):
        try:
            return SearchIndex(index_dir, index_dir.read_manifest(), device=device, encoder=encoder, speech=speech,
                               runtime=runtime, precision=precision)
        except FileNotFoundError:
            continue  # two commits landed between reading the manifest and its files: read the new one
    return SearchIndex(index_dir, index_dir.read_manifest(), device=device, encoder=encoder, speech=speech,
                               runtime=runtime, precision=precision)


def _top(ids: np.ndarray, scores: np.ndarray, k: int,
         first: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k best by score, equal scores by row id; those marked `first` before all others."""
    ids = np.asarray(ids, dtype=np.int64)
    keys = (ids, -np.asarray(scores, dtype=np.float64)) + ((~first,) if first is not None else ())
    order = np.lexsort(keys)[:k]
    return ids[order], np.asarray(scores)[order]


def _stack(vectors: list[np.ndarray], dim: int) -> np.ndarray:
    return np.stack(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)


def _as_query(query: Query | str | None, image: QueryImage | None, fields: dict[str, Any]) -> Query:
    if isinstance(query, Query):
        if image is not None or fields:
            raise InvalidInputError("give a Query, or its fields as keywords, not both")
        return query
    asked: dict[str, Any] = {"text": query, "image": image}
    for name, value in fields.items():
        if asked.get(name) is not None:
            raise InvalidInputError(f"the query's {name} is given twice; give it once")
        asked[name] = value
    return Query(**asked)


def _explained(candidate: Ranked, words: float) -> dict[str, float]:
    """A hybrid hit's parts: a product's image and text, its vector score (nan-free) and its words' BM25."""
    parts = dict(candidate.parts or {})
    if not np.isnan(candidate.score):
        parts["vector"] = candidate.score
    parts["words"] = float(words)
    return parts


def _check_lexical(query: Query) -> None:
    """A lexical search ranks by the query's words alone: what it cannot use is refused, not dropped."""
    if query.text is None and query.audio is None:
        raise InvalidInputError(f"{option('mode', 'lexical')} finds words; give a text query (or use "
                                f"{option('mode', 'hybrid')} for an image)")
    used = [name for name in ("like", "dislike", "add", "subtract") if getattr(query, name)]
    if used:
        raise InvalidInputError(f"{option('mode', 'lexical')} ranks by words alone and cannot use "
                                f"{option(used[0])}; use {option('mode', 'hybrid')}")


def _is_row_id(term) -> bool:
    return isinstance(term, (int, np.integer)) and not isinstance(term, (bool, np.bool_))

