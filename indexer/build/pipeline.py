"""The indexer: sources -> encoder -> store -> index, composed by one runner that times each stage.

Runs are incremental and resumable: a re-run encodes only what is new or
changed (indexer/build/plan.py), vectors encoded along the way are committed in
journal chunks (store/journal.py), and the new state becomes visible in one
atomic commit (store/layout.py). One writer at a time (store/lock.py).
"""
from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import ray_engine, sources
from ..store import ann
from .commit import RunStats, commit_state, start_delta, writing
from .decode import DecodedStream
from .encode import EncodeSettings, ProgressFactory, Timer, encode_images_journaled, encode_texts_journaled
from ..errors import PYTHON, InvalidInputError, ModelMismatchError, Wording, command, option
from .fresh import FreshSegments
from ..imaging import DEFAULT_BACKGROUND, MAX_PIXELS, check_decode_mode, describe_background, parse_background
from ..models import DEFAULT_MODEL, Encoder, LanguageTally, ModelIdentity, check_parity, load_encoder
from ..models.calibrate import Calibrating, recorded_table
from ..models.inference import rerun_way
from ..models.registry import recorded_spec
from .plan import ImagePlanner, RowIds
from .plan_products import ProductPlan, plan_products
from .plan_texts import CorpusTextPlanner
from .ray_engine import RaySettings
from ..store import Failure, IndexDir, ItemRow, Manifest
from ..store.journal import Journal
from ..store.layout import URL_PHOTOS
from ..store.lock import WriterLock
from ..store.manifest import FORMAT_VERSION, Source
from ..store.segments import check_vector_dtype
from ..store.tables import items_table, read_failures
from ..store.words import words_setting
from .stored import StoredState, load_state
from .sync import SourcePlan, check_replace, column_typing, named_sources, plan_sources, reading_options
from .unchanged import fingerprint, nothing_changed, skip_unchanged_corpora
from .calibration_sample import run_calibrating
from .warm_start import WarmStart

__all__ = ["IndexConfig", "IndexReport", "build_index"]


@dataclass
class IndexConfig:
    images: list[Path] = field(default_factory=list)
    texts: list[Path] = field(default_factory=list)
    text_column: str | None = None  # for the corpora named in `texts`; None: as recorded, else "text"
    encoding: str | None = None  # likewise; None: as recorded, else utf-8
    image_column: str | None = None  # likewise; a column naming each row's photo makes the rows products
    id_column: str | None = None  # likewise; a column of keys: a row is the same item exactly when its key is
    replace_sources: bool = False  # the sources named become the index's whole set
    model: str | None = None  # None: the existing index's model, else the registry default
    pretrained: str | None = None
    device: str | None = None
    # How the model runs on a CPU (models/inference.py): "torch" | "onnx" | "auto", "fp32" | "bf16" | "int8" |
    # "auto"; None: as the index records, else auto (the fastest way measured to hold parity with fp32)
    runtime: str | None = None
    precision: str | None = None
    batch_size: int = 64
    workers: int | None = None
    index_type: str = "auto"
    vectors: str | None = None  # storage of vectors: "float32" or "float16"; None: as recorded, else float32
    memory_budget: int | str | None = None  # bytes (or "4G") the ANN indexes may use when searched; None: as recorded
    max_pixels: int = MAX_PIXELS
    image_decode: str | None = None  # "reduced" | "exact"; None: as recorded, else reduced (imaging.DECODE_MODES)
    # What transparent pixels are laid on: "white", "#RRGGBB", any colour Pillow names; None: as recorded, else
    # white. Once completed from the index: "#rrggbb", or None for an index from before (alpha dropped).
    background: str | None = None
    retry_failed: bool = False
    journal_every: int = 512  # items encoded between resume points
    engine: str = "local"  # "ray": decode and encode on a Ray cluster (indexer/build/ray_engine.py)
    ray_address: str | None = None  # None: a local Ray with this machine's cores
    ray_actors: int | None = None  # encoding actors, each holding the model; None: one per GPU, else per CPU core
    # Typing the tables named in `texts` (None: as recorded, else the defaults):
    na_values: Sequence[str] | str | None = None  # cells meaning missing (sources.DEFAULT_NA_VALUES); [] only empty
    column_types: dict[str, str] | str | None = None  # set, not inferred: {"price": "float", "zip": "str"}; {} clears
    delimiter: str | None = None  # of the CSV and TSV tables named: , ; | or tab; None: as recorded, else sniffed
    decimal: str | None = None  # their numbers' decimal mark, . or ,; None: as recorded, else as the table shows
    # Photo cells that are http(s) URLs are fetched (sources/photo_urls.py); at a private, loopback or link-local
    # address only if allowed (an unattended run must not read what only this machine reaches). None: as
    # recorded, else refused.
    allow_private_urls: bool | None = None
    # The table columns whose cells are searched as words, beside each item's text and key (store/words.py);
    # None: as recorded, else every text column.
    lexical_columns: list[str] | None = None


