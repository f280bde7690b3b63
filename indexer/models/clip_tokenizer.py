"""open_clip's default text tokenizer on the `tokenizers` library, without torch or open_clip.

`open_clip.tokenize` is the one thing a query for an open_clip model needs before the text tower, but importing
open_clip imports torch (seconds) to turn a few words into 77 ids. ClipTokenizer gives the same ids as
open_clip's SimpleTokenizer (clean='lower'), tested against it, from a tokenizer.json built from open_clip's
own merges file, which is found without importing open_clip.
"""
from __future__ import annotations

import gzip
import html
import importlib.util
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ModelUnavailableError

CONTEXT_LENGTH = 77
BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
START, END = "<start_of_text>", "<end_of_text>"
# open_clip keeps the merges on lines 1..48894 of the file (line 0 is a header): 256 bytes, 256 bytes + "</w>",
# these merges and its two special tokens make its 49,408 ids
MERGES = 49152 - 256 - 2
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
# Both special tokens end in this, and none of its characters has a case variant that survives str.lower(),
# so a cleaned text without it cannot hold one (the test checks that against the regex module)
SPECIAL_MARK = "_of_text>"


def open_clip_vocab_file() -> Path:
    """open_clip's merges file, found from its package folder without running open_clip/__init__ (torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError("open_clip is not installed, and its tokenizer's merges file comes with it: "
                                    "pip install open_clip_torch")
    return Path(next(iter(spec.submodule_search_locations))) / BPE_FILE


def build_tokenizer_json(bpe_path: Path, out_path: Path) -> None:
    """Write a tokenizer.json that splits and merges as open_clip's SimpleTokenizer does."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    merges = _read_merges(Path(bpe_path))
    tokenizer = Tokenizer(models.BPE(vocab=_vocab(merges), merges=merges, end_of_word_suffix="</w>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        # keep the pattern's matches, drop what lies between them (whitespace), as open_clip's re.findall does
        pre_tokenizers.Split(Regex(_split_pattern()), behavior="removed", invert=True),
        # open_clip's bytes_to_unicode is GPT-2's byte alphabet, which ByteLevel applies
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    _save_atomic(tokenizer, Path(out_path))


def _read_merges(bpe_path: Path) -> list[tuple[str, str]]:
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")[1:MERGES + 1]
    return [tuple(line.split()) for line in lines]


def _byte_alphabet() -> list[str]:
    """open_clip's bytes_to_unicode values, in its order (which fixes the first 512 ids)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(others))]


def _vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    alphabet = _byte_alphabet()
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(pair) for pair in merges] + [START, END]
    return {token: i for i, token in enumerate(tokens)}


def _split_pattern() -> str:
    r"""open_clip's pattern, `<start_of_text>|<end_of_text>|'s|...|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+` under
    IGNORECASE, with every class written out as the code points the regex module matches.

    tokenizers runs Oniguruma, whose Unicode tables are older than the regex module's (letters added in recent
    Unicode versions differ) and whose case folding differs (U+0345 folds to a letter): spelled out, the two
    engines split alike. IGNORECASE also lets "'ſ" match "'s", so each literal becomes a class of its variants.
    """
    import regex

    everything = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)

    def matched(pattern: str) -> str:
        return _char_class(regex.findall(pattern, everything, flags=regex.IGNORECASE))

    def caseless(literal: str) -> str:
        return "".join(matched(regex.escape(char)) for char in literal)

    alternatives = [caseless(word) for word in (START, END, *CONTRACTIONS)]
    alternatives += [matched(r"[\p{L}]") + "+", matched(r"[\p{N}]"), matched(r"[^\s\p{L}\p{N}]") + "+"]
    return "|".join(alternatives)


def _char_class(chars: list[str]) -> str:
    """An Oniguruma class of these characters as code point ranges (escaped, so `]`, `-` and `\\` are safe)."""
    points = sorted({ord(c) for c in chars})
    ranges, start = [], 0
    for i in range(1, len(points) + 1):
        if i == len(points) or points[i] != points[i - 1] + 1:
            low, high = points[start], points[i - 1]
            ranges.append(f"\\x{{{low:X}}}" if low == high else f"\\x{{{low:X}}}-\\x{{{high:X}}}")
            start = i
    return "[" + "".join(ranges) + "]"


def _save_atomic(tokenizer, out_path: Path) -> None:
    """A reader (another query process) sees the whole file or none: a temp file beside it, then os.replace."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # named by process and thread, not mkstemp: its 0600 file would keep other users from a shared cache
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tokenizer.save(str(tmp))
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def clean(text: str) -> str:
    """open_clip's clean='lower': ftfy, HTML entities unescaped twice, whitespace collapsed, lower case."""
    import ftfy  # lazily: its import is not free, and only tokenising needs it

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """`open_clip.tokenize(texts, context_length).numpy()`, from a tokenizer.json by build_tokenizer_json."""

    def __init__(self, tokenizer_json: str | Path, context_length: int = CONTEXT_LENGTH):
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self._specials = {token: self._tokenizer.token_to_id(token) for token in (START, END)}
        self._start, self._end = self._specials[START], self._specials[END]
        self.context_length = context_length

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)  # as open_clip: one string is one text
        cleaned = [clean(text) for text in texts]
        encodings = self._tokenizer.encode_batch(cleaned, add_special_tokens=False)
        rows = np.zeros((len(cleaned), self.context_length), dtype=np.int64)  # open_clip pads with 0
        for row, text, encoding in zip(rows, cleaned, encodings):
            ids = self._ids_with_specials(text) if SPECIAL_MARK in text else encoding.ids
            tokens = self._fit([self._start, *ids, self._end])
            row[:len(tokens)] = tokens
        return rows

    def _fit(self, tokens: list[int]) -> list[int]:
        """open_clip truncates to the context and ends a cut text with end_of_text all the same."""
        if len(tokens) <= self.context_length:
            return tokens
        return tokens[:self.context_length - 1] + [self._end]

    def _ids_with_specials(self, text: str) -> list[int]:
        """open_clip's pattern finds its special tokens inside a text, and a piece that is exactly one of them
        becomes its id rather than being merged as a word. Rare (the text has to spell one), so piece by piece."""
        ids = []
        for piece, _ in self._tokenizer.pre_tokenizer.pre_tokenize_str(text):
            special = self._specials.get(piece)
            ids += [special] if special is not None else [token.id for token in self._tokenizer.model.tokenize(piece)]
        return ids
