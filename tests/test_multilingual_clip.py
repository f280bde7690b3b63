"""Models that read Chinese (issue 28, item 6): open_clip's xlm-roberta-base-ViT-B-32 and transformers'
Chinese-CLIP run end to end, built here with random weights in their real architectures (an XLM-RoBERTa text
tower with a SentencePiece-style tokenizer beside a ViT; a Chinese BERT beside a ViT), so that a user who has the
real weights searches a Chinese catalog in Chinese, untranslated, and the index records what its model reads.
Nothing is downloaded."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import xmodal
from conftest import env_with_tests_path, noise_image
from xmodal.indexer.models import encode_images, load_encoder

SEED = "我想要买一辆红色汽车"
# The shop's products, described in Chinese, with their photos (plain colours: the weights are random anyway).
PRODUCTS = [("CAR-001", "红色跑车，两门，里程低", "red"), ("MUG-008", "黄色的陶瓷咖啡杯", "yellow"),
            ("BIKE-005", "黑色城市自行车", "black"), ("TEE-010", "绿色的棉T恤", "green")]
# What the tiny tokenizers learn from: shop words in both languages.
SENTENCES = [text for _, text, _ in PRODUCTS] + [
    SEED, "给孩子的小自行车", "白色运动鞋", "a red sports car", "yellow coffee mug", "black city bicycle",
    "green cotton t-shirt", "white running shoes", "a small bicycle for children"]
TINY_VISION = {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16}


def xmodal_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.run()", *args], capture_output=True,
                          text=True, timeout=300, env=env or env_with_tests_path())


def without_the_hub(home: Path) -> dict[str, str]:
    """A machine that cannot reach the hub, with the Hugging Face cache in `home`, and no HF_HUB_OFFLINE set:
    xmodal must find out for itself."""
    env = env_with_tests_path()
    del env["HF_HUB_OFFLINE"]
    env.update(HF_HOME=str(home), HF_ENDPOINT="http://127.0.0.1:9")  # the discard port: refused at once
    return env


def xlm_roberta_tokenizer(folder: Path):
    """An XLM-R-style tokenizer (a SentencePiece Unigram model, XLM-R's special tokens and ids) trained on the
    shop's sentences, saved where transformers' AutoTokenizer loads it."""
    import transformers
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
    from tokenizers.models import Unigram

    tokenizer = Tokenizer(Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace()])
    tokenizer.decoder = decoders.Metaspace()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # XLM-R's ids 0-3 (and a mask)
    tokenizer.train_from_iterator(SENTENCES * 4, trainers.UnigramTrainer(vocab_size=300, special_tokens=specials,
                                                                         unk_token="<unk>"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    # transformers 5's XLMRobertaTokenizer is the tokenizers-backed one; 4's is XLMRobertaTokenizerFast
    kind = getattr(transformers, "XLMRobertaTokenizerFast", None) or transformers.XLMRobertaTokenizer
    wrapped = kind(tokenizer_object=tokenizer)
    wrapped.save_pretrained(folder)
    return wrapped


@pytest.fixture(scope="module")
def xlmr_dir(tmp_path_factory) -> Path:
    """open_clip's xlm-roberta-base-ViT-B-32 in small: its text_cfg names a Hugging Face XLM-RoBERTa (config and
    tokenizer in a folder whose name says nothing of languages), mean-pooled, beside a ViT; local-dir: layout,
    whose tokenizer open_clip reads from the model's own folder."""
    import open_clip
    import transformers
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("tiny_clip_m")
    text = folder / "text-tower"
    tokenizer = xlm_roberta_tokenizer(text)
    tokenizer.save_pretrained(folder)
    transformers.XLMRobertaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=80, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    ).save_pretrained(text)  # 77 tokens after XLM-R's position offset of 2
    text_cfg = {"hf_model_name": str(text), "hf_tokenizer_name": str(text), "hf_pooler_type": "mean_pooler"}
    model_cfg = {"embed_dim": 32, "vision_cfg": TINY_VISION, "text_cfg": text_cfg}
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": {}}))
    torch.manual_seed(0)
    model = open_clip.CustomTextCLIP(embed_dim=32, vision_cfg=TINY_VISION,
                                     text_cfg={**text_cfg, "hf_model_pretrained": False})
    save_file(model.state_dict(), str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture(scope="module")
def chinese_clip_dir(tmp_path_factory) -> Path:
    """A ChineseCLIPModel in small: a BERT text tower whose vocab.txt holds Chinese characters and English words,
    a ViT, and Chinese-CLIP's image processor, saved as the hub's OFA-Sys/chinese-clip-* folders are."""
    from transformers import (BertTokenizer, ChineseCLIPConfig, ChineseCLIPImageProcessor, ChineseCLIPModel,
                              ChineseCLIPProcessor)

    folder = tmp_path_factory.mktemp("tiny_chinese_clip")
    characters = sorted({c for sentence in SENTENCES for c in sentence if not c.isascii()})
    words = sorted({w for sentence in SENTENCES for w in sentence.lower().split() if w.isascii()})
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters, *words, "t"]) + "\n",
                     encoding="utf-8")
    tokenizer = BertTokenizer(str(vocab))
    config = ChineseCLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    ChineseCLIPModel(config).save_pretrained(folder)
    processor = ChineseCLIPImageProcessor(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32})
    ChineseCLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def chinese_shop(tmp_path_factory) -> Path:
    """A catalog written in Chinese: a table whose descriptions are Chinese, each row with its photo."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("zh_shop")
    rows = ["sku,description,image"]
    for sku, description, colour in PRODUCTS:
        Image.new("RGB", (80, 60), colour).save(folder / f"{sku}.png")
        rows.append(f"{sku},{description},{sku}.png")
    (folder / "products.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder / "products.csv"


@pytest.fixture(scope="module")
def xlmr_index(xlmr_dir, chinese_shop, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    out = tmp_path_factory.mktemp("xlmr_idx") / "shop.idx"
    done = xmodal_cli("index", "--texts", str(chinese_shop), "--text-column", "description", "--image-column",
                      "image", "--id-column", "sku", "--model", f"local-dir:{xlmr_dir}", "--workers", "0",
                      "--out", str(out))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return out, env_with_tests_path()


@pytest.fixture(scope="module")
def chinese_clip_index(chinese_clip_dir, chinese_shop, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Built through the API, as `xmodal index` builds it (a subprocess each is slow; the CLI builds the other)."""
    out = tmp_path_factory.mktemp("cnclip_idx") / "shop.idx"
    xmodal.build_index(out, xmodal.IndexConfig(texts=[chinese_shop], text_column="description", image_column="image",
                                               id_column="sku", model=f"transformers:{chinese_clip_dir}", workers=0))
    return out, env_with_tests_path()


