"""The analyser of the word index: a text's terms as stored, and a query's terms as searched, by one analysis.

A word index finds what a shopper types as words: a SKU, a brand, a model number, a size, a Chinese word.
Both sides go through `analyse`, so whatever rule maps a word to a term maps the query's word to the same term;
`query_terms` is the same analysis without repeats. Each term is a plain str.

Rules, in order:

1. Unicode: NFKC (full-width ＳＨＯ－００４ is SHO-004), case folding, Latin accents dropped (café: cafe), and
   traditional Chinese characters written as simplified ones (opencc, where installed: 紅色汽車 is 红色汽车).
2. Apostrophes: a possessive 's goes (men's: men), one inside a word joins it (o'neill: oneill). Digits grouped
   by thousands are one number (18,500: 18500).
3. Tokens: a run of Chinese characters, or a run of letters and digits joined by - _ / or . (SHO-004, t-shirt,
   1.5, v2.1); anything else separates.
4. Chinese runs are segmented by jieba for search (红色汽车: 红色, 汽车; 运动鞋: 运动, 运动鞋), without its
   HMM, and function words (FUNCTION_WORDS: 我, 想要, 的, ...) and number + measure words (一辆, 两双) are
   dropped: they say who wants it and how many, not what. Without jieba each character is a term.
5. A plain word is case folded and lightly stemmed (`stem`: kids: kid, shoes: shoe, running: run, hiking:
   hike, dresses: dress); English function words (ENGLISH_FUNCTION_WORDS: a, the, for, want, ...) are dropped.
6. A number is kept as written, in digits (42, 004, 1.5): "size 42", "EU 42" and "42" share the term 42.
   A decimal (1.5) is one term: its halves would match sizes 1 and 5.
7. A code is kept whole and in parts: the whole token with - for any joiner (sho-004, for SHO_004 too), the
   token glued without its joiners (sho004; not where digits meet digits, 1/2 is not 12), and its parts split
   at joiners and at letter/digit boundaries (sho, 004; rtx4090: rtx, 4090; iphone15: iphon, 15), each part a
   word (stemmed) or a number as above.
   So SHO-004, sho004 and "SHO 004" all hold sho and 004 and find the row holding SHO-004, whose terms
   match more of them than SHO-005's do. A compound of words alone is stemmed throughout (t-shirts: t-shirt,
   tshirt, t, shirt); a code's whole and glued forms are not (SKU-ABCS stays itself).

Terms depend on jieba, its dictionary and opencc where the text is Chinese: `identity()` names the analysis
here, for an index to record beside its words and compare with the process that queries it.
"""
from __future__ import annotations

import functools
import os
import re
import threading
import unicodedata
from pathlib import Path

VERSION = 2  # raised with any change to the terms a text gives: stored words then need analysing again

# Chinese: words a shop query says around what it wants (who wants it, wanting, buying, particles), shared with
# search/translate.py, which drops them too.
FUNCTION_WORDS = frozenset("""我 你 您 他 她 它 我们 你们 他们 咱们 自己 想 想要 要 需要 想买 要买 买 购买 买个 找 寻找 想找 请
请问 帮 帮我 给 给我 一下 看看 看 有 有没有 没有 是 的 地 得 之 了 着 过 吗 呢 吧 啊 呀 哦 嘛 和 与 跟 及 或 或者 还
也 都 就 很 非常 特别 最 太 比较 一个 一些 一点 有些 些 这 那 哪 这个 那个 这些 那些 哪个 什么 怎么 能 可以 应该
会 在 把 被 为 为了 对 用 带 带有 有着 款 种 样 个""".split())
NUMERALS = "零〇一二两三四五六七八九十百千万几半每这那哪0123456789"
MEASURES = frozenset("个辆双件条只台把张本瓶杯盒箱支套副顶块部架匹头枚袋份对片棵盏根间座款位斤")

# English words a query or a listing says around what it is about: articles, pronouns, prepositions, "want".
# Kept out: "us" and "it" (US sizes, IT), "no" and "not", "one", "in"'s inches are numbers anyway.
ENGLISH_FUNCTION_WORDS = frozenset("""a an the and or of for to in on at by with from into as is are be been
was were this that these those its i me my we our you your he she they them their his her some any very just
also than then there here what which who how please want wants need needs looking find show buy""".split())

