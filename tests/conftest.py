"""Shared, hermetic fixtures: tiny random-weight models on disk and real image files. No downloads."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
CATALOG = REPO / "data" / "catalog"
sys.path.insert(0, str(TESTS))  # makes `fakes` importable, as python:fakes:make_encoder does via PYTHONPATH

from system_tools import pytest_configure, pytest_runtest_setup  # noqa: E402,F401  (hooks: tests' system programs)

# The first run of a model on a machine measures the ways it can run (indexer/models/calibrate.py): seconds per
# model, and a choice that follows timings. Tests, and the processes they start, run the shipped table's choice,
# the same on every run; tests/test_calibrate.py turns measuring on where it tests it.
os.environ["XMODAL_CALIBRATE"] = "off"

# The tiny open_clip config from the field guide: real architecture, random weights, fast.
TINY_MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def write_tiny_open_clip(folder: Path, seed: int = 0) -> Path:
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_MODEL_CFG, "preprocess_cfg": {}}))
    torch.manual_seed(seed)
    save_file(open_clip.CLIP(**TINY_MODEL_CFG).state_dict(), str(folder / "open_clip_model.safetensors"))
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return write_tiny_open_clip(tmp_path_factory.mktemp("tiny_open_clip"))


@pytest.fixture(scope="session")
def tiny_spec(tiny_model_dir) -> str:
    return f"local-dir:{tiny_model_dir}"


@pytest.fixture(scope="session")
def tiny_encoder(tiny_spec):
    from xmodal.indexer.models import load_encoder

    return load_encoder(tiny_spec, device="cpu")


@pytest.fixture(scope="session")
def tiny_transformers_dir(tmp_path_factory):
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = tmp_path_factory.mktemp("tiny_hf_clip")
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab.update({c: 2 + i for i, c in enumerate(letters)})
    vocab.update({c + "</w>": 28 + i for i, c in enumerate(letters)})
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                              pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                  crop_size={"height": 32, "width": 32}),
                              tokenizer=tokenizer)
    processor.save_pretrained(folder)
    return folder


def noise_image(seed: int, size=(72, 56)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """Eleven distinct real image files in nested folders and several formats."""
    root = tmp_path / "photos"
    (root / "a" / "b").mkdir(parents=True)
    formats = [("png", "PNG"), ("jpg", "JPEG"), ("webp", "WEBP"), ("bmp", "BMP"), ("tiff", "TIFF")]
    for i in range(11):
        ext, fmt = formats[i % len(formats)]
        folder = [root, root / "a", root / "a" / "b"][i % 3]
        noise_image(i).save(folder / f"img{i:02d}.{ext}", fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return root


@pytest.fixture
def forty_jpegs(tmp_path) -> Path:
    """Forty distinct 300x200 JPEGs in one folder: enough for several batches and both decoding workers."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(40):
        noise_image(i, size=(300, 200)).save(folder / f"p{i:02d}.jpg", quality=90)
    return folder


@pytest.fixture
def texts_csv(tmp_path) -> Path:
    path = tmp_path / "texts.csv"
    path.write_text("sku,text,price\nA1,a photo of a dog,10\nB2,a red sports car,20000\n"
                    "C3,a bowl of soup,5\nD4,a mountain at dawn,0\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch):
    """Tests never reach a model hub, whatever the machine's network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# An x86-64 CPU with AVX2 and nothing newer (AMD Zen 2 and 3, Intel Haswell to Comet Lake): its cpuinfo flags,
# and the XMODAL_CPU_FEATURES setting that makes any newer x86 CPU run xmodal as it would.
AVX2_CPU_FLAGS = frozenset("fpu tsc cx8 cmov mmx sse sse2 ssse3 sse4_1 sse4_2 popcnt aes pclmulqdq avx f16c fma "
                           "bmi1 bmi2 avx2 movbe xsave".split())
AVX2_ONLY = "-avx512*,-amx*,-avx_vnni*"


@pytest.fixture
def avx2_cpu(monkeypatch):
    """This machine taken for an AVX2-only CPU: in this process, the product's one CPU detector
    (device.cpu_features) answers AVX2's flags; in the processes a test starts, XMODAL_CPU_FEATURES masks
    everything newer (the user-facing override the detector honours)."""
    from xmodal.indexer.models import device

    monkeypatch.setattr(device, "cpu_features", lambda: AVX2_CPU_FLAGS)
    monkeypatch.setenv("XMODAL_CPU_FEATURES", ",".join(filter(None, (os.environ.get("XMODAL_CPU_FEATURES"),
                                                                     AVX2_ONLY))))


def env_with_tests_path() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])  # xmodal is installed
    env["HF_HUB_OFFLINE"] = "1"
    return env
