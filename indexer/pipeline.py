"""The indexer: sources -> encoder -> store -> index, composed by one runner that times each stage.

Runs are incremental and resumable: a re-run encodes only what is new or
changed (indexer/plan.py), vectors encoded along the way are committed in
journal chunks (store/journal.py), and the new state becomes visible in one
atomic commit (store/layout.py). One writer at a time (store/lock.py).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

from . import ann, sources
from .commit import NewState, RunStats, commit_state, load_state, vectors_of
from .encode import EncodeSettings, ProgressFactory, Timer, encode_images_journaled, encode_texts_journaled
from .errors import InvalidInputError, ModelMismatchError, option
from .imaging import MAX_PIXELS
from .models import DEFAULT_MODEL, Encoder, ModelIdentity, load_encoder
from .plan import Planned, RowIds, StoredState, plan_images, plan_texts, text_hash
from .plan_products import ProductPlan, plan_products
from .store import Failure, IndexDir, ItemRow, Manifest
from .store.journal import Journal
from .store.lock import WriterLock
from .store.manifest import FORMAT_VERSION, Source
from .store.segments import check_vector_dtype
from .store.tables import read_failures
from .sync import SourcePlan, check_replace, named_sources, plan_sources, reading_options
from .unchanged import fingerprint, nothing_changed, skip_unchanged_corpora

__all__ = ["IndexConfig", "IndexReport", "build_index"]


@dataclass
class IndexConfig:
    images: list[Path] = field(default_factory=list)
    texts: list[Path] = field(default_factory=list)
    text_column: str | None = None  # for the corpora named in `texts`; None: as recorded, else "text"
    encoding: str | None = None  # likewise; None: as recorded, else utf-8
    image_column: str | None = None  # likewise; a column naming each row's photo makes the rows products
    replace_sources: bool = False  # the sources named become the index's whole set
    model: str | None = None  # None: the existing index's model, else the registry default
    pretrained: str | None = None
    device: str | None = None
    batch_size: int = 64
    workers: int | None = None
    index_type: str = "auto"
    vectors: str | None = None  # storage of vectors: "float32" or "float16"; None: as recorded, else float32
    memory_budget: int | str | None = None  # bytes (or "4G") the ANN indexes may use when searched; None: as recorded
    max_pixels: int = MAX_PIXELS
    retry_failed: bool = False
    journal_every: int = 512  # items encoded between resume points


@dataclass
class IndexReport:
    path: Path
    counts: dict[str, int]
    failures: list[Failure]
    seconds: float
    stage_seconds: dict[str, float]
    device: str | None  # None: the model was not loaded (nothing to encode)
    model: str
    stats: RunStats
    committed: bool

    @property
    def items_per_second(self) -> float:
        """Encoding throughput of this run: items encoded (not reused) per second."""
        return self.stats.encoded / self.seconds if self.seconds > 0 else 0.0


def build_index(out: str | Path, config: IndexConfig, progress: ProgressFactory | None = None,
                encoder: Encoder | None = None) -> IndexReport:
    """Index `config`'s sources into `out`, re-using whatever an earlier run already did.

    Sources are additive: the ones named are added to those the index recorded and
    synced; the others are kept as they are. With none named, every recorded source
    is synced. Inputs are checked before the model loads; nothing is written for bad input.
    """
    started, timer = time.perf_counter(), Timer()
    index_dir = IndexDir(Path(out))
    index_dir.check_writable_target()
    previous = index_dir.read_manifest() if index_dir.is_index() else None
    config = _with_recorded_settings(config, previous)
    ann.choose_ann(0, config.index_type)  # an unknown index type fails now, not after hours of encoding
    check_vector_dtype(config.vectors)
    named = named_sources(config.images, config.texts, config.text_column, config.encoding, config.image_column)
    check_replace(config.replace_sources, named)
    recorded = previous.sources if previous else []
    source_plan = skip_unchanged_corpora(plan_sources(named, recorded, config.replace_sources), recorded)
    with timer.stage("read_sources"):
        found = read_sources(source_plan.synced, recorded)
    if previous is None and found.empty:
        raise InvalidInputError(f"nothing to index; give an image folder, {option('texts', 'FILE')}, or both")
    created = not index_dir.root.exists()
    try:
        with WriterLock(index_dir.root):
            return _run_locked(index_dir, config, named, source_plan, found, encoder, progress, timer, started)
    except BaseException:
        if created and not index_dir.is_index() and not Journal.has_saved_work(index_dir.root):
            shutil.rmtree(index_dir.root, ignore_errors=True)  # nothing committed, nothing to resume: no trace
        raise


@dataclass
class FoundItems:
    """What the synced sources hold now."""

    image_paths: list[str]
    texts: list[sources.TextRecord]
    products: list[sources.TextRecord]  # rows of tables read with an image column
    skipped_rows: list[Failure]
    fingerprints: dict[tuple[str, str], str | None] = field(default_factory=dict)  # corpora as they were read

    @property
    def empty(self) -> bool:
        return not self.image_paths and not self.texts and not self.products


def read_sources(synced: list[Source], recorded: list[Source]) -> FoundItems:
    """Read the sources a run syncs. A newly added folder must hold images; a recorded one may be emptied."""
    known = {s.key for s in recorded}
    image_paths, texts, products, skipped, fingerprints = [], [], [], [], {}
    for source in synced:
        if source.kind == "images":
            found = sources.list_images(source.path)
            if not found and source.key not in known:
                raise sources.no_images_error([source.path])
            image_paths.extend(found)
        else:
            fingerprints[source.key] = fingerprint(source.path)  # before reading: a later edit is seen next run
            corpus = sources.read_corpus(source.path, *reading_options(source))
            (products if source.image_column else texts).extend(corpus.records)
            skipped.extend(Failure(s.source, "text", s.reason, line=s.line, source=s.source) for s in corpus.skipped)
    return FoundItems(sorted(set(image_paths)), texts, products, skipped, fingerprints)


class _EncoderOnDemand:
    """Loads the model the first time it is needed: a re-run with nothing new never loads it."""

    def __init__(self, config: IndexConfig, previous: Manifest | None, index_dir: IndexDir,
                 given: Encoder | None, timer: Timer):
        self._config, self._previous, self._dir, self._timer = config, previous, index_dir, timer
        self._encoder = given
        if given is not None:
            _check_same_model(index_dir, previous, given)
        elif not self._same_as_recorded():
            self.get()

    def _same_as_recorded(self) -> bool:
        recorded = self._previous.model if self._previous else None
        return recorded is not None and self._config.model == recorded.spec \
            and self._config.pretrained in (None, recorded.pretrained)

    @property
    def identity(self) -> ModelIdentity:
        return self._encoder.identity if self._encoder else self._previous.model

    @property
    def device(self) -> str | None:
        """Where the model ran; None when nothing needed encoding and it was never loaded."""
        return self._encoder.device if self._encoder else None

    def get(self) -> Encoder:
        if self._encoder is None:
            with self._timer.stage("load_model"):
                self._encoder = load_encoder(self._config.model, self._config.pretrained, self._config.device)
            _check_same_model(self._dir, self._previous, self._encoder)
        return self._encoder


def _run_locked(index_dir: IndexDir, config: IndexConfig, named: list[Source], source_plan: SourcePlan,
                found: FoundItems, encoder: Encoder | None, progress, timer: Timer, started: float) -> IndexReport:
    previous = index_dir.read_manifest() if index_dir.is_index() else None  # as of taking the lock
    recorded = previous.sources if previous else []
    fresh_plan = skip_unchanged_corpora(plan_sources(named, recorded, config.replace_sources), recorded)
    if [s.key for s in fresh_plan.synced] != [s.key for s in source_plan.synced]:  # another run changed them
        source_plan, found = fresh_plan, read_sources(fresh_plan.synced, recorded)
    source_plan = SourcePlan([replace(s, fingerprint=found.fingerprints[s.key]) if s.key in found.fingerprints else s
                              for s in source_plan.sources], source_plan.synced)
    model = _EncoderOnDemand(config, previous, index_dir, encoder, timer)
    recorded_settings = {"index_type": config.index_type, "vectors": config.vectors,
                         "memory_budget": config.memory_budget}
    if previous is not None and not Journal.has_saved_work(index_dir.root) and nothing_changed(
            index_dir, previous, source_plan, found.image_paths, recorded_settings, config.retry_failed):
        return _record_idle_run(index_dir, previous, source_plan, model, timer, started)
    state = load_state(index_dir, previous)
    scoped, carried = _split_by_source(state, source_plan)
    journal = Journal(index_dir.root, model.identity).open()
    ids = RowIds(state.next_row_id)
    with timer.stage("plan"):
        image_plan = plan_images(found.image_paths, scoped, journal, ids, config.retry_failed)
        text_plan = plan_texts(found.texts, scoped, journal, ids)
        product_plan = plan_products(found.products, scoped, journal, ids, config.retry_failed)
    settings = EncodeSettings(config.batch_size, config.workers, config.max_pixels, config.journal_every)
    new_failures = _encode_planned_images(model, image_plan, journal, ids, settings, timer, progress)
    _encode_planned_texts(model, text_plan, journal, ids, settings, timer, progress)
    _encode_planned_products(model, product_plan, journal, settings, timer, progress)
    known = set(state.failures)
    new_failures += product_plan.new_failures + [f for f in found.skipped_rows if f not in known]
    dropped = len(state.rows) - len(scoped.rows) - len(carried.rows)
    stats = _stats(image_plan, text_plan, product_plan, new_failures, dropped)
    failures = carried.failures + image_plan.carried_failures + product_plan.carried_failures + new_failures + \
        [f for f in found.skipped_rows if f in known]
    vectors = vectors_of(state, carried.rows)
    vectors.setdefault("image", {}).update((r.row_id, v) for r, v in zip(image_plan.rows, image_plan.vectors))
    vectors.setdefault("text", {}).update((r.row_id, v) for r, v in zip(text_plan.rows, text_plan.vectors))
    vectors.setdefault("product-image", {}).update(product_plan.photo_vectors)
    vectors.setdefault("product-text", {}).update(product_plan.text_vectors)
    new = NewState(carried.rows + image_plan.rows + text_plan.rows + product_plan.rows, vectors,
                   failures, source_plan.sources, ids.next, stats, recorded_settings)
    with timer.stage("write"):
        stats.seconds = round(time.perf_counter() - started, 3)
        manifest, committed = commit_state(index_dir, model.identity, previous, state, new)
    journal.clear()
    return IndexReport(index_dir.root, dict(manifest.counts), failures, time.perf_counter() - started,
                       timer.seconds, model.device, model.identity.describe(), stats, committed)


def _record_idle_run(index_dir: IndexDir, previous: Manifest, source_plan: SourcePlan, model: "_EncoderOnDemand",
                     timer: Timer, started: float) -> IndexReport:
    """Nothing changed: only the manifest's record of the last run is rewritten."""
    stats = RunStats(reused=sum(previous.counts.values()), seconds=round(time.perf_counter() - started, 3))
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with timer.stage("write"):
        index_dir.write_manifest(replace(previous, sources=source_plan.sources, updated_at=now,
                                         last_run={**stats.to_dict(), "finished_at": now},
                                         format_version=FORMAT_VERSION))
    failures = read_failures(index_dir.generation_path(previous.generation) / "failures.parquet")
    return IndexReport(index_dir.root, dict(previous.counts), failures, time.perf_counter() - started,
                       timer.seconds, model.device, model.identity.describe(), stats, False)


