"""transformers CLIP-family models (CLIPModel, ChineseCLIPModel, SiglipModel, ...) by hub id or folder."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ModelUnavailableError
from .base import ModelIdentity, l2_normalize, languages_read, text_model_languages
from .device import precision_for
from .hub import WAYS_OUT, hub_usable

PREFIX = "transformers:"


class TransformersEncoder:
    def __init__(self, model, image_processor, tokenizer, identity: ModelIdentity, device: str):
        self._model = model
        self._image_processor = image_processor
        self._tokenizer = tokenizer
        # SigLIP was trained on max-length padded text; CLIP-style models pad to the batch.
        self._padding = "max_length" if "siglip" in model.config.model_type else True
        self.identity = identity
        self.device = device
        self.image_input_side = _input_side(image_processor)

    def preprocess_image(self, image) -> np.ndarray:
        return self._image_processor(images=[image], return_tensors="np")["pixel_values"][0]

    def encode_preprocessed(self, batch: Sequence[Any]) -> np.ndarray:
        import torch

        pixels = torch.from_numpy(np.stack(list(batch))).to(self.device, dtype=self._model.dtype)
        with torch.inference_mode():
            features = self._model.get_image_features(pixel_values=pixels)
        return _to_numpy(features)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        tokens = self._tokenizer(list(texts), padding=self._padding, truncation=True, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        with torch.inference_mode():
            features = self._model.get_text_features(**tokens)
        return _to_numpy(features)


def _input_side(image_processor) -> int | None:
    """The largest side the processor resizes or crops to ({"shortest_edge": 224}, {"height": .., "width": ..})."""
    sides = []
    for name in ("size", "crop_size"):
        value = getattr(image_processor, name, None)  # an int, a dict, or transformers 5's SizeDict
        for key in ("shortest_edge", "height", "width"):
            side = value if isinstance(value, int) else \
                value.get(key) if isinstance(value, dict) else getattr(value, key, None)
            if isinstance(side, int):
                sides.append(side)
    return max(sides) if sides else None


def _to_numpy(features) -> np.ndarray:
    # transformers 5 returns a model output whose pooler_output holds the projected embedding.
    tensor = features if hasattr(features, "float") else features.pooler_output
    return l2_normalize(tensor.float().cpu().numpy())


def load_transformers(spec: str, device: str) -> TransformersEncoder:
    import torch
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    source = spec[len(PREFIX):]
    local = Path(source).expanduser()
    if local.is_dir():
        source, spec = str(local.resolve()), PREFIX + str(local.resolve())
    offline = local.is_dir() or not hub_usable()
    dtype = torch.float16 if precision_for(device) == "fp16" else torch.float32
    try:
        with quiet_loading():
            model = AutoModel.from_pretrained(source, local_files_only=offline, dtype=dtype).to(device).eval()
        image_processor = AutoImageProcessor.from_pretrained(source, local_files_only=offline)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(
            f"could not load transformers model {source!r} (not a local folder, not cached, "
            f"or the hub cannot be reached); {WAYS_OUT}"
        ) from exc
    if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
        raise ModelUnavailableError(
            f"{source!r} is a {type(model).__name__}, not a text+image model; "
            "use a CLIP-family model (CLIPModel, ChineseCLIPModel, SiglipModel)"
        )
    identity = ModelIdentity(
        family="transformers",
        spec=spec,
        pretrained=None,
        dim=int(model.config.projection_dim if hasattr(model.config, "projection_dim")
                else model.config.text_config.hidden_size),
        preprocess=_json_safe(image_processor.to_dict()),
        versions=_versions(),
        reads=_languages(model.config.model_type, spec),
    )
    return TransformersEncoder(model, image_processor, tokenizer, identity, device)


def _languages(model_type: str, spec: str) -> tuple[str, ...]:
    """Chinese-CLIP reads Chinese and English, AltCLIP many languages (by their kind); the rest by their name."""
    return text_model_languages(model_type, spec) or languages_read(spec, None)


@contextlib.contextmanager
def quiet_loading():
    """transformers 5 draws a 'Loading weights' bar on every load: noise in a terminal and in logs."""
    from transformers.utils import logging

    was_enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            logging.enable_progress_bar()


def _json_safe(cfg: dict[str, Any]) -> dict[str, Any]:
    keep = ("image_processor_type", "size", "crop_size", "image_mean", "image_std",
            "resample", "do_center_crop", "do_resize", "rescale_factor")
    return {k: cfg[k] for k in keep if k in cfg}


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"transformers": transformers.__version__, "torch": torch.__version__}
