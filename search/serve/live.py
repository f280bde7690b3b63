"""An index a long-lived service answers from, following commits without a restart.

A watcher thread looks at the manifest once a second; when a new generation has
been committed it opens it (every vector read, so no later commit can pull files
from under it) and swaps it in. Requests never wait for that: each one takes the
index that is current when it starts and keeps it, so none fails during a swap.
The model is loaded once and shared by every generation, and so is the speech model that hears
spoken queries (with its limit on a recording's length).
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from ...indexer.errors import XmodalError
from ...indexer.models import Encoder
from ...indexer.store import IndexDir

from ..engine import SearchIndex, open_index
from ..voice import MAX_AUDIO_SECONDS, OFFLINE, SpeechRecognizer

CHECK_EVERY_S = 1.0
log = logging.getLogger("xmodal.serve")


class LiveIndex:
    def __init__(self, name: str, path: Path, device: str | None = None, encoder: Encoder | None = None,
                 speech: str | SpeechRecognizer = OFFLINE, max_audio_seconds: float = MAX_AUDIO_SECONDS,
                 way: tuple[str | None, str | None] = (None, None)):
        self.name, self.path, self._device, self._way = name, Path(path), device, way
        self._speech, self._max_audio_seconds = speech, max_audio_seconds
        self._index = self._open(encoder)
        self._seen = self._manifest_stamp()
        self.reloads = 0
        self._watcher = threading.Thread(target=self._watch, name=f"xmodal-watch-{name}", daemon=True)
        self._watcher.start()

    def current(self) -> SearchIndex:
        return self._index

    def share_encoder(self, encoder: Encoder) -> None:
        """Every generation from now on answers with this encoder (the batching wrapper)."""
        self._index._encoder = encoder

    def _watch(self) -> None:
        while True:  # a daemon thread: it ends with the service
            time.sleep(CHECK_EVERY_S)
            self.follow_commits()

    def follow_commits(self) -> bool:
        """Open the newest generation if there is one; True if it was swapped in."""
        stamp = self._manifest_stamp()
        if stamp == self._seen:
            return False
        try:
            manifest = IndexDir(self.path).read_manifest()
            if manifest.generation == self._index.generation:
                self._seen = stamp
                return False
            fresh = self._open(self._index._encoder)
        except (XmodalError, OSError) as exc:  # caught between two commits: keep answering, look again
            log.warning("index %s: could not open the new generation yet (%s)", self.name, exc)
            return False
        self._index, self._seen = fresh, stamp
        self.reloads += 1
        log.warning("index %s: now answering from %s", self.name, fresh.generation)
        return True

    def _open(self, encoder: Encoder | None) -> SearchIndex:
        runtime, precision = self._way
        index = open_index(self.path, device=self._device, encoder=encoder, asr_model=self._speech,
                           runtime=runtime, precision=precision).preload()
        index.max_audio_seconds = self._max_audio_seconds
        return index

    def _manifest_stamp(self) -> tuple[int, int] | None:
        try:
            stat = (self.path / "manifest.json").stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_ino