@dataclass
class IndexReport:
    path: Path
    counts: dict[str, int]
    recorded_failures: list[Failure]  # as the index records them: reasons name options as placeholders
    seconds: float
    stage_seconds: dict[str, float]
    device: str | None  # None: the model was not loaded (nothing to encode)
    model: str
    stats: RunStats
    committed: bool
    columns: dict[str, list[sources.ColumnInfo]] = field(default_factory=dict)  # per corpus read: its columns
    inference_note: str | None = None  # why the model ran another way than asked (a runtime not installed)
    without_photo: int = 0  # products held with their text alone: an empty image cell, or a photo not read
    dialects: dict[str, sources.Dialect] = field(default_factory=dict)  # per CSV or TSV table read: its dialect
    url_photos: sources.URLCounts = field(default_factory=sources.URLCounts)  # photos named by URL, this run
    language_note: str | None = None  # where many texts encoded are in a language the model does not read
    calibration_note: str | None = None  # where this run measured the ways the model runs here (calibrate.py)

    @property
    def failures(self) -> list[Failure]:
        """What the index could not take, and why, in Python's terms."""
        return self.worded_failures(PYTHON)

    def worded_failures(self, wording: Wording) -> list[Failure]:
        """The failures with their reasons in a caller's terms (the command line names --max-pixels)."""
        return [f.worded(wording) for f in self.recorded_failures]

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
    return _Run(IndexDir(Path(out)), config, progress, encoder).execute()


@dataclass
class _Run:
    """One call of build_index: its options checked before the writer lock; its sources planned, read and
    built under it, once."""

    index_dir: IndexDir
    config: IndexConfig
    progress: ProgressFactory | None
    given_encoder: Encoder | None
    timer: Timer = field(default_factory=Timer)
    started: float = field(default_factory=time.perf_counter)

    def execute(self) -> IndexReport:
        self.index_dir.check_writable_target()
        previous = self.index_dir.read_manifest() if self.index_dir.is_index() else None
        config = self.config = _with_recorded_settings(self.config, previous)
        ann.choose_ann(0, config.index_type)  # an unknown index type fails now, not after hours of encoding
        check_engine(config.engine, config.ray_actors, config.ray_address)
        check_vector_dtype(config.vectors)
        named = named_sources(config.images, config.texts, config.text_column, config.encoding, config.image_column,
                              config.id_column, typing=_named_typing(config))
        check_replace(config.replace_sources, named)
        created = not self.index_dir.root.exists()
        try:
            with WriterLock(self.index_dir.root):
                return self._locked(named)
        except BaseException:
            if created and not self.index_dir.is_index() and not Journal.has_saved_work(self.index_dir.root) \
                    and not self.index_dir.has_fetched_photos():
                shutil.rmtree(self.index_dir.root, ignore_errors=True)  # nothing committed, nothing to resume
            raise

    def _locked(self, named: list[Source]) -> IndexReport:
        """The sources planned against the index as of taking the lock, read, and built with the model."""
        previous = self.index_dir.read_manifest() if self.index_dir.is_index() else None
        recorded = previous.sources if previous else []
        source_plan = skip_unchanged_corpora(plan_sources(named, recorded, self.config.replace_sources), recorded)
        with self.timer.stage("read_sources"):
            found = read_sources(self.index_dir.root, source_plan.synced, recorded,
                                 sources.URLFetching(self.index_dir.url_photos, bool(self.config.allow_private_urls)))
        if previous is None and found.empty:
            raise InvalidInputError(f"nothing to index; give an image folder, {option('texts', 'FILE')}, or both")
        source_plan = SourcePlan([replace(s, fingerprint=found.fingerprints[s.key]) if s.key in found.fingerprints
                                  else s for s in source_plan.sources], source_plan.synced, source_plan.unchanged)
        settings = self._encode_settings()
        warm = WarmStart(self.config.model, found.image_paths[:IMAGE_BATCH], settings, self.config.pretrained) \
            if previous is None and self.given_encoder is None and found.image_paths and settings.ray is None else None
        try:
            calibrating = run_calibrating(found.image_paths, found.products, found.corpora, self.progress,
                                          self.config.max_pixels, self.config.background)
            model = _EncoderOnDemand(self.config, previous, self.index_dir, self.given_encoder, self.timer, warm,
                                     calibrating)
            return _Build(self, previous, source_plan, found, settings, model).execute()
        finally:
            if warm is not None:
                warm.close()

    def _encode_settings(self) -> EncodeSettings:
        config = self.config
        on_ray = ray_engine.RayRun(RaySettings(config.ray_address, config.ray_actors),
                                   Journal.folder_of(self.index_dir.root)) if config.engine == "ray" else None
        return EncodeSettings(config.batch_size, config.workers, config.max_pixels, config.journal_every,
                              config.image_decode, config.background, ray=on_ray)


