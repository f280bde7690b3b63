"""Real photos that ship inside scikit-image's wheel, and a query that describes each."""
from __future__ import annotations

import importlib.util
from pathlib import Path

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