def test_xlm_roberta_clip_matches_open_clips_own_encoders(xlmr_dir):
    import open_clip

    spec = f"local-dir:{xlmr_dir}"
    encoder = load_encoder(spec, device="cpu", runtime="torch", precision="fp32")
    model, _, preprocess = open_clip.create_model_and_transforms(spec)
    tokenizer = open_clip.get_tokenizer(spec)
    images, texts = [noise_image(i) for i in range(3)], [SEED, "黄色的咖啡杯", "a red sports car"]
    with torch.no_grad():
        want_images = model.eval().encode_image(torch.stack([preprocess(image) for image in images]))
        want_texts = model.encode_text(tokenizer(texts))
    np.testing.assert_allclose(encode_images(encoder, images),
                               torch.nn.functional.normalize(want_images, dim=-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(encoder.encode_texts(texts),
                               torch.nn.functional.normalize(want_texts, dim=-1).numpy(), atol=1e-5)
    # nothing in the spec or the tower's folder names a language: the text tower's kind (xlm-roberta) tells
    assert encoder.identity.reads == ("*",)
    # the tokenizer is XLM-R's kind, not CLIP's lowercasing BPE: the Chinese is read, not dropped as unknown
    assert len(set(tokenizer([SEED])[0].tolist()) - {0, 1, 2, 3}) >= 8


def test_chinese_clip_matches_its_own_features(chinese_clip_dir):
    from transformers import AutoModel, AutoProcessor

    encoder = load_encoder(f"transformers:{chinese_clip_dir}", device="cpu")
    model = AutoModel.from_pretrained(chinese_clip_dir).eval()
    processor = AutoProcessor.from_pretrained(chinese_clip_dir)
    images, texts = [noise_image(i) for i in range(3)], [SEED, "黄色的咖啡杯", "a red sports car"]
    with torch.no_grad():
        inputs = processor(text=texts, images=images, return_tensors="pt", padding=True)
        want_texts = model.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                             token_type_ids=inputs["token_type_ids"])
        want_images = model.get_image_features(pixel_values=inputs["pixel_values"])
    want_texts, want_images = (getattr(w, "pooler_output", w) for w in (want_texts, want_images))  # transformers 5
    np.testing.assert_allclose(encode_images(encoder, images),
                               torch.nn.functional.normalize(want_images, dim=-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(encoder.encode_texts(texts),
                               torch.nn.functional.normalize(want_texts, dim=-1).numpy(), atol=1e-5)
    assert processor.tokenizer.unk_token_id not in processor.tokenizer(SEED)["input_ids"]


@pytest.mark.parametrize("index, reads, shown", [
    ("xlmr_index", ["*"], "reads many languages"),
    ("chinese_clip_index", ["zh", "en"], "reads Chinese and English"),
])
def test_a_chinese_query_is_searched_as_typed(request, index, reads, shown):
    index, env = request.getfixturevalue(index)
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["model"]["reads"] == reads
    found = xmodal_cli("search", str(index), SEED, "-k", "4", "--json", env=env)
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    assert result["query"]["language"] == "zh" and result["query"]["translation"] is None
    assert result["query"]["text"] == SEED
    assert sorted(hit["key"] for hit in result["hits"]) == sorted(sku for sku, _, _ in PRODUCTS)
    assert "note:" not in found.stderr and "searched as" not in found.stderr, found.stderr
    info = xmodal_cli("info", str(index), env=env)
    assert info.returncode == 0, info.stderr
    assert [line for line in info.stdout.splitlines() if line.startswith("model:")][0].endswith("; " + shown)


def index_without_the_hub(tmp_path: Path, table: Path, *model: str) -> subprocess.CompletedProcess:
    return xmodal_cli("index", "--texts", str(table), "--text-column", "description", "--id-column", "sku", *model,
                      "--out", str(tmp_path / "shop.idx"), env=without_the_hub(tmp_path / "hf"))


def test_the_hub_spec_without_its_weights_is_one_line(chinese_shop, tmp_path):
    done = index_without_the_hub(tmp_path, chinese_shop, "--model", "xlm-roberta-base-ViT-B-32")
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: weights xlm-roberta-base-ViT-B-32 (laion5b_s13b_b90k) are not in the "
                                  "local cache") and "--model offline" in done.stderr


def test_a_checkpoint_without_its_text_tower_says_what_is_missing(chinese_shop):
    """XLM-R's CLIP builds its text tower from xlm-roberta-base's Hugging Face config and tokenizer, from the hub
    or its cache, even beside a local checkpoint: where neither has them, the line says so (it said 'pass a local
    checkpoint', which had been passed, after huggingface_hub's retries)."""
    from huggingface_hub import try_to_load_from_cache

    from xmodal.indexer.errors import ModelUnavailableError

    if isinstance(try_to_load_from_cache("xlm-roberta-base", "config.json"), str):
        pytest.skip("this machine's Hugging Face cache holds xlm-roberta-base")
    with pytest.raises(ModelUnavailableError, match=r"^could not load model 'xlm-roberta-base-ViT-B-32': its text "
                                                    r"tower, the Hugging Face model xlm-roberta-base \(config and "
                                                    "tokenizer\\), is not in the local cache and the model hub "
                                                    "cannot be reached; run the same command once") as caught:
        load_encoder("xlm-roberta-base-ViT-B-32", pretrained=str(chinese_shop), device="cpu", runtime="torch")
    assert "\n" not in str(caught.value)


def test_the_hub_spec_loads_from_a_filled_cache_at_once_without_the_hub(xlmr_dir, chinese_shop, tmp_path):
    """The built-in spec, as a user who ran it once where the hub could be reached has it: open_clip takes
    xlm-roberta-base (here, the tiny tower: config, tokenizer and, for --pretrained none, its weights) from the
    Hugging Face cache. It asked the hub anyway for each tokenizer file the cache lacks: 2.5 minutes of
    huggingface_hub retrying, 60 warning lines."""
    import transformers

    snapshot = tmp_path / "hf" / "hub" / "models--xlm-roberta-base" / "snapshots" / "0123abc"
    shutil.copytree(xlmr_dir / "text-tower", snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0123abc")
    config = transformers.AutoConfig.from_pretrained(snapshot)
    transformers.XLMRobertaModel(config, add_pooling_layer=False).save_pretrained(snapshot)
    done = index_without_the_hub(tmp_path, chinese_shop, "--model", "xlm-roberta-base-ViT-B-32", "--pretrained", "none",
                                 "--image-column", "image")
    assert done.returncode == 0 and "Retrying" not in done.stderr, done.stderr
    assert json.loads((tmp_path / "shop.idx" / "manifest.json").read_text())["model"]["reads"] == ["*"]


def test_a_local_dir_without_its_tokenizer_says_where_it_goes(xlmr_dir, tmp_path):
    from xmodal.indexer.errors import ModelUnavailableError

    bare = shutil.copytree(xlmr_dir, tmp_path / "bare", ignore=shutil.ignore_patterns("tokenizer*"))
    with pytest.raises(ModelUnavailableError, match="reads a local-dir: model's Hugging Face tokenizer from that "
                                                    "folder; save it there beside open_clip_config.json"):
        load_encoder(f"local-dir:{bare}", device="cpu", runtime="torch")


@pytest.mark.parametrize("model_type, names, reads", [
    ("xlm-roberta", ("/models/text-tower",), ("*",)),  # a local copy: its kind tells
    ("roberta", ("xlm-roberta-base",), ("*",)),  # a hub name tells
    ("chinese_clip", ("/models/cn",), ("zh", "en")),
    ("altclip", (None,), ("*",)),
    ("bert", ("bert-base-uncased", None), None),  # English: the caller's spec decides
    (None, (), None),
])
def test_a_text_towers_languages_are_told_by_its_kind_or_its_names(model_type, names, reads):
    from xmodal.indexer.models.base import text_model_languages

    assert text_model_languages(model_type, *names) == reads
