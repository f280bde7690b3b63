"""A new index's first photos decode while its model loads.

Importing torch and open_clip and building the model take about 7 s here, more than decoding 3,000
reduced photos on 2 cores. Where the model's preprocessing is known without loading it (an open_clip model
a run before this one loaded, whose record the identity cache holds; a local-dir: model, whose config file
says), the decoding workers start first, then the model loads in this process while they decode up to a
memory budget ahead. Workers are started before the import, so no process is forked while another thread
imports.
"""
from __future__ import annotations

from typing import Callable

from .decode import DecodedStream, default_workers
from .encode import EncodeSettings
from ..models import Encoder
from ..models.openclip import LOCAL_DIR
from ..models.openclip_onnx import known_model
from ..models.recipe import ImageRecipe, local_dir_recipe
from ..models.registry import recorded_spec

AHEAD_BYTES = 256 << 20  # cropped pixels (uint8, recipe.Cropped) decoded ahead while the model loads


class WarmStart:
    def __init__(self, spec: str, paths: list[str], settings: EncodeSettings, pretrained: str | None = None):
        self.recipe = _recipe(spec, pretrained)
        workers = default_workers() if settings.workers is None else settings.workers
        self._stream: DecodedStream | None = None
        if self.recipe is not None and workers > 0 and len(paths) > 1:
            min_side = self.recipe.side if settings.decode == "reduced" else None
            ahead = min(len(paths), AHEAD_BYTES // (3 * self.recipe.side ** 2))
            self._stream = DecodedStream(paths, self.recipe.crop, workers, settings.max_pixels, min_side, ahead,
                                         settings.background)

    def load(self, loader: Callable[[], Encoder]) -> Encoder:
        try:
            return loader()
        except BaseException:
            self.close()
            raise

    def take(self, paths: list[str], encoder: Encoder) -> DecodedStream | None:
        """The stream decoding `paths` for `encoder`, if it is the one started; else None (and it stops)."""
        stream, self._stream = self._stream, None
        takes_crops = getattr(encoder, "preprocess_compact", None) is not None
        if stream is not None and (stream.paths != paths or getattr(encoder, "recipe", None) != self.recipe
                                   or not takes_crops):
            stream.close()
            return None
        return stream

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def _recipe(spec: str, pretrained: str | None) -> ImageRecipe | None:
    """The model's image recipe where it is known before the model loads."""
    known = known_model(spec, pretrained) if recorded_spec(spec) is not None else None
    if known is not None:
        return ImageRecipe.from_config(known.identity.preprocess)
    return local_dir_recipe(spec) if spec.startswith(LOCAL_DIR) else None
