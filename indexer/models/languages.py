"""A text's language, told from its script, and the models to name for a language a model does not read.

Script is enough for the languages whose writing no other shares: any kana (hiragana, katakana) is Japanese
(Japanese writes Han characters too, so kana decides), Hangul is Korean, Han characters without kana are
Chinese. Latin letters are English unless the caller says otherwise (`told`): the script cannot tell English
from French, and every model reads English. Every other script (Cyrillic, Arabic, Thai, ...) gives `told`, or
None ("not known") where the caller says nothing; so does a text with no letters at all (digits, emoji, an empty
string) always. A query whose language is not known is searched as typed, without a note.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

KANA = ((0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))
HANGUL = ((0x1100, 0x11FF), (0x3130, 0x318F), (0xAC00, 0xD7AF))
HAN = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F))


def script_language(text: str | None, told: str | None = None) -> str | None:
    """The language of `text` by its script: ja, ko, zh, `told` or en for Latin letters, None otherwise."""
    told = None if told in (None, "", "auto") else told
    text = text or ""
    if text.isascii():  # most queries: decided at C speed (a service asks this of every text query)
        return (told or "en") if _ASCII_LETTER.search(text) else None
    counts = {"ja": 0, "ko": 0, "zh": 0, "latin": 0, "other": 0, "none": 0}
    for ch in text:
        counts[_script(ch)] += 1
    if counts["ja"]:
        return "ja"
    if counts["ko"] and counts["ko"] >= counts["zh"]:
        return "ko"
    if counts["zh"]:
        return "zh"
    if counts["latin"] and counts["latin"] >= counts["other"]:
        return told or "en"
    return told if counts["other"] else None


_ASCII_LETTER = re.compile("[A-Za-z]")


def _script(ch: str) -> str:
    code = ord(ch)
    if any(lo <= code <= hi for lo, hi in KANA):
        return "ja"
    if any(lo <= code <= hi for lo, hi in HANGUL):
        return "ko"
    if any(lo <= code <= hi for lo, hi in HAN):
        return "zh"
    if ch.isascii():
        return "latin" if ch.isalpha() else "none"
    if ch.isalpha():
        return "latin" if code < 0x250 or 0x1E00 <= code <= 0x1EFF else "other"
    return "none"


READERS_OF = {"zh": "xlm-roberta-base-ViT-B-32 (open_clip, laion5b_s13b_b90k) or OFA-Sys/chinese-clip-vit-base-patch16 "
                    "(transformers)"}
ANY_LANGUAGE = "xlm-roberta-base-ViT-B-32 (open_clip, laion5b_s13b_b90k)"


def readers_of(language: str) -> str:
    """The models to name for a language the index's model does not read: the one that needs no download
    first, where it reads the language."""
    from .usem import LANGUAGES as MULTILINGUAL_OFFLINE_READS

    with_weights = READERS_OF.get(language, ANY_LANGUAGE)
    if language in MULTILINGUAL_OFFLINE_READS:
        return f"offline-multilingual (no download) or, with real weights, {with_weights}"
    return with_weights


LANGUAGE_SAMPLE = 2_000  # texts looked at per run: enough to tell a catalog's language, cheap on a million rows
UNREAD_SHARE = 0.2  # from this share of a run's texts in a language its model does not read, the run says so


@dataclass
class LanguageTally:
    """The languages of the texts an index run encodes (the first LANGUAGE_SAMPLE, their first 200 characters),
    so the run can say when its model does not read them."""

    counts: Counter = field(default_factory=Counter)
    seen: int = 0

    def add(self, texts) -> None:
        for text in texts[:max(0, LANGUAGE_SAMPLE - self.seen)]:
            self.counts[script_language(text[:200])] += 1
            self.seen += 1

    def note(self, identity) -> str | None:
        """One line where a language the index's model does not read holds UNREAD_SHARE of the texts or more."""
        unread = [(n, language) for language, n in self.counts.items()
                  if language not in (None, "en") and not identity.reads_language(language)]
        if not unread or max(unread)[0] < UNREAD_SHARE * self.seen:
            return None
        count, language = max(unread)
        return (f"{count} of the {self.seen} texts {'looked at' if self.seen >= LANGUAGE_SAMPLE else 'encoded'} "
                f"are in {language}, which this index's model ({identity.spec}) does not read: a search finds them "
                f"through their photos alone, where they have one. Index with a model that reads it, "
                f"{readers_of(language)}")