def _split_by_source(state: StoredState, source_plan: SourcePlan) -> tuple[StoredState, StoredState]:
    """(what the synced sources owned: the planner's input, what other sources keep); the rest is dropped."""
    scoped, carried = StoredState(vectors=state.vectors, reusable=state.rows), StoredState()
    owners: dict[tuple[str, str | None], str] = {}  # texts and products: one answer per corpus, not per row
    for row in state.rows:
        if row.modality == "image":
            owner = source_plan.owner_of(row)
        else:
            owner = owners.get((row.modality, row.source)) or owners.setdefault((row.modality, row.source),
                                                                                 source_plan.owner_of(row))
        {"synced": scoped.rows, "kept": carried.rows}.get(owner, []).append(row)
    for failure in state.failures:
        {"synced": scoped.failures, "kept": carried.failures}.get(source_plan.owner_of(failure), []).append(failure)
    return scoped, carried


def _with_recorded_settings(config: IndexConfig, previous: Manifest | None) -> IndexConfig:
    """The caller's config, completed from what the index recorded (the caller's object is not changed)."""
    budget = ann.parse_memory(str(config.memory_budget)) if config.memory_budget is not None else None
    if previous is None:
        return replace(config, model=config.model or DEFAULT_MODEL, vectors=config.vectors or "float32",
                       memory_budget=budget)
    config = replace(config, model=config.model or previous.model.spec,
                     vectors=config.vectors or previous.settings.get("vectors", "float32"),
                     memory_budget=budget if budget is not None else previous.settings.get("memory_budget"))
    if config.index_type == "auto":
        config = replace(config, index_type=previous.settings.get("index_type", "auto"))
    return config


