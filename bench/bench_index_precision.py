"""`xmodal index` end to end, and `xmodal eval`, for each runtime and precision, side by side (issue 23).

    python bench/bench_index_precision.py --images 192 --repeats 3 [--models offline ViT-B-32] [--eval 1000]

For each model (the offline model: real weights; ViT-B-32 from a seeded random-weight checkpoint written
to the work folder: speed only) and each way of running it (torch fp32 as before issue 23, what `auto`
picks now, and the opt-in ways), a fresh `xmodal index` process indexes the same photo-like JPEGs
(640x480): wall time of the whole process (median of --repeats), images/s, and the lowest and mean cosine
of each stored image vector to torch fp32's. The export cache is warmed first (an export happens once per
model and machine). With --eval N (offline model only), `xmodal eval` on N Fashion-MNIST test images
(dataset-fashion-mnist): P@10, mAP and zero-shot top-1 for each way, and the change against torch fp32.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
XMODAL = [sys.executable, "-c", "from xmodal import cli; cli.run()"]
BEFORE = ("torch", "fp32")
WAYS = {
    "offline": [BEFORE, ("auto", "auto"), ("torch", "bf16"), ("onnx", "fp32"), ("openvino", "fp32")],
    "ViT-B-32": [BEFORE, ("auto", "auto"), ("onnx", "int8"), ("openvino", "bf16")],
}


def model_args(model: str, workdir: Path) -> list[str]:
    if model == "offline":
        return ["--model", "offline"]
    checkpoint = workdir / "vit-b-32.safetensors"
    if not checkpoint.exists():
        import open_clip
        import torch
        from safetensors.torch import save_file

        torch.manual_seed(0)
        save_file({k: v.contiguous() for k, v in open_clip.create_model("ViT-B-32").state_dict().items()},
                  str(checkpoint))
    return ["--model", "ViT-B-32", "--pretrained", str(checkpoint)]


def index_once(photos: Path, out: Path, args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(XMODAL + ["index", str(photos), "--out", str(out), *args], check=True, capture_output=True,
                   text=True)
    return time.perf_counter() - started


def stored_images(index: Path) -> dict[str, np.ndarray]:
    from xmodal.search import open_index

    opened = open_index(index)
    row_ids, vectors = opened.embeddings("image")
    return {opened.item(int(row))["path"]: vector for row, vector in zip(row_ids, vectors)}


def way_args(way: tuple[str, str]) -> list[str]:
    return [] if way == ("auto", "auto") else ["--runtime", way[0], "--precision", way[1]]


def bench_model(model: str, photos: Path, count: int, repeats: int, workdir: Path) -> None:
    base = model_args(model, workdir)
    reference = None
    for way in WAYS[model]:
        warm = workdir / f"warm-{model}-{'-'.join(way)}.idx"
        index_once(photos, warm, base + way_args(way))  # exports once, and warms the page cache
        chosen = json.loads(subprocess.run(XMODAL + ["info", str(warm), "--json"], check=True,
                                           capture_output=True, text=True).stdout)["model"]
        seconds = []
        for repeat in range(repeats):
            out = workdir / f"{model}-{'-'.join(way)}-{repeat}.idx"
            seconds.append(index_once(photos, out, base + way_args(way)))
        vectors = stored_images(out)
        if reference is None:
            reference, before = vectors, statistics.median(seconds)
        cosines = np.array([float(vectors[p] @ reference[p]) for p in reference])
        median = statistics.median(seconds)
        label = f"{way[1]} on {way[0]}" + (f" ({chosen['precision']} on {chosen['runtime']})" if way[0] == "auto" else "")
        print(f"{model:<9} {label:<34} xmodal index {median:6.1f} s  {count / median:6.1f} images/s  "
              f"x{before / median:4.2f}  cosine to torch fp32 min {cosines.min():.4f} mean {cosines.mean():.4f}",
              flush=True)


def bench_eval(count: int, workdir: Path) -> None:
    from bench.bench_decode_parity import write_fmnist_set

    dataset = write_fmnist_set(workdir / "fmnist", count)
    before = None
    for way in WAYS["offline"]:
        result = json.loads(subprocess.run(XMODAL + ["eval", str(dataset), "--model", "offline", "--json",
                                                     *way_args(way)], check=True, capture_output=True,
                                           text=True).stdout)
        figures = {"P@10": result["text_to_image"]["precision@10"], "mAP": result["text_to_image"]["mAP"],
                   "top-1": result["image_to_text"]["top1"]}
        before = before or figures
        shown = ", ".join(f"{name} {value:.4f} ({value - before[name]:+.4f})" for name, value in figures.items())
        print(f"offline   eval {way[1]} on {way[0]:<9} {count} Fashion-MNIST images: {shown}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(WAYS))
    parser.add_argument("--eval", type=int, default=0, metavar="N")
    args = parser.parse_args()
    from bench.bench_index import make_photos

    print(f"python bench/bench_index_precision.py --images {args.images} --repeats {args.repeats} "
          f"--models {' '.join(args.models)}" + (f" --eval {args.eval}" if args.eval else ""))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        os.environ["XDG_CACHE_HOME"] = str(workdir / "cache")  # exports go with the run, not the user's cache
        photos = workdir / "photos"
        photos.mkdir()
        make_photos(photos, args.images)
        for model in args.models:
            bench_model(model, photos, args.images, args.repeats, workdir)
        if args.eval:
            bench_eval(args.eval, workdir)
    print("(whole `xmodal index` processes: start-up, model load, decoding, encoding and writing; medians)")


if __name__ == "__main__":
    main()
