"""ClipTokenizer gives open_clip.tokenize's ids, to the last one, without importing torch or open_clip."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest

from conftest import env_with_tests_path
from xmodal.indexer.models.clip_tokenizer import (SPECIAL_MARK, ClipTokenizer, build_tokenizer_json,
                                                  open_clip_vocab_file)

LONG = " ".join(f"a red car number {i}, parked outside the shop." for i in range(30))  # ~300 tokens
TEXTS = {
    "plain": "a photo of a cat sitting on a sofa",
    "capitals": "A Photo Of THE Eiffel Tower At NIGHT",
    "apostrophes": "it's a dog, don't we'll I'm you've they'd she'll 'quoted' rock'n'roll",
    "capital contractions": "IT'S DON'T WE'LL",
    "prices and digits": "$19.99 2x 100% 3.5mm 1,000,000 24/7 #1 4k 1080p",
    "punctuation": "wow!!! really?! (yes) [no] {maybe} --- ... @user #tag a/b c\\d e_f ~*^",
    "html entities": "salt &amp; pepper &lt;b&gt;bold&lt;/b&gt; &quot;x&quot; &#39;y&#39; &nbsp;z &amp;amp;",
    "mojibake": "cafÃ© crÃ¨me â€œquotedâ€\x9d donâ€™t",
    "chinese": "我想买一辆红色汽车",
    "japanese": "赤い車を買いたいです。カタカナとひらがな",
    "korean": "빨간 자동차를 사고 싶어요",
    "emoji": "a red car 🚗❤️👍🏽 🇯🇵 family 👨‍👩‍👧",
    "accents": "café naïve façade Ærøskøbing São Paulo Straße İstanbul ılık",
    "whitespace": "  tabs\tand\nnewlines\r\n  and   many    spaces \u00a0\u3000 ",
    "empty": "",
    "only spaces": "   \t\n ",
    "long": LONG,
    "special tokens spelled out": "x<end_of_text>!<end_of_text> <START_OF_TEXT> hi <ſtart_of_text>",
    # the regex module's IGNORECASE: "'ſ" is a contraction and U+0345 matches no class, so it is skipped
    "case folding": "it'ſ ok \u0345 a\u0345b",
    # letters Oniguruma's Unicode tables do not have (Tangut components, Unicode 17)
    "recent unicode": "a\U00018D80b \U00010940",
}


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip_tokenizer") / "tokenizer.json"
    build_tokenizer_json(open_clip_vocab_file(), path)
    return path


@pytest.fixture(scope="module")
def tokenizer(tokenizer_json) -> ClipTokenizer:
    return ClipTokenizer(tokenizer_json)


def expected(texts: list[str], context_length: int = 77) -> np.ndarray:
    return open_clip.tokenize(texts, context_length).numpy()


@pytest.mark.parametrize("text", TEXTS.values(), ids=TEXTS.keys())
def test_each_text_gets_open_clips_ids(tokenizer, text):
    got = tokenizer([text])
    assert got.dtype == np.int64 and got.shape == (1, 77)
    np.testing.assert_array_equal(got, expected([text]))


def test_a_batch_of_mixed_lengths_is_padded_with_zeros_as_open_clip_does(tokenizer):
    texts = list(TEXTS.values())
    got = tokenizer(texts)
    np.testing.assert_array_equal(got, expected(texts))
    assert got[list(TEXTS).index("empty")].tolist()[:3] == [49406, 49407, 0]


def test_a_long_text_is_cut_and_still_ends_with_end_of_text(tokenizer):
    row = tokenizer([LONG])[0]
    assert row[0] == 49406 and row[-1] == 49407 and (row[1:-1] != 49407).all() and (row != 0).all()


@pytest.mark.parametrize("context_length", [32, 5])
def test_another_context_length(tokenizer_json, context_length):
    texts = list(TEXTS.values())
    got = ClipTokenizer(tokenizer_json, context_length=context_length)(texts)
    assert got.shape == (len(texts), context_length)
    np.testing.assert_array_equal(got, expected(texts, context_length))


def test_code_points_across_unicode_split_as_open_clips_regex_does(tokenizer):
    """A sample of every block (the full range, 1.1M code points, agreed when written: too slow to keep here)."""
    points = [c for c in range(0x80, 0x110000, 211) if not 0xD800 <= c < 0xE000] + [0x345, 0x17F, 0x212A, 0x130]
    texts = [f"a{chr(c)}b 1{chr(c)}2 '{chr(c)} {chr(c)}'s .{chr(c)}. {chr(c)}{chr(c)}x" for c in points]
    np.testing.assert_array_equal(tokenizer(texts), expected(texts))


def test_one_string_is_one_text_and_no_texts_is_no_rows(tokenizer):
    np.testing.assert_array_equal(tokenizer("a red car"), expected(["a red car"]))
    assert tokenizer([]).shape == (0, 77)


def test_the_special_token_shortcut_misses_no_spelling():
    """A cleaned text reaches the piece-by-piece path only when it holds SPECIAL_MARK: no other spelling of
    the mark (by the regex module's case-insensitive matching) can survive lower case."""
    import regex

    everything = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000)
    for char in set(SPECIAL_MARK):
        variants = set(regex.findall(regex.escape(char), everything, flags=regex.IGNORECASE))
        assert {v.lower() for v in variants} == {char}, char


def test_the_vocab_file_is_open_clips_own(tokenizer_json):
    assert open_clip_vocab_file() == Path(open_clip.tokenizer.default_bpe())
    assert len(json.loads(tokenizer_json.read_text())["model"]["vocab"]) == 49408


def test_the_json_is_replaced_whole_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text("an older, broken file")
    build_tokenizer_json(open_clip_vocab_file(), path)
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.json"]
    np.testing.assert_array_equal(ClipTokenizer(path)(["a red car"]), expected(["a red car"]))


def test_tokenising_imports_neither_torch_nor_open_clip(tokenizer_json):
    code = ("import json, sys\n"
            "from xmodal.indexer.models.clip_tokenizer import ClipTokenizer, open_clip_vocab_file\n"
            "open_clip_vocab_file()\n"
            f"ids = ClipTokenizer({str(tokenizer_json)!r})(['a red car', 'we\\'ll pay $19.99'])\n"
            "loaded = [m for m in ('torch', 'open_clip') if m in sys.modules]\n"
            "print(json.dumps({'ids': ids.tolist(), 'loaded': loaded}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=env_with_tests_path())
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["loaded"] == []
    assert result["ids"] == expected(["a red car", "we'll pay $19.99"]).tolist()