def _check_same_model(index_dir: IndexDir, previous: Manifest | None, encoder: Encoder) -> None:
    if previous and previous.model.compatibility_key() != encoder.identity.compatibility_key():
        raise ModelMismatchError(
            f"{index_dir.root} was built with {previous.model.describe()}, not {encoder.identity.describe()}; "
            f"index into a new {option('out')} folder, or use the index's model"
        )


def _encode_planned_images(model: _EncoderOnDemand, plan: Planned, journal: Journal, ids: RowIds,
                           settings: EncodeSettings, timer: Timer, progress) -> list[Failure]:
    if not plan.to_encode:
        return []
    result = encode_images_journaled(model.get(), plan.to_encode, journal, settings, timer, progress)
    for image, vector in zip(result.images, result.vectors):
        plan.keep(ItemRow(row_id=ids.take(), modality="image", path=image.path, content_hash=image.content_hash,
                          size=image.size, mtime=image.mtime, width=image.width, height=image.height),
                  vector, reused=False)
    return result.failures


def _encode_planned_texts(model: _EncoderOnDemand, plan: Planned, journal: Journal, ids: RowIds,
                          settings: EncodeSettings, timer: Timer, progress) -> None:
    records = plan.to_encode
    if not records:
        return
    digests = [text_hash(r.text) for r in records]
    vectors = encode_texts_journaled(model.get(), [r.text for r in records], journal, settings, timer, progress,
                                     hashes=digests)
    for record, digest, vector in zip(records, digests, vectors):
        plan.keep(ItemRow(row_id=ids.take(), modality="text", text=record.text, source=record.source,
                          line=record.line, content_hash=digest, size=len(record.text.encode("utf-8")),
                          metadata=record.metadata or None), vector, reused=False)


