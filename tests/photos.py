"""Real photos that ship inside scikit-image's wheel, and a query that describes each; a drawn product shot."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from PIL import Image, ImageDraw

SAMPLE_PHOTOS = [
    ("a cat", "chelsea.png"),
    ("a cup of coffee", "coffee.png"),
    ("a rocket on the launch pad", "rocket.jpg"),
    ("a motorcycle", "motorcycle_left.png"),
    ("an astronaut in a space suit", "astronaut.png"),
    ("a horse", "horse.png"),
]


def skimage_data_dir() -> Path | None:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def sample_photo_paths() -> list[str]:
    folder = skimage_data_dir()
    return [str(folder / name) for _, name in SAMPLE_PHOTOS]


TSHIRT = [(0.30, 0.08), (0.42, 0.08), (0.50, 0.14), (0.58, 0.08), (0.70, 0.08), (0.95, 0.25), (0.85, 0.40),
          (0.76, 0.34), (0.76, 0.92), (0.24, 0.92), (0.24, 0.34), (0.15, 0.40), (0.05, 0.25)]
COLOURWAYS = {"black": (10, 10, 10), "grey": (225, 225, 225), "white": (248, 248, 248)}


def tshirt(fill: tuple[int, int, int], size: tuple[int, int] = (400, 440)) -> Image.Image:
    """One t-shirt shape filled with one colour on a white backdrop: a shop's colourways of one product."""
    picture = Image.new("RGB", size, (255, 255, 255))
    ImageDraw.Draw(picture).polygon([(x * size[0], y * size[1]) for x, y in TSHIRT], fill=fill)
    return picture