@dataclass
class FoundItems:
    """What the synced sources hold now; text corpora are only named here and streamed while planning."""

    image_paths: list[str]
    corpora: list[sources.PreparedCorpus]  # text corpora, checked; streamed while planning
    products: list[sources.TextRecord]  # rows of tables read with an image column
    skipped_rows: list[Failure]  # table rows skipped, and what photo folders hide (a folder unlisted, a broken link)
    fingerprints: dict[tuple[str, str], str | None] = field(default_factory=dict)  # corpora as they were read
    tables: dict[tuple[str, str], sources.Corpus] = field(default_factory=dict)  # tables of products, by source key
    url_photos: sources.URLCounts = field(default_factory=sources.URLCounts)

    @property
    def empty(self) -> bool:
        return not self.image_paths and not self.corpora and not self.products

    def columns(self) -> dict[tuple[str, str], list[sources.ColumnInfo]]:
        """Each corpus read's columns as typed (a streamed Parquet file's are complete once it was streamed)."""
        found = {("texts", str(c.path)): c.column_info() for c in self.corpora}
        found.update({key: table.columns for key, table in self.tables.items()})
        return found

    def dialects(self) -> dict[str, sources.Dialect]:
        """How each CSV or TSV table read was split into cells and its numbers read, by path."""
        found = {str(c.path): c.dialect for c in self.corpora if c.dialect}
        found.update({key[1]: table.dialect for key, table in self.tables.items() if table.dialect})
        return found


def read_sources(index: Path, synced: list[Source], recorded: list[Source],
                 fetching: sources.URLFetching | None = None) -> FoundItems:
    """Read the sources a run syncs. A newly added folder must hold images, and a newly added corpus rows;
    a recorded one may be emptied (its items are then removed). A table's photo URLs are fetched now."""
    known = {s.key for s in recorded}
    fetching = fetching or sources.URLFetching(index / URL_PHOTOS)
    url_photos = sources.URLCounts()
    image_paths, corpora, products, skipped, fingerprints, tables = [], [], [], [], {}, {}
    for source in synced:
        if source.kind == "images":
            if source.key in known and not os.path.exists(source.path):
                raise InvalidInputError(
                    f"image folder {source.path}, a source of this index, does not exist; check the path (or, if "
                    f"it is gone for good, drop it and its items with {command('remove', f'{index} --source {source.path}')})")
            walk = sources.walk_images(source.path)
            if not walk.images and source.key not in known:
                raise sources.no_images_error([source.path])
            image_paths.extend(walk.images)
            skipped.extend(Failure(path, "image", reason) for path, reason in walk.problems)
            continue
        fingerprints[source.key] = fingerprint(source.path)  # before reading: a later edit is seen next run
        if not source.image_column:
            prepared = sources.prepare_corpus(source.path, *reading_options(source)[:2], column_typing(source),
                                              source.id_column, source.delimiter)
            if not prepared.rows and source.key not in known:
                raise sources.empty_corpus_error(source.path)
            corpora.append(prepared)
            continue
        corpus = sources.read_corpus(source.path, *reading_options(source), id_column=source.id_column,
                                     typing=column_typing(source), delimiter=source.delimiter)
        if not corpus.records and not corpus.skipped and source.key not in known:
            raise sources.empty_corpus_error(source.path)
        corpus, counts = sources.fetch_photo_urls(corpus, source.path, fetching)
        url_photos.add(counts)
        products.extend(corpus.records)
        skipped.extend(_skipped(corpus.skipped))
        tables[source.key] = corpus
    return FoundItems(sorted(set(image_paths)), corpora, products, skipped, fingerprints, tables, url_photos)


def _named_typing(config: IndexConfig) -> dict:
    """The missing markers and column types given for the corpora named (in the CLI's forms or as a list and
    a dict), checked; those not given are left to the record."""
    given = {}
    if config.na_values is not None:
        na_values = config.na_values
        given["na_values"] = sources.parse_na_values(na_values) if isinstance(na_values, str) else tuple(na_values)
    if config.column_types is not None:
        types = config.column_types
        given["column_types"] = sources.parse_column_types(types) if isinstance(types, str) else \
            sources.check_column_types(types)
    if config.delimiter is not None:
        given["delimiter"] = sources.check_delimiter(config.delimiter)
    if config.decimal is not None:
        given["decimal"] = sources.check_decimal(config.decimal)
    if given and not config.texts:  # else silently unused: the recorded tables keep their own
        raise InvalidInputError(f"{option(next(iter(given)))} applies to the tables named in the same run; "
                                f"name them with {option('texts', 'FILE')}")
    return given


def _with_columns(sources_held: list[Source], found: FoundItems) -> list[Source]:
    """The sources, each corpus read this run recording its columns as typed."""
    columns = found.columns()
    return [replace(s, columns=[c.to_record() for c in columns[s.key]]) if s.key in columns else s
            for s in sources_held]


def _without_photo(held: list[Source], failures: list[Failure]) -> int:
    """Products held without a photo: rows whose image cell is empty (the image column's nulls, as its table's
    last read recorded them) and photos that could not be read (each a failure naming its table)."""
    empty = sum(column.get("nulls", 0) for source in held if source.image_column for column in source.columns or ()
                if column["name"] == source.image_column)
    return empty + sum(f.modality == "image" and f.source is not None for f in failures)


def _skipped(rows: list[sources.SkippedRow]) -> list[Failure]:
    return [Failure(s.source, "text", s.reason, line=s.line, source=s.source) for s in rows]


