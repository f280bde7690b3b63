"""Spoken queries in the service: one speech model for every index and every generation it reopens.

A recording is heard before its search takes a search slot (as images are decoded), one transcription at
a time (the recognizer's lock): a spoken query waits for another's, never for typed ones, and typed ones
never wait for it. `mode`: True loads the model at start-up (the first spoken query is then as fast as the
others), None at the first spoken query, False refuses spoken queries (--no-voice).
"""
from __future__ import annotations

from typing import Any

from ...indexer.errors import ModelUnavailableError, VoiceOffError, VoiceUnavailableError, Wording, XmodalError

from ..voice import MAX_AUDIO_SECONDS, OFFLINE, SpeechRecognizer, Transcript, recognizer, voice_available

OFF = "voice search is off on this service (started with xmodal serve --no-voice); type the query instead"


class Voice:
    def __init__(self, mode: bool | None = None, asr_model: str | SpeechRecognizer = OFFLINE,
                 device: str | None = None, max_seconds: float = MAX_AUDIO_SECONDS):
        self.mode, self.max_seconds = mode, float(max_seconds)
        self.speech = asr_model if isinstance(asr_model, SpeechRecognizer) else recognizer(asr_model, device)
        self._failure: XmodalError | None = None  # why the model could not be loaded, the last time it was tried

    def start(self) -> None:
        """With voice on (--voice): the model now, or the reason it cannot be had (one line)."""
        if self.mode:
            self.speech.load()

    def unavailable(self, wording: Wording) -> str | None:
        """None where spoken queries can be heard here, else why not (one line, in `wording`'s terms)."""
        if self.mode is False:
            return OFF
        if self.speech.loaded:
            return None
        missing = voice_available() or (self._failure.worded(wording) if self._failure else None)
        return f"voice search is unavailable on this service: {missing}" if missing else None

    def describe(self, wording: Wording) -> dict[str, Any]:
        reason = self.unavailable(wording)
        return {"available": reason is None, "model": self.speech.name, "loaded": self.speech.loaded,
                "reason": reason, "max_seconds": self.max_seconds}

    def hear(self, index, audio: bytes, name: str, language: str | None, translate: bool,
             wording: Wording) -> Transcript:
        """What `audio` says, as `index` searches it; VoiceOffError / VoiceUnavailableError where it cannot be heard
        here, AudioError where the recording is at fault."""
        if self.mode is False:
            raise VoiceOffError(OFF)
        reason = self.unavailable(wording)
        if reason and not self._failure:  # after a failure to load, each spoken query tries again
            raise VoiceUnavailableError(reason)
        try:
            heard = index.hear(audio, language, translate, name)
        except (VoiceUnavailableError, ModelUnavailableError) as exc:
            self._failure = exc  # /indexes says so until a later try loads it
            raise
        self._failure = None
        return heard
