"""Make data/photos/: a few real photos and made copies of some, for the near-duplicate examples.

The photos ship inside scikit-image's wheel (coffee: Rachel Michetti, CC0; chelsea the cat:
Stefan van der Walt, CC0; rocket and the motorcycle stereo pair: public domain / CC0, see
skimage/data/README.txt). Copies: resized to half, re-compressed at JPEG quality 60, cropped
to 90%. The motorcycle's two photos, taken side by side, are different photos of one thing.

    pip install scikit-image && python data/make_photos.py      # rewrites data/photos/
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parent / "photos"
WIDTH = 480


def skimage_photo(name: str) -> Image.Image:
    folder = Path(list(importlib.util.find_spec("skimage").submodule_search_locations)[0]) / "data"
    photo = Image.open(folder / name).convert("RGB")
    return photo.resize((WIDTH, round(photo.height * WIDTH / photo.width)), Image.LANCZOS)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name in ("coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png"):
        stem = name.split(".")[0]
        photo = skimage_photo(name)
        photo.save(OUT / f"{stem}.jpg", quality=92)
        if stem in ("coffee", "chelsea"):
            w, h = photo.size
            photo.resize((w // 2, h // 2), Image.LANCZOS).save(OUT / f"{stem}-small.jpg", quality=92)
            photo.save(OUT / f"{stem}-q60.jpg", quality=60)
            photo.crop((w // 20, h // 20, w - w // 20, h - h // 20)).save(OUT / f"{stem}-crop.jpg", quality=92)


if __name__ == "__main__":
    main()
