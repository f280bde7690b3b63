"""Exported towers (ONNX files), built once per model identity and kept under the user's cache folder, and
the identities of the models they were exported from (what a run needs to know of a model without loading it).

An entry is a folder named by the digest of its key (the model's identity, the weights' fingerprint, the
tower, the runtime and its version, the precision). It is written in a temporary folder and renamed into
place, so a reader never sees half of one; its meta.json records each file's size and modification time,
and an entry whose files differ (truncated, overwritten, half-copied) is rebuilt, never used.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, Callable

META = "meta.json"
# An export takes seconds to a few minutes; a scratch folder untouched this long was left by a killed run (up to
# the tower's weights, several times over while it is quantised): the next export removes it.
ABANDONED_SECONDS = 3600
SCRATCH_PREFIXES = (".building-", ".stale-")
# An entry no run has used for this long (a model no longer indexed, an older xmodal's or runtime's export) is
# removed by the next export: an export is rebuilt on demand, in seconds, while every kept one weighs hundreds of
# megabytes. A use is marked at most once a day (the entry's meta.json touched).
UNUSED_SECONDS = 60 * 86400
USE_MARK_SECONDS = 86400


def cache_root() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "xmodal" / "exported"


def digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:24]


class ExportCache:
    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root else cache_root()

    def folder(self, key: dict[str, Any]) -> Path:
        return self.root / digest(key)

    def get(self, key: dict[str, Any]) -> Path | None:
        """The entry's folder when it is whole and was built for exactly `key`; None otherwise."""
        folder = self.folder(key)
        try:
            meta = json.loads((folder / META).read_text())
        except (OSError, ValueError):
            return None
        if meta.get("key") != json.loads(json.dumps(key, default=str)):
            return None
        if not all(_stamp(folder / name) == stamp for name, stamp in meta.get("files", {}).items()):
            return None
        _mark_used(folder / META)
        return folder

    def ensure(self, key: dict[str, Any], write: Callable[[Path], None]) -> Path:
        """The entry for `key`, built by `write(folder)` first where there is none (or a stale one)."""
        return self.get(key) or self._build(key, write)

    def _build(self, key: dict[str, Any], write: Callable[[Path], None]) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep()
        scratch = self.root / f".building-{uuid.uuid4().hex}"
        scratch.mkdir()
        try:
            write(scratch)
            files = {p.name: _stamp(p) for p in sorted(scratch.iterdir()) if p.is_file()}
            (scratch / META).write_text(json.dumps({"key": key, "files": files}, indent=2, default=str))
            return self._publish(key, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def _sweep(self) -> None:
        """Scratch folders a killed export left, and entries no run has used for UNUSED_SECONDS."""
        remove_abandoned(self.root, SCRATCH_PREFIXES, ABANDONED_SECONDS)
        for entry in self.root.iterdir():
            try:
                if time.time() - (entry / META).stat().st_mtime > UNUSED_SECONDS:
                    shutil.rmtree(entry, ignore_errors=True)
            except OSError:  # not an entry (identities/, weights/), or one another process removed
                pass

    def _publish(self, key: dict[str, Any], scratch: Path) -> Path:
        folder = self.folder(key)
        if folder.exists():
            if self.get(key):  # another process finished the same export first: theirs is as good
                return folder
            stale = self.root / f".stale-{uuid.uuid4().hex}"
            folder.rename(stale)
            shutil.rmtree(stale, ignore_errors=True)
        try:
            scratch.rename(folder)
        except OSError:
            if not self.get(key):  # not a racing twin's finished copy: a real failure
                raise
        return folder


class IdentityCache:
    """Small JSON records beside the exports, one per key (a model as asked for and the versions that build it):
    what a run would otherwise load torch and the model to learn. A record for another key is never read."""

    def __init__(self, root: Path | None = None):
        self.root = (Path(root) if root else cache_root()) / "identities"

    def get(self, key: dict[str, Any]) -> dict[str, Any] | None:
        try:
            record = json.loads((self.root / f"{digest(key)}.json").read_text())
        except (OSError, ValueError):
            return None
        same = isinstance(record, dict) and record.get("key") == json.loads(json.dumps(key, default=str))
        return record.get("value") if same else None

    def put(self, key: dict[str, Any], value: dict[str, Any]) -> None:
        _write_atomically(self.root / f"{digest(key)}.json", json.dumps({"key": key, "value": value}, default=str))


def remove_abandoned(folder: Path, prefixes: tuple[str, ...], seconds: float) -> None:
    """Remove the scratch folders in `folder` named with one of `prefixes` and untouched for `seconds`: what a
    process killed while writing left (a live writer touches its own more recently)."""
    for prefix in prefixes:
        for scratch in folder.glob(f"{prefix}*"):
            try:
                if time.time() - scratch.stat().st_mtime > seconds:
                    shutil.rmtree(scratch, ignore_errors=True)
            except OSError:
                pass


def _mark_used(meta: Path) -> None:
    try:
        if time.time() - meta.stat().st_mtime > USE_MARK_SECONDS:
            os.utime(meta)
    except OSError:  # a read-only cache: its entries are never swept by this user either
        pass


def remove_unused_files(folder: Path, seconds: float) -> None:
    """Remove the files in `folder` not written for `seconds` (a cache whose files are rebuilt on demand)."""
    try:
        for found in folder.iterdir():
            if found.is_file() and time.time() - found.stat().st_mtime > seconds:
                found.unlink(missing_ok=True)
    except OSError:
        pass


def _stamp(path: Path) -> list[int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return [found.st_size, found.st_mtime_ns]


def file_fingerprint(path: Path, memo_root: Path | None = None) -> str:
    """The sha256 of a weights file, remembered by (path, size, mtime) so a query does not re-read it."""
    path = Path(path).resolve()
    memo = (memo_root or cache_root()) / "weights" / f"{hashlib.sha256(str(path).encode()).hexdigest()[:24]}.json"
    stamp = _stamp(path)
    try:
        known = json.loads(memo.read_text())
        if known["stamp"] == stamp:
            return known["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            hasher.update(chunk)
    _write_atomically(memo, json.dumps({"stamp": stamp, "sha256": hasher.hexdigest()}))
    return hasher.hexdigest()


def _write_atomically(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        scratch.write_text(text)
        os.replace(scratch, path)
    except OSError:
        pass  # a read-only cache only costs the work again next time