class _EncoderOnDemand:
    """Loads the model the first time it is needed: a re-run with nothing new never loads it."""

    def __init__(self, config: IndexConfig, previous: Manifest | None, index_dir: IndexDir,
                 given: Encoder | None, timer: Timer, warm: WarmStart | None = None,
                 calibrating: Calibrating | None = None):
        self._config, self._previous, self._dir, self._timer = config, previous, index_dir, timer
        self._encoder, self._warm, self._calibrating = given, warm, calibrating
        self.languages = LanguageTally()  # of the texts encoded this run
        if given is not None:
            _check_same_model(index_dir, previous, given)
        elif not self._same_as_recorded():
            self.get()

    def _same_as_recorded(self) -> bool:
        recorded = self._previous.model if self._previous else None
        return recorded is not None and self._config.model == recorded.spec \
            and self._config.pretrained in (None, recorded.pretrained) \
            and self._way() in ((None, None), (recorded.runtime, recorded.precision))  # another way is checked now

    def _way(self) -> tuple[str | None, str | None]:
        """The runtime and precision asked for; where neither is, the index's own (a GPU's is auto's, and so is a
        way per tower: auto chose it, and reads the same measurements again)."""
        asked = (self._config.runtime, self._config.precision)
        recorded = self._previous.model if self._previous else None
        way = rerun_way(recorded) if recorded is not None and recorded.spec == self._config.model else None
        return asked if asked != (None, None) or way is None or way.split else (way.runtime, way.precision)

    @property
    def identity(self) -> ModelIdentity:
        return self._encoder.identity if self._encoder else self._previous.model

    @property
    def note(self) -> str | None:
        return getattr(self._encoder, "inference_note", None)

    @property
    def calibration(self) -> dict | None:
        """What was measured on this machine to choose the way the model ran (models/calibrate.py); None where
        it was not loaded, or ran a way nothing was measured for (a GPU, your own encoder)."""
        found = getattr(self._encoder, "calibration", None)
        return found.to_dict() if found is not None else None

    @property
    def calibration_note(self) -> str | None:
        """What measuring cost and chose, where this run measured."""
        if self._encoder is None or self._calibrating is None:
            return None
        return self._calibrating.note(self._encoder.identity.inference)

    @property
    def device(self) -> str | None:
        """Where the model ran; None when nothing needed encoding and it was never loaded."""
        return self._encoder.device if self._encoder else None

    def get(self) -> Encoder:
        if self._encoder is None:
            load = lambda: load_encoder(self._config.model, self._config.pretrained, self._config.device,  # noqa: E731
                                        *self._way(), calibrating=self._calibrating)
            with self._timer.stage("load_model"):
                self._encoder = self._warm.load(load) if self._warm else load()
            _check_same_model(self._dir, self._previous, self._encoder)
        return self._encoder

    def decoding(self, paths: list[str]) -> DecodedStream | None:
        """The workers already decoding `paths` while the model loaded, if they are."""
        return self._warm.take(paths, self.get()) if self._warm else None


@dataclass
class _Output:
    """Where a build's work goes: the resume journal, the row ids it hands out, the new segments."""

    journal: Journal
    ids: RowIds
    fresh: FreshSegments


