"""Every kind of model spec: build an index in one fresh process, search it in another.

The manifest's recorded identity must reopen the very model that built the index,
so a photo finds itself first with a cosine of 1.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CATALOG, TINY_MODEL_CFG, env_with_tests_path

QUERY = "03-green-car.png"


def hf_cache_repo(hf_home: Path, repo_id: str, files: dict[str, bytes | Path]) -> None:
    """A real Hugging Face cache layout, as a download would have left it."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for name, content in files.items():
        target = snapshot / name
        if isinstance(content, Path):
            shutil.copy(content, target)
        else:
            target.write_bytes(content)


def save_open_clip_weights(name: str, path: Path, seed: int) -> None:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = open_clip.create_model(name)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def spec_args(kind: str, tmp: Path, tiny_model_dir: Path, tiny_transformers_dir: Path) -> tuple[list[str], dict]:
    env = env_with_tests_path()
    if kind == "open_clip random weights":
        return ["--model", "ViT-S-32-alt", "--pretrained", "none"], env
    if kind == "open_clip checkpoint file":
        save_open_clip_weights("ViT-S-32-alt", tmp / "ckpt.safetensors", seed=7)
        return ["--model", "ViT-S-32-alt", "--pretrained", str(tmp / "ckpt.safetensors")], env
    if kind == "open_clip weights tag, cached, hub unreachable":
        save_open_clip_weights("ViT-B-32", tmp / "w.safetensors", seed=3)
        hf_cache_repo(tmp / "hf", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", {"open_clip_model.safetensors": tmp / "w.safetensors"})
        env.pop("HF_HUB_OFFLINE")
        # stand-in weights under the tag's name: their exports and identity stay out of the user's cache
        env.update(HF_HOME=str(tmp / "hf"), HF_ENDPOINT="http://127.0.0.1:9", XDG_CACHE_HOME=str(tmp / "cache"))
        return ["--model", "ViT-B-32"], env
    if kind == "local-dir":
        return ["--model", f"local-dir:{tiny_model_dir}"], env
    if kind == "hf-hub, cached":
        hf_cache_repo(tmp / "hf", "someone/tiny-clip", {
            "open_clip_config.json": json.dumps({"model_cfg": TINY_MODEL_CFG, "preprocess_cfg": {}}).encode(),
            "open_clip_model.safetensors": tiny_model_dir / "open_clip_model.safetensors"})
        env.update(HF_HOME=str(tmp / "hf"))
        return ["--model", "hf-hub:someone/tiny-clip"], env
    if kind == "transformers folder":
        return ["--model", f"transformers:{tiny_transformers_dir}"], env
    if kind == "offline":
        return ["--model", "offline"], env
    if kind == "python factory":
        return ["--model", "python:fakes:make_encoder"], env
    raise AssertionError(kind)


KINDS = ["open_clip random weights", "open_clip checkpoint file", "open_clip weights tag, cached, hub unreachable",
         "local-dir", "hf-hub, cached", "transformers folder", "offline", "python factory"]


def xmodal(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.app()", *args], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.parametrize("kind", KINDS)
def test_build_then_search_in_fresh_processes(kind, tmp_path, tiny_model_dir, tiny_transformers_dir):
    args, env = spec_args(kind, tmp_path, tiny_model_dir, tiny_transformers_dir)
    out = tmp_path / "idx"
    built = xmodal(env, "index", str(CATALOG / "images"), "--out", str(out), *args, "--workers", "0")
    assert built.returncode == 0, built.stderr[-2000:]
    found = xmodal(env, "search", str(out), "--image", str(CATALOG / "images" / QUERY), "-k", "1", "--json")
    assert found.returncode == 0, found.stderr[-2000:]
    hit = json.loads(found.stdout)["hits"][0]
    assert hit["path"] == str(CATALOG / "images" / QUERY) and hit["score"] > 0.999
    by_text = xmodal(env, "search", str(out), "a green car", "-k", "3")
    assert by_text.returncode == 0 and len(by_text.stdout.splitlines()) == 3, by_text.stderr[-2000:]
    assert "Loading weights" not in built.stderr + found.stderr + by_text.stderr  # no dependency's progress bars


def test_weights_rewritten_in_place_are_refused_by_a_rerun_and_a_query(tmp_path):
    """The same local-dir: folder over other weights is another model: its vectors must not join the index's,
    and a query must not be encoded by it. Found by a new user's trial: the re-run said "nothing changed"."""
    import subprocess
    import sys

    from conftest import CATALOG, env_with_tests_path, write_tiny_open_clip

    model = write_tiny_open_clip(tmp_path / "model", seed=0)
    out = tmp_path / "w.idx"

    def xmodal(*args):
        env = {**env_with_tests_path(), "XDG_CACHE_HOME": str(tmp_path / "cache")}
        return subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.run()", *args], env=env,
                              capture_output=True, text=True, timeout=300)

    assert xmodal("index", str(CATALOG / "images"), "--out", str(out), "--model", f"local-dir:{model}").returncode == 0
    manifest = (out / "manifest.json").read_bytes()
    write_tiny_open_clip(model, seed=1)  # new weights, same folder
    for refused in (xmodal("index", str(CATALOG / "images"), "--out", str(out)),
                    xmodal("search", str(out), "a red car")):
        assert refused.returncode != 0 and "Traceback" not in refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith(f"error: the weights in local-dir:{model.resolve()} changed since this index was built")
        assert line.endswith("put those weights back, or index into a new --out folder with these")
    assert (out / "manifest.json").read_bytes() == manifest
    write_tiny_open_clip(model, seed=0)  # the weights it was built with, back
    assert xmodal("search", str(out), "a red car").returncode == 0
