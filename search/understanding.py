"""What a query says, as an index searches it: its language (heard, told, or by its script) and, where the index's
model reads English alone, its English (search/translate.py); and the note for a language left untranslated."""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..indexer.errors import PYTHON, Wording, option, render

from ..indexer.models import readers_of, script_language
from .query import Query
from .translate import Translation, can_translate, missing, translate
from .voice import Transcript, model_reads


@dataclass(frozen=True)
class Understood:
    """The query as searched (its text in English where translated), its language (None: not known, see
    indexer/models/languages.py) and the translation, if any."""

    query: Query
    language: str | None = None
    translation: Translation | None = None


def understand(identity, query: Query, transcript: Transcript | None = None) -> Understood:
    """`query` (its text: typed, or what `transcript` heard) as the index whose model is `identity` searches it."""
    if transcript is not None:
        language = transcript.language
        if transcript.translated:  # Whisper wrote it in English already
            return Understood(query, language)
    else:
        language = script_language(query.text, query.language) if query.text else None
    if not translates(identity, query, language) or missing():
        return Understood(query, language)
    translation = translate(query.text, language)
    if translation is None:
        return Understood(query, language)
    return Understood(replace(query, text=translation.text), language, translation)


def translates(identity, query: Query, language: str | None) -> bool:
    return (query.translate != "off" and bool(query.text) and can_translate(language)
            and not model_reads(identity, language))


def language_note(identity, understood: Understood, transcript: Transcript | None = None,
                  wording: Wording = PYTHON) -> str | None:
    """One line where the index's model reads English alone and the query, in another language, is searched
    untranslated: what reads it, and how to translate it."""
    language = understood.language
    if (understood.translation or language in (None, "en") or model_reads(identity, language)
            or (transcript is not None and transcript.translated)):
        return None
    readers = readers_of(language)
    how = "was heard in" if transcript is not None else "is in"
    searched = "heard" if transcript is not None else "typed"
    line = (f"note: this index's model ({identity.spec}) reads English; the query {how} {language} and is "
            f"searched as {searched}. Index with a model that reads it, {readers}")
    if can_translate(language) and understood.query.translate == "off":
        line += f", or search with {option('translate', 'auto')} to turn it into English"
    elif can_translate(language) and missing():
        line += f"; {missing().replace('translating Chinese queries needs', 'translating it needs')}"
    elif transcript is not None:
        line += f", or search with {option('translate', 'speech')} to have the speech model turn it into English"
    return render(line, wording)