@dataclass
class _Build:
    """A run's work under the writer lock: the synced sources' items planned against the stored ones,
    what changed encoded, and the new state committed."""

    run: _Run
    previous: Manifest | None
    source_plan: SourcePlan
    found: FoundItems
    settings: EncodeSettings
    model: _EncoderOnDemand

    @property
    def config(self) -> IndexConfig:
        return self.run.config

    @property
    def timer(self) -> Timer:
        return self.run.timer

    @property
    def progress(self) -> ProgressFactory | None:
        return self.run.progress

    def execute(self) -> IndexReport:
        index_dir, previous, found = self.run.index_dir, self.previous, self.found
        recorded_settings = {"index_type": self.config.index_type, "vectors": self.config.vectors,
                             "memory_budget": self.config.memory_budget, "image_decode": self.config.image_decode,
                             "background": self.config.background,
                             "allow_private_urls": self.config.allow_private_urls or None,  # None: refused
                             "words": words_setting(self.config.lexical_columns)}
        if previous is not None and not Journal.has_saved_work(index_dir.root) and nothing_changed(
                index_dir, previous, self.source_plan, found.image_paths, recorded_settings,
                self.config.retry_failed, found.skipped_rows):
            return _record_idle_run(index_dir, previous, self.source_plan, self.model, self.timer, self.run.started)
        state = load_state(index_dir, previous)
        scoped, failures_kept, dropped = _split_by_source(state, self.source_plan)
        add_in_shards = self.settings.ray.add_in_shards if self.settings.ray else None
        delta = start_delta(index_dir, self.model.identity.dim, recorded_settings, _expected_size(previous, found),
                            timer=self.timer, ann_add=add_in_shards)
        out = _Output(Journal(index_dir.root, self.model.identity).open(), RowIds(state.next_row_id), delta.fresh)
        with writing(index_dir), _engine(self.settings):
            images = self._stream_images(ImagePlanner(scoped, out.journal, out.ids, self.config.retry_failed), out)
            with self.timer.stage("plan"):
                product_plan = plan_products(found.products, scoped, out.journal, out.ids, self.config.retry_failed)
            self._encode_planned_products(product_plan, out.journal)
            products = _product_rows(scoped, product_plan, delta.fresh, self.model.identity.dim)
            texts = self._stream_texts(state, out)
            _drop_texts_now_products(texts, state, self.source_plan)
            known = set(state.failures)
            skipped = found.skipped_rows + texts.skipped
            # Found again as recorded (an empty row, a photo still missing): skipped as before, not failed anew.
            sent = product_plan.photos_to_encode
            photos = [f for f in product_plan.new_failures if f.path in sent or f not in known]
            new_failures = images.failures + photos + [f for f in skipped if f not in known]
            delta.gone = np.concatenate([images.gone, products, texts.gone, dropped])
            delta.stats = _stats(images, product_plan, texts, new_failures, len(dropped))
            delta.stats.reused += len(state.texts.of_sources({s.path for s in self.source_plan.unchanged}))
            delta.failures = failures_kept + images.carried_failures + product_plan.carried_failures + \
                images.failures + product_plan.new_failures + [f for f in skipped if f not in known] + \
                [f for f in skipped if f in known]
            delta.sources, delta.next_row_id = _with_columns(self.source_plan.sources, found), out.ids.next
            _check_lexical_columns(self.config.lexical_columns, delta.sources)
            delta.calibration = self.model.calibration
            with self.timer.stage("write"):  # on Ray still: the last segment's IVF lists are filled there
                delta.stats.seconds = round(time.perf_counter() - self.run.started, 3)
                manifest, committed = commit_state(index_dir, self.model.identity, previous, state, delta)
        out.journal.clear()
        sources.drop_other_tables(index_dir.url_photos, [s.path for s in delta.sources if s.image_column])
        return IndexReport(index_dir.root, dict(manifest.counts), delta.failures,
                           time.perf_counter() - self.run.started, self.timer.seconds, self.model.device,
                           self.model.identity.describe(), delta.stats, committed,
                           {key[1]: infos for key, infos in found.columns().items()}, self.model.note,
                           _without_photo(delta.sources, delta.failures), found.dialects(), found.url_photos,
                           self.model.languages.note(self.model.identity), self.model.calibration_note)

    def _stream_images(self, planner: ImagePlanner, out: _Output) -> _ImageRun:
        """The image paths a batch at a time: planned against the stored images, encoded, handed to the writer."""
        model, paths, settings, timer, progress = self.model, self.found.image_paths, self.settings, self.timer, \
            self.progress
        journal, ids, fresh = out.journal, out.ids, out.fresh
        run, dim = _ImageRun(np.zeros(0, np.int64)), model.identity.dim
        bar = _OneBar(progress)
        for start in range(0, len(paths), IMAGE_BATCH):
            with timer.stage("plan"):
                plan = planner.plan(paths[start:start + IMAGE_BATCH])
            run.kept, run.reused, run.resumed = run.kept + plan.kept, run.reused + plan.reused, run.resumed + plan.resumed
            run.carried_failures += plan.carried_failures
            if plan.to_encode:
                result = encode_images_journaled(model.get(), plan.to_encode, journal, settings, timer,
                                                 bar.factory(len(paths)) if progress else None,
                                                 stream=model.decoding(plan.to_encode))
                for image, vector in zip(result.images, result.vectors):
                    row_id = plan.kept_ids[image.path] if image.path in plan.kept_ids else ids.take()
                    plan.write(ItemRow(row_id=row_id, modality="image", path=image.path,
                                       content_hash=image.content_hash, size=image.size, mtime=image.mtime,
                                       width=image.width, height=image.height), vector)
                run.failures += result.failures
                run.encoded += len(result.images)
                run.removed += sum(f.path in plan.kept_ids for f in result.failures)  # its old copy is gone too
            if plan.rows:
                fresh.add(items_table(plan.rows), {"image": _matrix([r.row_id for r in plan.rows],
                                                                    dict(zip((r.row_id for r in plan.rows), plan.vectors)),
                                                                    dim)})
        bar.close()
        unclaimed = planner.unclaimed()
        run.removed += len(unclaimed)
        run.gone = np.concatenate([unclaimed, np.array(planner.replaced, np.int64)])
        return run

    def _encode_planned_products(self, plan: ProductPlan, journal: Journal) -> None:
        model, settings, timer, progress = self.model, self.settings, self.timer, self.progress
        if plan.photos_to_encode:
            named = {plan.files.get(path, path): path for path in plan.photos_to_encode}  # file read -> its name
            result = encode_images_journaled(model.get(), list(named), journal, settings, timer,
                                             progress, label="photos")
            for image, vector in zip(result.images, result.vectors):
                for row in plan.photos_to_encode[named[image.path]]:
                    row.image_hash, row.size, row.mtime = image.content_hash, image.size, image.mtime
                    row.width, row.height = image.width, image.height
                    plan.photo_vectors[row.row_id] = vector
            for failure in result.failures:
                for row in plan.photos_to_encode[named[failure.path]]:
                    plan.new_failures.append(replace(failure, path=row.path, line=plan.lines[row.row_id],
                                                     source=row.source))
        if plan.texts_to_encode:
            texts = list(plan.texts_to_encode)
            model.languages.add(texts)
            vectors = encode_texts_journaled(model.get(), texts, journal, settings, timer, progress, label="descriptions")
            for text, vector in zip(texts, vectors):
                for row in plan.texts_to_encode[text]:
                    plan.text_vectors[row.row_id] = vector
        for row in plan.rows:
            if row.row_id not in plan.photo_vectors:  # no photo, or it could not be read: the product is its text
                row.image_hash = row.size = row.mtime = row.width = row.height = None

    def _stream_texts(self, state: StoredState, out: _Output) -> _TextRun:
        """Each corpus a batch at a time: read, planned against the stored texts, encoded, handed to the writer."""
        model, corpora, settings, timer, progress = self.model, self.found.corpora, self.settings, self.timer, \
            self.progress
        journal, ids, fresh = out.journal, out.ids, out.fresh
        run, gone = _TextRun(np.zeros(0, np.int64)), []
        dim = model.identity.dim
        for corpus in corpora:
            planner = CorpusTextPlanner(str(corpus.path), state, journal, ids, dim, keyed=corpus.id_column is not None)
            bar, seen = None, 0
            batches = corpus.batches()
            for batch in _timed(batches, timer, "read_sources"):
                run.skipped.extend(_skipped(batch.skipped))
                with timer.stage("plan"):
                    planned = planner.plan(batch)
                run.kept, run.reused, run.resumed = run.kept + planned.kept, run.reused + planned.reused, \
                    run.resumed + planned.resumed
                fresh.add(planned.known, {"text": (planned.known.column("row_id").to_numpy(), planned.known_vectors)})
                if len(planned.to_encode):
                    if bar is None and progress:
                        bar = progress("texts", max(corpus.rows, seen + len(batch.texts)))
                        bar.update(seen)
                    texts = planned.to_encode.column("text").to_pylist()
                    model.languages.add(texts)
                    vectors = encode_texts_journaled(model.get(), texts, journal, settings, timer, progress, bar=bar,
                                                     hashes=planned.to_encode.column("content_hash").to_pylist())
                    fresh.add(planned.to_encode, {"text": (planned.to_encode.column("row_id").to_numpy(),
                                                           np.stack(vectors) if vectors else np.zeros((0, dim)))})
                    run.encoded += len(texts)
                if bar is not None:
                    bar.update(len(batch.texts) - len(planned.to_encode))
                seen += len(batch.texts)
            if bar is not None:
                bar.close()
            unclaimed = planner.unclaimed()
            run.removed += len(unclaimed)
            gone += [unclaimed, *planner.replaced]
        run.gone = np.concatenate(gone) if gone else run.gone
        return run