_HAN = "\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff"  # 〇 and the Han blocks
_HAN_CHAR = re.compile(f"[{_HAN}]")
_TOKEN = re.compile(rf"(?P<han>[{_HAN}]+)|(?P<word>[^\W_{_HAN}]+(?:[-_/.][^\W_{_HAN}]+)*)")
_JOINER = re.compile(r"[-_/.]")
_PART = re.compile(r"\d+|[^\W\d_]+")
_DECIMAL = re.compile(r"\d+\.\d+")
_POSSESSIVE = re.compile(r"(?<=[^\W\d_])['’]s\b")
_INNER_APOSTROPHE = re.compile(r"(?<=\w)['’](?=\w)")
_THOUSANDS = re.compile(r"(?<![\d.,])\d{1,3}(?:,\d{3})+(?![\d,])")
_LATIN_MARKS = re.compile("[\u0300-\u036f]")


def analyse(text: str) -> list[str]:
    """The terms of `text` as a word index stores them, in order, with repeats (a term's frequency counts)."""
    terms: list[str] = []
    for match in _TOKEN.finditer(_normalised(text)):
        if match.lastgroup == "han":
            terms += _segmented(match.group())
        else:
            terms += _word_terms(match.group())
    return terms


def query_terms(text: str) -> list[str]:
    """The terms a query searches: `analyse`'s, each once, in order."""
    return list(dict.fromkeys(analyse(text)))


KEY_PREFIX = "key:"  # no term `analyse` gives holds a colon: a key's term never meets a word's
_NOT_KEY = re.compile(r"[\W_]+")


def key_term(key: str) -> str:
    """The term that marks a row's key (its table's id column): the key folded as the analyser folds a text,
    without its joiners, so SHO-004, sho004 and ＳＨＯ－００４ name the same row."""
    return KEY_PREFIX + _NOT_KEY.sub("", _normalised(str(key)))


def key_terms(query: str) -> list[str]:
    """The key terms a query may name: the whole query, and each of its space-separated words that holds a
    digit (a code: "SHO-004 red" names SHO-004; "red" names no key, however a table's ids are spelled)."""
    words = [w for w in query.split() if any(ch.isdigit() for ch in w)]
    terms = [key_term(text) for text in [query, *words]]
    return [t for t in dict.fromkeys(terms) if t != KEY_PREFIX]


def identity() -> str:
    """This process's analysis, by what decides its terms: the rules' version, and for Chinese text jieba's
    and opencc's versions (or their absence). Equal identities give equal terms for equal texts. Neither
    package is imported: an English index need not load them to say so."""
    return f"words {VERSION}; {_version('jieba')}; {_version('opencc')}"


def _version(package: str) -> str:
    import importlib.util
    from importlib import metadata

    try:
        if importlib.util.find_spec(package) is None:
            return f"no {package}"
        return f"{package} {metadata.version(package)}"
    except (ValueError, ImportError, metadata.PackageNotFoundError):  # ValueError: a module set to None
        return f"no {package}"


