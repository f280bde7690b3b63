"""What reduced JPEG decoding (`--decode reduced`, the default) does to embeddings and to retrieval.

    python bench/bench_decode_parity.py --model offline --fmnist 2000
    python bench/bench_decode_parity.py --model tiny --fmnist 0

Two sets of camera-sized JPEGs (quality 90) are made in a temporary folder:
- the real photos that ship in scikit-image, scikit-learn and matplotlib, enlarged 3x (LANCZOS) to camera
  size (1,300-4,200 px a side), each with a caption: a captions set (tests/photos.py's queries and more);
- the first N Fashion-MNIST test images enlarged to 896x896: a labelled folder (10 classes).
Each set is encoded twice with the same loaded model, decoded exactly and reduced, and the script prints
the cosine between each image's two vectors and `search.evaluation` on both sets both ways.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

# (caption, package, file in the package's data folder)
CAPTIONED = [
    ("a cat", "skimage", "chelsea.png"),
    ("a cup of coffee", "skimage", "coffee.png"),
    ("a rocket on the launch pad", "skimage", "rocket.jpg"),
    ("a motorcycle", "skimage", "motorcycle_left.png"),
    ("an astronaut in a space suit", "skimage", "astronaut.png"),
    ("a horse", "skimage", "horse.png"),
    ("galaxies in deep space", "skimage", "hubble_deep_field.jpg"),
    ("the retina of an eye", "skimage", "retina.jpg"),
    ("a chinese temple", "sklearn", "images/china.jpg"),
    ("a flower", "sklearn", "images/flower.jpg"),
    ("a portrait of a woman in uniform", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
]
ENLARGE = 3
FMNIST_SIDE = 896


def package_file(package: str, name: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0])
    return folder / ("data" if package == "skimage" else "datasets" if package == "sklearn" else "") / name


def write_captions_set(out: Path) -> Path:
    out.mkdir(parents=True)
    rows = ["image,caption"]
    for i, (caption, package, name) in enumerate(CAPTIONED):
        source = package_file(package, name)
        if source is None or not source.is_file():
            print(f"  (no {package} {name}: skipped)")
            continue
        photo = Image.open(source).convert("RGB")
        photo = photo.resize((photo.width * ENLARGE, photo.height * ENLARGE), Image.LANCZOS)
        photo.save(out / f"{i:02d}.jpg", quality=90)
        rows.append(f"{i:02d}.jpg,{caption}")
    (out / "captions.csv").write_text("\n".join(rows) + "\n")
    return out / "captions.csv"


def write_fmnist_set(out: Path, count: int) -> Path:
    from bench.export_fashion_mnist import CLASSES, SOURCE, read_idx

    images = read_idx(SOURCE / "t10k-images-idx3-ubyte.gz")[:count]
    labels = read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz")[:count]
    for name in CLASSES:
        (out / name).mkdir(parents=True, exist_ok=True)
    for i, (pixels, label) in enumerate(zip(images, labels)):
        garment = Image.fromarray(255 - pixels).convert("RGB").resize((FMNIST_SIDE, FMNIST_SIDE), Image.BICUBIC)
        garment.save(out / CLASSES[label] / f"{i:05d}.jpg", quality=90)
    return out


def load_model(spec: str, workdir: Path):
    from xmodal.indexer.models import load_encoder

    if spec == "tiny":
        from conftest import write_tiny_open_clip
        spec = f"local-dir:{write_tiny_open_clip(workdir / 'tiny')}"
    return load_encoder(spec, None, "cpu")


def compare(encoder, paths: list[str], workers: int | None) -> None:
    from xmodal.indexer.build.encode_files import encode_image_files

    vectors, rates = {}, {}
    for mode in ("exact", "reduced"):
        started = time.perf_counter()
        encoded = encode_image_files(encoder, paths, workers=workers, decode=mode)
        rates[mode] = len(paths) / (time.perf_counter() - started)
        vectors[mode] = dict(zip((d.path for d in encoded.images), encoded.vectors))
    cosines = np.array([float(vectors["exact"][p] @ vectors["reduced"][p]) for p in vectors["exact"]])
    print(f"  cosine(exact, reduced) over {len(cosines)} images: min {cosines.min():.4f}  "
          f"p1 {np.percentile(cosines, 1):.4f}  mean {cosines.mean():.4f}")
    print(f"  images/s (decode + preprocess + encode): exact {rates['exact']:.1f}, reduced {rates['reduced']:.1f}")


def evaluate_both(encoder, dataset: Path, workers: int | None) -> None:
    from xmodal.search.evaluation import evaluate

    for mode in ("exact", "reduced"):
        result = evaluate(dataset, encoder=encoder, workers=workers, image_decode=mode).to_dict()
        figures = {k: v for k, v in result.items() if k in ("text_to_image", "image_to_text")}
        print(f"  eval, {mode:7s}: {figures}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="offline", help="'tiny' (random-weight test config) or a model spec")
    parser.add_argument("--fmnist", type=int, default=2000, help="Fashion-MNIST test images (0: none)")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        encoder = load_model(args.model, tmp)
        print(f"model: {encoder.identity.describe()}, input side {getattr(encoder, 'image_input_side', None)}")
        captions = write_captions_set(tmp / "photos")
        photos = sorted(str(p) for p in captions.parent.glob("*.jpg"))
        print(f"captioned photos: {len(photos)}, enlarged {ENLARGE}x, JPEG q90")
        compare(encoder, photos, args.workers)
        evaluate_both(encoder, captions, args.workers)
        if args.fmnist:
            folder = write_fmnist_set(tmp / "fmnist", args.fmnist)
            garments = sorted(str(p) for p in folder.rglob("*.jpg"))
            print(f"Fashion-MNIST: {len(garments)} test images at {FMNIST_SIDE}x{FMNIST_SIDE}, JPEG q90")
            compare(encoder, garments, args.workers)
            evaluate_both(encoder, folder, args.workers)


if __name__ == "__main__":
    main()