@contextmanager
def _engine(settings: EncodeSettings):
    """Ray, for a run on it: started (or joined) when the run first has work for it, stopped (or left) at
    the end, the commit included (a segment's IVF lists are filled there)."""
    try:
        yield
    finally:
        if settings.ray is not None:
            settings.ray.close()


def _check_lexical_columns(named: list[str] | None, held: list[Source]) -> None:
    """Each column named to be searched as words is a column of one of the tables (before anything is committed:
    the encoded work stays in the journal for the run that names them right)."""
    columns = {c["name"] for source in held for c in source.columns or []} | \
        {source.text_column for source in held if source.text_column}  # always searched: naming it is no error
    unknown = [name for name in named or [] if name not in columns]
    if unknown:
        raise InvalidInputError(f"no table column {unknown[0]!r} for {option('lexical_columns')}; the tables' "
                                f"columns: {', '.join(sorted(columns)) or 'none'}")


def _expected_size(previous: Manifest | None, found: FoundItems) -> int:
    """About how many items the index will hold: each segment's share of a memory budget follows from it."""
    corpora = sum(c.rows for c in found.corpora)
    return sum(previous.counts.values()) + corpora if previous else \
        corpora + len(found.image_paths) + len(found.products)


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
                       timer.seconds, model.device, model.identity.describe(), stats, False,
                       without_photo=_without_photo(source_plan.sources, failures))


def _split_by_source(state: StoredState, source_plan: SourcePlan) -> tuple[StoredState, list[Failure], np.ndarray]:
    """(the stored state scoped to what this run syncs: the planners' input, failures of the sources it
    leaves as they are, row ids of items no source holds any more)."""
    scoped_rows, dropped = [], []
    for row in state.rows:
        owner = source_plan.owner_of(row)
        if owner == "synced":
            scoped_rows.append(row)
        elif owner == "dropped":
            dropped.append(row.row_id)
        # "kept": another source holds it; it stays in its segment untouched
    gone_corpora = {name for name in state.texts.source_names if source_plan.owner("text", name) == "dropped"}
    failures = {"synced": [], "kept": [], "dropped": []}
    for failure in state.failures:
        failures[source_plan.owner_of(failure)].append(failure)
    synced_images = _held_by(state.images.paths, source_plan.synced)
    dropped_images = state.images.row_ids[~synced_images & ~_held_by(state.images.paths, source_plan.sources)]
    scoped = replace(state, rows=scoped_rows, failures=failures["synced"], reusable=state.rows,
                     images_in_scope=synced_images)
    return scoped, failures["kept"], np.concatenate([np.array(dropped, np.int64), dropped_images,
                                                     state.texts.of_sources(gone_corpora)])


