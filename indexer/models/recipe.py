"""open_clip's image preprocessing (resize, centre crop, normalise) in Pillow and numpy, without torch.

The same pixels as open_clip's own transform (tests compare them value for value), so decoding workers
start without importing torch and torchvision (about 7 s here), and can start before the model has
loaded: the recipe is known from an index's manifest, or from a local-dir: model's config file, while
the model loads beside them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

# open_clip's defaults (open_clip.constants: OpenAI's CLIP mean and std; transform.PreprocessCfg)
DEFAULTS: dict[str, Any] = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                            "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0, "mode": "RGB"}
_FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


@dataclass(frozen=True)
class Cropped:
    """An image resized and cropped by a recipe, still uint8 (height, width, 3): what decoding workers send.
    A quarter of the bytes of its normalised float32 pixels: passing those between processes took ViT-B-32's
    index run 0.5 s of reading pipes per 300 photos, time the model's threads waited."""

    array: np.ndarray


@dataclass(frozen=True)
class ImageRecipe:
    side: int
    resize_mode: str  # "shortest" (then a centre crop) or "squash"
    interpolation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "ImageRecipe | None":
        """From open_clip's preprocess config (what a manifest records); None where the recipe cannot
        reproduce open_clip (non-square inputs, 'longest' padding, other modes or filters)."""
        config = {**DEFAULTS, **config}
        size = config.get("size")
        if isinstance(size, (list, tuple)):
            size = size[0] if len(size) == 2 and size[0] == size[1] else None
        if not isinstance(size, int) or config["resize_mode"] not in ("shortest", "squash") \
                or config["interpolation"] not in _FILTERS or config["mode"] != "RGB":
            return None
        return cls(size, config["resize_mode"], config["interpolation"], tuple(config["mean"]), tuple(config["std"]))

    def __call__(self, image: Image.Image) -> np.ndarray:
        """An RGB image -> float32 CHW, normalised."""
        return self._normalised(self.crop(image).array[None])[0]

    def crop(self, image: Image.Image) -> Cropped:
        """An RGB image resized and cropped, not yet normalised (`normalised` finishes it)."""
        if self.resize_mode == "squash":
            image = _resized(image, (self.side, self.side), self.interpolation)
        else:
            width, height = image.size
            short, long = (width, height) if width <= height else (height, width)
            long = int(self.side * long / short)  # torchvision's rounding
            image = _resized(image, (self.side, long) if width <= height else (long, self.side), self.interpolation)
            left = int(round((image.width - self.side) / 2.0))
            top = int(round((image.height - self.side) / 2.0))
            image = image.crop((left, top, left + self.side, top + self.side))
        return Cropped(np.asarray(image, dtype=np.uint8))

    def normalised(self, items: Sequence[Any]) -> np.ndarray | list:
        """A batch as the model takes it: Cropped items normalised (all at once where all are: float32 NCHW),
        the same values as `__call__` gives; items already normalised are left as they are."""
        if items and all(isinstance(item, Cropped) for item in items):
            return self._normalised(np.stack([item.array for item in items]))
        return [self._normalised(item.array[None])[0] if isinstance(item, Cropped) else item for item in items]

    def _normalised(self, batch: np.ndarray) -> np.ndarray:
        # channels first while still bytes, then in place: 12 ms for 64 photos at 256 px, against 47 ms for
        # the same arithmetic on new arrays (it runs in the process whose threads run the model)
        pixels = np.ascontiguousarray(batch.transpose(0, 3, 1, 2)).astype(np.float32)
        pixels /= np.float32(255)
        pixels -= np.asarray(self.mean, np.float32)[:, None, None]
        pixels /= np.asarray(self.std, np.float32)[:, None, None]
        return pixels


def _resized(image: Image.Image, size: tuple[int, int], interpolation: str) -> Image.Image:
    return image if image.size == size else image.resize(size, _FILTERS[interpolation])


def local_dir_recipe(spec: str) -> ImageRecipe | None:
    """The recipe of a local-dir: open_clip model, read from its config file as open_clip reads it
    (defaults, then the file's preprocess_cfg, then the vision tower's image size)."""
    try:
        config = json.loads((Path(spec[len("local-dir:"):]).expanduser() / "open_clip_config.json").read_text())
        size = config["model_cfg"]["vision_cfg"]["image_size"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return ImageRecipe.from_config({**(config.get("preprocess_cfg") or {}), "size": size})
