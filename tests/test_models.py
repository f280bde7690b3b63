"""Model registry and backends: parity with open_clip / transformers, clear failures, no downloads."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import REPO, env_with_tests_path, noise_image
from xmodal.indexer.errors import InvalidInputError, ModelUnavailableError, UnknownModelError
from xmodal.indexer.models import encode_images, load_encoder, register_model


def test_open_clip_local_dir_matches_open_clip_own_encode(tiny_spec, tiny_encoder):
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(tiny_spec)
    model.eval()
    tokenizer = open_clip.get_tokenizer(tiny_spec)
    images = [noise_image(i) for i in range(3)]
    texts = ["a red car", "a dog", "我想买一辆红色汽车"]
    with torch.no_grad():
        want_img = model.encode_image(torch.stack([preprocess(im) for im in images]))
        want_txt = model.encode_text(tokenizer(texts))
    want_img = torch.nn.functional.normalize(want_img, dim=-1).numpy()
    want_txt = torch.nn.functional.normalize(want_txt, dim=-1).numpy()
    np.testing.assert_allclose(encode_images(tiny_encoder, images), want_img, atol=1e-5)
    np.testing.assert_allclose(tiny_encoder.encode_texts(texts), want_txt, atol=1e-5)


def test_identity_records_model_preprocessing_and_versions(tiny_encoder, tiny_model_dir):
    identity = tiny_encoder.identity
    assert identity.family == "open_clip"
    assert identity.spec == f"local-dir:{tiny_model_dir.resolve()}"
    assert identity.dim == 32
    assert identity.preprocess["size"] in (64, [64, 64])
    assert "mean" in identity.preprocess and "std" in identity.preprocess
    assert set(identity.versions) >= {"open_clip", "torch"}


def test_named_model_with_checkpoint_file_loads_those_weights(tmp_path, tiny_model_dir):
    import open_clip
    from safetensors.torch import save_file

    reference = open_clip.create_model("ViT-B-32")  # random weights
    ckpt = tmp_path / "vitb32.safetensors"
    save_file(reference.state_dict(), str(ckpt))
    encoder = load_encoder("ViT-B-32", pretrained=str(ckpt), device="cpu")
    assert encoder.identity.pretrained == str(ckpt.resolve())
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    with torch.no_grad():
        want = torch.nn.functional.normalize(reference.eval().encode_text(tokenizer(["a cat"])), dim=-1)
    np.testing.assert_allclose(encoder.encode_texts(["a cat"]), want.numpy(), atol=1e-5)


@pytest.mark.parametrize("name, content", [("listings.csv", b"id,title\n1,a red car\n"),
                                           ("truncated.pt", b"\x80\x02}q\x00(X")])
def test_a_weights_file_that_is_not_a_checkpoint_is_one_line(tmp_path, name, content):
    """A CSV or a truncated download passed as --pretrained raised torch's IndexError / UnpicklingError."""
    weights = tmp_path / name
    weights.write_bytes(content)
    out = tmp_path / "photos.idx"
    done = subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.run()", "index",
                           str(REPO / "data" / "catalog" / "images"), "--out", str(out), "--model", "ViT-B-32",
                           "--pretrained", str(weights)], capture_output=True, text=True, timeout=300,
                          env=env_with_tests_path())
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: {weights} is not a checkpoint ViT-B-32 can load (")
    assert done.stderr.endswith("pass a .safetensors, .pt or .bin file of its weights\n")
    assert len(done.stderr.splitlines()) == 1 and not out.exists()


def test_unknown_model_names_close_matches():
    with pytest.raises(UnknownModelError, match="did you mean.*ViT-B-32"):
        load_encoder("ViT-B-33", device="cpu")


def test_unknown_weights_tag_lists_known_tags():
    with pytest.raises(UnknownModelError, match="laion2b_s34b_b79k"):
        load_encoder("ViT-B-32", pretrained="no-such-tag", device="cpu")


def test_uncached_weights_offline_fail_fast_with_the_way_out():
    # HF_HUB_OFFLINE=1 is set for every test (conftest): this must not try the network.
    with pytest.raises(ModelUnavailableError) as err:
        load_encoder("ViT-B-32", pretrained="laion2b_s34b_b79k", device="cpu")
    message = str(err.value)
    assert "\n" not in message
    assert "not in the local cache" in message and "local-dir:" in message
    assert "pretrained='/path/to/weights.safetensors'" in message and "model='offline'" in message  # API terms
    assert "--pretrained /path/to/weights.safetensors" in err.value.for_cli()  # CLI terms


def test_unreachable_hub_fails_in_seconds_not_minutes(tmp_path):
    """No HF_HUB_OFFLINE, an unroutable endpoint: the probe must answer, not hub retries."""
    env = env_with_tests_path()
    env.pop("HF_HUB_OFFLINE")
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # discard port: connection refused at once
    env["HF_HOME"] = str(tmp_path / "hf")
    code = ("from xmodal.indexer.models import load_encoder\n"
            "from xmodal.indexer.errors import ModelUnavailableError\n"
            "try:\n load_encoder('ViT-B-32', device='cpu')\n"
            "except ModelUnavailableError as e: print('OK', e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("OK "), out.stderr[-2000:]


def test_local_dir_without_config_is_an_unknown_model(tmp_path):
    with pytest.raises(UnknownModelError, match="open_clip_config.json"):
        load_encoder(f"local-dir:{tmp_path}", device="cpu")


def test_cuda_requested_without_gpu_is_refused(tiny_spec):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(InvalidInputError, match="device='cuda' was asked for.*use device='cpu'"):
        load_encoder(tiny_spec, device="cuda")


def test_python_factory_and_registered_names():
    encoder = load_encoder("python:fakes:make_encoder", device="cpu")
    assert encoder.identity.family == "fake"
    register_model("my-fake", lambda pretrained, device: encoder)
    assert load_encoder("my-fake", device="cpu") is encoder
    with pytest.raises(UnknownModelError, match="python:MODULE:FACTORY"):
        load_encoder("python:nocolon", device="cpu")
    with pytest.raises(UnknownModelError, match="cannot import"):
        load_encoder("python:no_such_module_xyz:make", device="cpu")


def test_transformers_clip_matches_its_own_features(tiny_transformers_dir):
    from transformers import AutoModel, AutoProcessor

    encoder = load_encoder(f"transformers:{tiny_transformers_dir}", device="cpu")
    assert encoder.identity.family == "transformers" and encoder.identity.dim == 16
    model = AutoModel.from_pretrained(tiny_transformers_dir).eval()
    processor = AutoProcessor.from_pretrained(tiny_transformers_dir)
    images = [noise_image(i) for i in range(2)]
    with torch.no_grad():
        out = model(**processor(text=["a red car", "dog"], images=images, return_tensors="pt", padding=True))
    np.testing.assert_allclose(encode_images(encoder, images), out.image_embeds.numpy(), atol=1e-5)
    np.testing.assert_allclose(encoder.encode_texts(["a red car", "dog"]), out.text_embeds.numpy(), atol=1e-5)


def test_transformers_missing_model_offline_is_one_line():
    with pytest.raises(ModelUnavailableError, match="could not load transformers model"):
        load_encoder("transformers:no-org/no-such-model", device="cpu")


def test_cached_hub_weights_load_when_the_hub_is_unreachable(tmp_path):
    """The common offline case: weights downloaded once, hub now out of reach. Real HF cache layout."""
    import open_clip
    from safetensors.torch import save_file

    repo = tmp_path / "hf" / "hub" / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    torch.manual_seed(3)
    reference = open_clip.create_model("ViT-B-32").eval()
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()},
              str(snapshot / "open_clip_model.safetensors"))
    env = env_with_tests_path()
    env.pop("HF_HUB_OFFLINE")
    # these stand-in weights must never reach the user's export cache as the tag's own: a run there would use them
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9",
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    code = ("import json\nfrom xmodal.indexer.models import load_encoder\n"
            "e = load_encoder('ViT-B-32', device='cpu')\n"
            "print(json.dumps({'identity': e.identity.to_dict(), 'text': e.encode_texts(['a cat'])[0].tolist()}))\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    result = __import__("json").loads(out.stdout.strip().splitlines()[-1])
    identity = result["identity"]
    assert identity["spec"] == "ViT-B-32" and identity["pretrained"] == "laion2b_s34b_b79k"
    assert identity["preprocess"]["interpolation"] == "bicubic"  # the tag's preprocessing, not the default
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    with torch.no_grad():
        want = torch.nn.functional.normalize(reference.encode_text(tokenizer(["a cat"])), dim=-1)[0].numpy()
    np.testing.assert_allclose(result["text"], want, atol=1e-5)