def _held_by(paths: list[str], held: list[Source]) -> np.ndarray:
    """Which paths lie in one of the image folders of `held` (as SourcePlan.owner decides, for arrays)."""
    inside = np.zeros(len(paths), bool)
    folders = [s.path for s in held if s.kind == "images"]
    if not folders or not paths:
        return inside
    column = pa.array(paths, pa.string())
    for folder in folders:
        prefix = folder.rstrip(os.sep) + os.sep
        inside |= pc.or_(pc.equal(column, folder), pc.starts_with(column, prefix)).to_numpy(zero_copy_only=False)
    return inside


def _with_recorded_settings(config: IndexConfig, previous: Manifest | None) -> IndexConfig:
    """The caller's config, completed from what the index recorded (the caller's object is not changed)."""
    budget = ann.parse_memory(str(config.memory_budget)) if config.memory_budget is not None else None
    check_decode_mode(config.image_decode)
    background = parse_background(config.background) if config.background is not None else None
    if config.allow_private_urls is None:  # an unattended re-run fetches as the run that allowed it did
        config = replace(config, allow_private_urls=bool(previous and previous.settings.get("allow_private_urls")))
    if config.lexical_columns is None and previous is not None:
        config = replace(config, lexical_columns=(previous.settings.get("words") or {}).get("columns"))
    if previous is None:
        return replace(config, model=config.model or DEFAULT_MODEL, vectors=config.vectors or "float32",
                       memory_budget=budget, image_decode=config.image_decode or "reduced",
                       background=background or DEFAULT_BACKGROUND)
    _check_named_model(config.model, previous)
    if config.model in (None, previous.model.spec) and config.pretrained in (None, previous.model.pretrained):
        from ..models.openclip import check_weights

        check_weights(previous.model)  # before anything is read: a re-run with nothing new would not load it
    config = replace(config, model=config.model or previous.model.spec,
                     vectors=_recorded_vectors(config.vectors, previous),
                     memory_budget=budget if budget is not None else previous.settings.get("memory_budget"),
                     image_decode=_recorded_decode(config.image_decode, previous),
                     background=_recorded_background(config.background, background, previous))
    if config.index_type == "auto":
        config = replace(config, index_type=previous.settings.get("index_type", "auto"))
    return config


ENGINES = ("local", "ray")


def check_engine(engine: str, actors: int | None, address: str | None = None) -> None:
    if engine not in ENGINES:
        raise InvalidInputError(f"unknown engine {engine!r}; use {' or '.join(ENGINES)}")
    if actors is not None and actors < 1:
        raise InvalidInputError(f"{option('ray_actors', actors)}: at least 1 encoding actor is needed")
    if engine == "ray":  # Ray itself starts only once there is work for it
        ray_engine.check_available(address)


def _recorded_decode(asked: str | None, previous: Manifest) -> str:
    """An index keeps the decoding it was built with (indexes from before the choice decoded exactly):
    vectors of one index must come from the same pixels."""
    recorded = previous.settings.get("image_decode", "exact")
    _check_recorded("image_decode", asked, recorded, f"decodes images {recorded}")
    return recorded


def _recorded_background(asked: str | None, colour: str | None, previous: Manifest) -> str | None:
    """An index keeps the background it was built with: its vectors were encoded from those pixels. An index
    from before backgrounds were recorded dropped alpha, and still does (None), so its vectors stay comparable."""
    recorded = previous.background
    if colour is not None and colour != recorded:
        if recorded is None:
            what, why = "ignores transparency", "built before backgrounds were recorded"
        else:
            what, why = f"lays transparent pixels {describe_background(recorded)}", "recorded when it was built"
        _refuse_other("background", asked, what, why)
    return recorded


def _recorded_vectors(asked: str | None, previous: Manifest) -> str:
    """An index keeps the vector storage it was built with: its segments are written in it."""
    recorded = previous.settings.get("vectors", "float32")
    _check_recorded("vectors", asked, recorded, f"stores vectors as {recorded}")
    return recorded


def _check_recorded(setting: str, asked: str | None, recorded: str, what: str) -> None:
    if asked not in (None, recorded):
        _refuse_other(setting, asked, what, "recorded when it was built")


def _refuse_other(setting: str, asked: str, what: str, why: str) -> None:
    raise InvalidInputError(
        f"this index {what} ({why}); {option(setting, asked)} applies to a new index: "
        f"index into a new {option('out')} folder, or leave {option(setting)} out"
    )


def _check_named_model(spec: str | None, previous: Manifest) -> None:
    """Another model named for an existing index is refused before it loads (seconds; or a missing-weights
    error that hides the real problem). The loaded encoder is checked again against the whole identity."""
    known = recorded_spec(spec) if spec else None
    if known is not None and known != previous.model.spec:
        raise ModelMismatchError(f"this index was built with {previous.model.describe()}, not {spec}; "
                                 f"index into a new {option('out')} folder, or leave {option('model')} out")


