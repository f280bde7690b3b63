"""An index directory on disk: segments, generations, and the manifest that commits one.

INDEX/manifest.json names the committed generation (INDEX/gen-NNNNNN/: the run's
failures and a copy of its manifest) and the segments it reads (INDEX/segments/).
A run writes its new segment and deletion files, fsyncs them, then replaces
manifest.json in one os.replace: a reader sees the old index or the new one, never
half of either. Files no kept generation refers to are collected after a commit.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import IndexNotReadyError, NotAnIndexError, command, option
from .lock import LOCK_FILE, running_writer
from .manifest import FORMAT_NAME, FORMAT_VERSION, Manifest
from .segments import SEGMENT_PREFIX, SEGMENTS_DIR, fsync_dir

MANIFEST = "manifest.json"
GENERATION_PREFIX = "gen-"
URL_PHOTOS = "url-photos"  # the copies of the photos tables link by URL, with their validators (build/sources)
STAGING_PREFIX = ".staging-"
KEEP_GENERATIONS = 2  # the new one, and the one a slow reader may still be opening


@dataclass(frozen=True)
class IndexDir:
    root: Path

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def is_index(self) -> bool:
        return self.manifest_path.is_file()

    def generation_path(self, generation: str) -> Path:
        return self.root / generation

    def read_manifest(self) -> Manifest:
        if not self.root.exists():
            raise NotAnIndexError(f"{self.root} does not exist; build one with {command('index')}")
        if not self.root.is_dir():
            raise NotAnIndexError(f"{self.root} is a file, not an index folder; give the folder that "
                                  f"{command('index')} wrote")
        if not self.is_index():
            self._raise_not_ready()
            raise NotAnIndexError(f"{self.root} is not an xmodal index (no {MANIFEST}); build one with {command('index')}")
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise NotAnIndexError(f"{self.manifest_path} is unreadable ({exc}); rebuild the index") from None
        if data.get("format") != FORMAT_NAME:
            raise NotAnIndexError(f"{self.root} is not an xmodal index; build one with {command('index')}")
        if int(data.get("format_version", 0)) > FORMAT_VERSION:
            raise NotAnIndexError(
                f"{self.root} was written by a newer xmodal (format {data['format_version']}); upgrade xmodal"
            )
        return Manifest.from_dict(data)

    def _raise_not_ready(self) -> None:
        """A folder holding only a first build's lock and journal is an index on its way, not garbage."""
        if not (self.root / LOCK_FILE).is_file() or not self._only_unfinished_run():
            return
        writer = running_writer(self.root)
        if writer is not None:
            raise IndexNotReadyError(f"{self.root} is being built (xmodal run pid {writer}) and has no commit yet; "
                                     "use it once that run has finished")
        raise IndexNotReadyError(f"the first build of {self.root} was interrupted before its first commit; "
                                 f"run the same {command('index')} again to resume it")

    def check_writable_target(self) -> None:
        """A new index may go into a missing folder, an empty one, or over an existing index."""
        if self.root.exists() and not self.root.is_dir():
            raise NotAnIndexError(f"{self.root} is a file; choose a folder for the index")
        if self.root.is_dir() and not self.is_index() and not self._only_unfinished_run():
            raise NotAnIndexError(
                f"{self.root} is a non-empty folder that is not an xmodal index; "
                f"choose a new or empty folder for {option('out')}"
            )

    def _only_unfinished_run(self) -> bool:
        """Empty, or holding nothing but what a first run that died left: it is resumable."""
        own = {".journal", MANIFEST, SEGMENTS_DIR, URL_PHOTOS}
        return all(p.name in own or p.name.startswith((LOCK_FILE, STAGING_PREFIX, GENERATION_PREFIX, f".{MANIFEST}."))
                   for p in self.root.iterdir())

    def new_staging(self) -> tuple[str, Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        number = self._next_generation_number()
        generation = f"{GENERATION_PREFIX}{number:06d}"
        return generation, _private_folder(self.root, generation)

    @property
    def url_photos(self) -> Path:
        return self.root / URL_PHOTOS

    def has_fetched_photos(self) -> bool:
        """Whether a run fetched photos here: a first run that died keeps them for the next."""
        return self.url_photos.is_dir() and any(self.url_photos.iterdir())

    @property
    def segments_path(self) -> Path:
        return self.root / SEGMENTS_DIR

    def new_segment_staging(self, generation: str, number: int) -> tuple[str, Path]:
        """The `number`th new segment of a commit, and a private folder to write it in before publishing.

        Named after the generation, whose numbers never repeat, so a name is never reused.
        """
        self.segments_path.mkdir(parents=True, exist_ok=True)
        name = f"{SEGMENT_PREFIX}{generation.removeprefix(GENERATION_PREFIX)}-{number}"
        return name, _private_folder(self.segments_path, name)

    def publish_segment(self, staging: Path, name: str) -> None:
        """Durable under its final name; still invisible to readers until a manifest names it."""
        _fsync_tree(staging)
        os.replace(staging, self.segments_path / name)
        fsync_dir(self.segments_path)

    def commit(self, staging: Path, manifest: Manifest) -> None:
        final = self.generation_path(manifest.generation)
        (staging / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")  # what GC and old readers refer to
        _fsync_tree(staging)
        os.replace(staging, final)
        _write_atomic(self.manifest_path, manifest.to_json())
        self._collect_garbage(manifest.generation)

    def write_manifest(self, manifest: Manifest) -> None:
        """Replace the manifest alone (same generation): e.g. a re-run that changed nothing."""
        _write_atomic(self.manifest_path, manifest.to_json())

    def discard_staging(self) -> None:
        for path in [*self.root.glob(f"{STAGING_PREFIX}*-{os.getpid()}"),
                     *self.segments_path.glob(f"{STAGING_PREFIX}*-{os.getpid()}")]:
            shutil.rmtree(path, ignore_errors=True)

    def _next_generation_number(self) -> int:
        numbers = [0]
        for entry in self.root.iterdir():
            name = entry.name.removeprefix(STAGING_PREFIX)
            if name.startswith(GENERATION_PREFIX):
                digits = name[len(GENERATION_PREFIX):].split("-")[0]
                if digits.isdigit():
                    numbers.append(int(digits))
        return max(numbers) + 1

    def _collect_garbage(self, current: str) -> None:
        generations = sorted(p for p in self.root.iterdir() if p.name.startswith(GENERATION_PREFIX))
        keep = {p.name for p in generations[-KEEP_GENERATIONS:]} | {current}
        for path in generations:
            if path.name not in keep:
                shutil.rmtree(path, ignore_errors=True)
        for path in [*self.root.glob(STAGING_PREFIX + "*"), *self.segments_path.glob(STAGING_PREFIX + "*")]:
            if path.name.endswith(f"-{os.getpid()}"):
                continue
            shutil.rmtree(path, ignore_errors=True)
        self._collect_segments(keep)

    def _collect_segments(self, kept_generations: set[str]) -> None:
        """Segments and deletion files that no kept generation reads: left by replaced or killed commits."""
        if not self.segments_path.is_dir():
            return
        referenced: dict[str, set[str]] = {}
        for generation in kept_generations:
            copy = self.generation_path(generation) / MANIFEST
            if not copy.is_file():
                continue  # a format-2 generation: it reads no segment
            for segment in json.loads(copy.read_text(encoding="utf-8")).get("segments", []):
                referenced.setdefault(segment["name"], set()).update((segment.get("deleted"), segment.get("words")))
        for folder in self.segments_path.iterdir():
            if not folder.name.startswith(SEGMENT_PREFIX):
                continue
            if folder.name not in referenced:
                shutil.rmtree(folder, ignore_errors=True)
                continue
            for deletions in folder.glob("deleted-*.npy"):
                if deletions.name not in referenced[folder.name]:
                    deletions.unlink(missing_ok=True)
            for words in folder.glob("words*"):  # a segment's words replaced by a later commit's
                if words.name not in referenced[folder.name]:
                    shutil.rmtree(words, ignore_errors=True)


def _private_folder(parent: Path, name: str) -> Path:
    """An empty staging folder for `name` that only this process writes (a dead run's leftovers are cleared)."""
    staging = parent / f"{STAGING_PREFIX}{name}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    return staging


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_dir():  # a segment's word index
            _fsync_tree(path)
        elif path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    fsync_dir(folder)