def _normalised(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    # accents are a diacritic block of their own, so Hangul, kana and Devanagari marks stay
    text = unicodedata.normalize("NFC", _LATIN_MARKS.sub("", unicodedata.normalize("NFD", text)))
    text = _INNER_APOSTROPHE.sub("", _POSSESSIVE.sub("", text))
    text = _THOUSANDS.sub(lambda m: m.group().replace(",", ""), text)
    return _simplified(text) if _HAN_CHAR.search(text) else text  # opencc loads only for Chinese text


@functools.lru_cache(maxsize=200_000)
def _word_terms(token: str) -> tuple[str, ...]:
    """One token's terms (rules 5 to 7); a catalogue repeats its words, so each is analysed once."""
    pieces = _JOINER.split(token)
    if len(pieces) == 1:
        parts = _PART.findall(token)
        if len(parts) == 1:
            return () if token in ENGLISH_FUNCTION_WORDS else (stem(token),)
        return (token, *map(stem, parts))
    if _DECIMAL.fullmatch(token):
        return (token,)
    parts = [part for piece in pieces for part in _PART.findall(piece)]
    if all(piece.isalpha() for piece in pieces):  # a compound of words: t-shirts is t-shirt's plural
        pieces = [stem(piece) for piece in pieces]
    terms = ["-".join(pieces)]  # one joiner: SHO_004 and sho/004 are typed for SHO-004
    if not any(a[-1].isdigit() and b[0].isdigit() for a, b in zip(pieces, pieces[1:])):
        terms.append("".join(pieces))
    return (*terms, *map(stem, parts))


# The stemmer: Snowball English's (Porter2's) inflectional steps, 1a to 1c, and its final e rule (step 5), as
# Snowball 3.1.1 has them, so plurals, -ed and -ing and a silent e meet (kids: kid, boxes: box, hiking and hike:
# hike, charging and charge: charg, hoodies and hoodie: hoodi). Its derivational steps 2 to 4 are left out:
# they join words a shopper keeps apart (organic: organ, electronics: electron, animals and animation: anim,
# designer: design, computer: comput, fashionable: fashion). Measured against snowballstemmer 3.1.1 (full
# Porter2) on the 2,038 words of data/ and bench/ and a list of shop words: 211 stems differ, all but 11 where
# steps 2 to 4 cut further (the 11: IRREGULAR's plurals, and probability's "biliti"); full Porter2 joins 46 more
# groups of words (designer/designs, animals/animation, electric/electrical, lighting/lightly). Steps 1 and 5
# are a hundred lines, not worth a dependency (snowballstemmer runs all five steps, with no way to stop at 1).
_VOWELS = frozenset("aeiouy")
_DOUBLES = ("bb", "dd", "ff", "gg", "mm", "nn", "pp", "rr", "tt")
_REGION_PREFIXES = ("arsen", "commun", "emerg", "gener", "inter", "later", "organ", "past", "univers")
_SPECIAL = {"skis": "ski", "skies": "sky", "idly": "idl", "gently": "gentl", "ugly": "ugli", "early": "earli",
            "only": "onli", "singly": "singl", "sky": "sky", "news": "news", "howe": "howe", "atlas": "atlas",
            "cosmos": "cosmos", "bias": "bias", "andes": "andes"}
_ING_INVARIANTS = ("even", "cann", "inn", "earr", "herr", "out")  # evening, canning, inning, earring, ...
# shop nouns in -ing that Porter2 would make another word: leg, wed, pud, sterl
EXTRA_INVARIANTS = frozenset({"legging", "wedding", "pudding", "sterling"})
# plurals no suffix rule reaches, as a shop lists them (scarves are scarf's, mice a computer mouse's)
IRREGULAR = {"scarves": "scarf", "knives": "knife", "shelves": "shelf", "leaves": "leaf", "halves": "half",
             "wolves": "wolf", "loaves": "loaf", "calves": "calf", "wives": "wife", "feet": "foot",
             "teeth": "tooth", "mice": "mouse", "geese": "goose", "children": "child", "women": "woman",
             "men": "man"}


@functools.lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """`word`'s light stem where it is a word of a-z letters, else `word` itself (numbers, other scripts)."""
    if not word.isascii() or not word.isalpha() or len(word) < 3:
        return word
    word = IRREGULAR.get(word, word)
    if word in _SPECIAL:
        return _SPECIAL[word]
    word = _consonant_ys(word)
    p1, p2 = _regions(word)
    word = _step_1a(word)
    if word in IRREGULAR:  # womens: women: woman
        return stem(IRREGULAR[word])
    if word in EXTRA_INVARIANTS:
        return word
    word = _step_1c(_step_1b(word, p1))
    return _step_5(word, p1, p2).replace("Y", "y")


def _consonant_ys(word: str) -> str:
    """A y at the start or after a vowel is a consonant, written Y while stemming (toys: toy, not toi)."""
    chars = list(word)
    for i, ch in enumerate(chars):
        if ch == "y" and (i == 0 or chars[i - 1] in _VOWELS):
            chars[i] = "Y"
    return "".join(chars)


def _regions(word: str) -> tuple[int, int]:
    """Porter2's R1 and R2: where each begins, after the first non-vowel that follows a vowel."""
    p1 = next((len(prefix) for prefix in _REGION_PREFIXES if word.startswith(prefix)), None)
    p1 = _region_start(word, 0) if p1 is None else p1
    return p1, _region_start(word, p1)


def _region_start(word: str, start: int) -> int:
    for i in range(start + 1, len(word)):
        if word[i] not in _VOWELS and word[i - 1] in _VOWELS:
            return i + 1
    return len(word)


def _short_syllable_ends(word: str) -> bool:
    """Whether `word` ends in a short syllable: non-vowel, vowel, non-vowel (not w, x or Y), or a vowel and a
    non-vowel that begin the word (and past, for paste)."""
    if len(word) >= 3 and word[-3] not in _VOWELS and word[-2] in _VOWELS and word[-1] not in "aeiouywxY":
        return True
    return (len(word) == 2 and word[0] in _VOWELS and word[1] not in _VOWELS) or word.endswith("past")


def _step_1a(word: str) -> str:
    """Plurals: dresses: dress, ponies: poni, ties: tie, kids: kid; gas, bus and dress stay."""
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith(("ied", "ies")):
        return word[:-3] + ("i" if len(word) > 4 else "ie")
    if word.endswith(("us", "ss")):
        return word
    if word.endswith("s") and any(ch in _VOWELS for ch in word[:-2]):
        return word[:-1]
    return word


_STEP_1B = ("eedly", "ingly", "edly", "eed", "ing", "ed")  # the longest suffix decides


def _step_1b(word: str, p1: int) -> str:
    """-ed and -ing: running: run, hiking: hike, printed: print, dying: die; red, bed, ring, add, speed and
    evening stay."""
    suffix = next((s for s in _STEP_1B if word.endswith(s)), None)
    if suffix is None:
        return word
    rest = word[: -len(suffix)]
    if suffix in ("eed", "eedly"):
        return rest + "ee" if len(rest) >= p1 and rest not in ("succ", "proc", "exc") else word
    if suffix == "ing" and len(rest) == 2 and rest[1] == "y" and rest[0] not in _VOWELS:
        return rest[0] + "ie"
    if suffix == "ing" and rest in _ING_INVARIANTS:
        return word
    if not any(ch in _VOWELS for ch in rest):
        return word
    if rest.endswith(("at", "bl", "iz")):
        return rest + "e"
    if rest.endswith(_DOUBLES):
        return rest if len(rest) == 3 and rest[0] in "aeo" else rest[:-1]  # add, egg, odd keep theirs
    if len(rest) == p1 and _short_syllable_ends(rest):  # a short word: hik, mak, us
        return rest + "e"
    return rest


def _step_1c(word: str) -> str:
    """A final y after a consonant is i (berry and berries: berri), unless the consonant begins the word (by)."""
    if len(word) > 2 and word[-1] in "yY" and word[-2] not in _VOWELS:
        return word[:-1] + "i"
    return word


def _step_5(word: str, p1: int, p2: int) -> str:
    """A final e goes where it is in R2, or in R1 after a syllable that is not short (charge: charg, boxe: box),
    so a silent e and its -ing and plural forms meet; hike, kite and shoe keep theirs."""
    if word.endswith("e"):
        at = len(word) - 1
        if at >= p2 or (at >= p1 and not _short_syllable_ends(word[:-1])):
            return word[:-1]
    return word


# Chinese


def chinese_words(text: str) -> list[str]:
    """The words of Chinese `text` for search (rule 4), traditional characters written as simplified ones."""
    return _segmented(_simplified(text))


def _segmented(text: str) -> list[str]:
    """jieba's cut for search without its HMM (an unknown word is its characters, the same in a listing and a
    query, not a guess that depends on its neighbours), function words and number + measure words dropped."""
    segmenter = _segmenter()
    words = segmenter.cut_for_search(text, HMM=False) if segmenter else list(text)
    return [word for word in words if word.strip() and word not in FUNCTION_WORDS and not _counts(word)]


def _counts(word: str) -> bool:
    """A number and a measure word (一辆, 两双, 3件): how many, not what."""
    return len(word) >= 2 and word[-1] in MEASURES and all(ch in NUMERALS for ch in word[:-1])


_LOCK = threading.Lock()
_SEGMENTER: list = []  # the process's jieba tokenizer, or None where jieba is not installed; empty until asked


def _segmenter():
    """jieba's tokenizer with its default dictionary, loaded once per process at the first Chinese text (about
    half a second from its cache under ~/.cache/xmodal/words, not in /tmp where jieba puts it by default)."""
    with _LOCK:
        if not _SEGMENTER:
            _SEGMENTER.append(_load_segmenter())
        return _SEGMENTER[0]


def _load_segmenter():
    import logging

    try:
        import jieba
    except ImportError:
        return None
    jieba.setLogLevel(logging.WARNING)  # it logs its start-up to stderr; a command's output is xmodal's
    tokenizer = jieba.Tokenizer()
    folder = cache_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    if os.access(folder, os.W_OK):  # else jieba's own place, the temporary folder, rather than an error logged
        tokenizer.tmp_dir = str(folder)
    tokenizer.initialize()
    return tokenizer


def cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xmodal" / "words"


_CONVERTER: list = []


def _simplified(text: str) -> str:
    """`text` with traditional characters written as simplified ones, where opencc is installed."""
    with _LOCK:
        if not _CONVERTER:
            try:
                import opencc

                _CONVERTER.append(opencc.OpenCC("t2s").convert)
            except ImportError:
                _CONVERTER.append(None)
    convert = _CONVERTER[0]
    return convert(text) if convert else text