def _encode_planned_products(model: _EncoderOnDemand, plan: ProductPlan, journal: Journal,
                             settings: EncodeSettings, timer: Timer, progress) -> None:
    if plan.photos_to_encode:
        result = encode_images_journaled(model.get(), list(plan.photos_to_encode), journal, settings, timer,
                                         progress, label="photos")
        for image, vector in zip(result.images, result.vectors):
            for row in plan.photos_to_encode[image.path]:
                row.image_hash, row.size, row.mtime = image.content_hash, image.size, image.mtime
                row.width, row.height = image.width, image.height
                plan.photo_vectors[row.row_id] = vector
        for failure in result.failures:
            for row in plan.photos_to_encode[failure.path]:
                plan.new_failures.append(replace(failure, line=row.line, source=row.source))
    if plan.texts_to_encode:
        texts = list(plan.texts_to_encode)
        vectors = encode_texts_journaled(model.get(), texts, journal, settings, timer, progress, label="descriptions")
        for text, vector in zip(texts, vectors):
            for row in plan.texts_to_encode[text]:
                plan.text_vectors[row.row_id] = vector
    for row in plan.rows:
        if row.row_id not in plan.photo_vectors:  # no photo, or it could not be read: the product is its text
            row.image_hash = row.size = row.mtime = row.width = row.height = None


def _stats(image_plan: Planned, text_plan: Planned, product_plan: ProductPlan, new_failures: list[Failure],
           dropped: int) -> RunStats:
    """Counts of vectors: a product's photo and description count apart."""
    plans = (image_plan, text_plan)
    encoded = sum(len(p.rows) for p in plans) - sum(p.reused + p.resumed for p in plans)
    encoded += sum(len(rows) for rows in product_plan.photos_to_encode.values())
    encoded += sum(len(rows) for rows in product_plan.texts_to_encode.values())
    encoded -= sum(1 for f in new_failures if f.source and f.modality == "image")  # photos that did not decode
    return RunStats(encoded=encoded, reused=sum(p.reused for p in plans) + product_plan.reused,
                    resumed=sum(p.resumed for p in plans) + product_plan.resumed,
                    removed=sum(len(p.removed_ids) for p in plans) + len(product_plan.removed_ids) + dropped,
                    failed=len(new_failures))