def _check_same_model(index_dir: IndexDir, previous: Manifest | None, encoder: Encoder) -> None:
    if previous and previous.model.compatibility_key() != encoder.identity.compatibility_key():
        raise ModelMismatchError(
            f"{index_dir.root} was built with {previous.model.describe()}, not {encoder.identity.describe()}; "
            f"index into a new {option('out')} folder, or use the index's model"
        )
    if previous:
        check_parity(previous.model, encoder.identity, recorded_table(previous.calibration))


IMAGE_BATCH = 4096  # image paths planned, then encoded, at a time


@dataclass
class _ImageRun:
    """What streaming the synced folders' images did."""

    gone: np.ndarray  # stored image rows removed, or rewritten under their row id
    failures: list[Failure] = field(default_factory=list)
    carried_failures: list[Failure] = field(default_factory=list)
    removed: int = 0
    kept: int = 0
    reused: int = 0
    resumed: int = 0
    encoded: int = 0


class _OneBar:
    """One progress bar over every batch of a stream (the encoder asks for a bar per call)."""

    def __init__(self, progress):
        self._progress, self._bar = progress, None

    def factory(self, total: int):
        def shared(label: str, _count: int):
            if self._bar is None:
                self._bar = self._progress(label, total)
            return _Unclosed(self._bar)
        return shared

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class _Unclosed:
    def __init__(self, bar):
        self._bar = bar

    def update(self, n: int) -> None:
        self._bar.update(n)

    def close(self) -> None:
        pass  # the stream closes its bar at its end


def _product_rows(scoped: StoredState, plan: ProductPlan, fresh: FreshSegments, dim: int) -> np.ndarray:
    """New or changed products go to the new segments; returns the stored product rows removed or replaced."""
    stored = {r.row_id: r for r in scoped.rows}
    # A planner that kept a row passes the stored object; an equal row has equal content, so equal vectors.
    # Rows written before lines were left out of rows still hold one: it is no change.
    changed = [r for r in plan.rows if (old := stored.get(r.row_id)) is not r
               and (old is None or replace(old, line=None) != r)]
    kept = {r.row_id for r in plan.rows}
    gone = [i for i in stored if i not in kept] + [r.row_id for r in changed if r.row_id in stored]
    if changed:
        by_set = {"product-image": plan.photo_vectors, "product-text": plan.text_vectors}
        fresh.add(items_table(changed), {s: _matrix([r.row_id for r in changed if r.row_id in v], v, dim)
                                         for s, v in by_set.items()})
    return np.array(gone, np.int64)


def _matrix(row_ids: list[int], vectors: dict[int, np.ndarray], dim: int) -> tuple[np.ndarray, np.ndarray]:
    matrix = np.empty((len(row_ids), dim), np.float32)
    for position, row_id in enumerate(row_ids):
        matrix[position] = vectors[row_id]
    return np.array(row_ids, np.int64), matrix


@dataclass
class _TextRun:
    """What streaming the synced corpora did."""

    gone: np.ndarray  # stored text rows removed, or rewritten under their row id
    removed: int = 0
    kept: int = 0
    reused: int = 0
    resumed: int = 0
    encoded: int = 0
    skipped: list[Failure] = field(default_factory=list)


def _drop_texts_now_products(texts: _TextRun, state: StoredState, source_plan: SourcePlan) -> None:
    """A corpus read again with an image column is a table of products now: its texts go. (Products of a
    table read again without one go with the products no row claimed.)"""
    tables = {s.path for s in source_plan.synced if s.kind == "texts" and s.image_column}
    orphans = state.texts.of_sources(tables)
    texts.removed += len(orphans)
    texts.gone = np.concatenate([texts.gone, orphans])


def _timed(batches, timer: Timer, stage: str):
    """The batches of a stream, the time spent producing each counted to `stage`."""
    iterator = iter(batches)
    while True:
        with timer.stage(stage):
            batch = next(iterator, None)
        if batch is None:
            return
        yield batch


def _stats(images: _ImageRun, product_plan: ProductPlan, texts: _TextRun, new_failures: list[Failure],
           dropped: int) -> RunStats:
    """Counts of vectors: a product's photo and description count apart."""
    encoded = images.encoded + texts.encoded
    encoded += sum(len(rows) for rows in product_plan.photos_to_encode.values())
    encoded += sum(len(rows) for rows in product_plan.texts_to_encode.values())
    sent = product_plan.photos_to_encode  # a photo missing at planning never was: it is only a failure
    encoded -= sum(1 for f in new_failures if f.source and f.modality == "image" and f.path in sent)  # did not decode
    return RunStats(encoded=encoded, reused=images.kept + images.reused + texts.kept + texts.reused + product_plan.reused,
                    resumed=images.resumed + texts.resumed + product_plan.resumed,
                    removed=images.removed + texts.removed + len(product_plan.removed_ids) + dropped,
                    failed=len(new_failures))
