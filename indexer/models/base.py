"""The encoder contract every model backend implements, and the identity it records."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from .inference import Inference


@dataclass(frozen=True)
class ModelIdentity:
    """What built an index's vectors; an index refuses vectors from any other identity.

    `family`, `spec`, `pretrained`, `dim` and `preprocess` decide compatibility;
    `versions` is recorded for provenance only (a library upgrade should not lock
    a user out of their own index). `runtime` and `precision` say how the towers ran:
    vectors of another precision are accepted within measured parity (inference.accepts).
    `reads` names the languages the text tower reads (ISO 639-1 codes; "*": many, as XLM-R's hundred), so a
    query in another language is translated (search/understanding.py); None where the encoder does not say (an
    index from before it was recorded, your own encoder): then the spec and weights tag decide (`reads_language`).
    """

    family: str
    spec: str
    pretrained: str | None
    dim: int
    preprocess: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    runtime: str = "torch"
    precision: str = "fp32"
    reads: tuple[str, ...] | None = None
    # the weights' fingerprint where they are a file ("sha256:..."; a tag names published weights): the same
    # spec over rewritten weights is another model (check_weights); None in indexes from before it was recorded
    weights: str | None = None
    # the text tower's way where it is not `runtime` and `precision` (a way per tower, inference.Inference)
    text_runtime: str | None = None
    text_precision: str | None = None

    @property
    def inference(self) -> Inference:
        image = Inference(self.runtime, self.precision)
        if self.text_runtime is None:
            return image
        return Inference.per_tower(image, Inference(self.text_runtime, self.text_precision or "fp32"))

    def with_way(self, way: Inference) -> "ModelIdentity":
        """The same model run `way` (one way for both towers, or one per tower)."""
        text = way.text
        return replace(self, runtime=way.runtime, precision=way.precision,
                       text_runtime=text.runtime if text else None, text_precision=text.precision if text else None)

    def to_dict(self) -> dict[str, Any]:
        found = asdict(self)
        if self.text_runtime is None:  # one way for both towers: recorded as before ways per tower
            del found["text_runtime"], found["text_precision"]
        return found

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelIdentity":
        return cls(
            family=data["family"],
            spec=data["spec"],
            pretrained=data.get("pretrained"),
            dim=int(data["dim"]),
            preprocess=dict(data.get("preprocess") or {}),
            versions=dict(data.get("versions") or {}),
            runtime=data.get("runtime") or "torch",  # indexes from before precisions were recorded ran torch
            precision=data.get("precision") or "fp32",
            reads=tuple(data["reads"]) if data.get("reads") else None,
            weights=data.get("weights"),
            text_runtime=data.get("text_runtime"),
            text_precision=data.get("text_precision"),
        )

    def reads_language(self, language: str | None) -> bool:
        """Whether the text tower reads `language` (English: every one)."""
        reads = self.reads or languages_read(self.spec, self.pretrained)
        return language == "en" or "*" in reads or language in reads

    def describe_reads(self) -> str:
        reads = self.reads or languages_read(self.spec, self.pretrained)
        if "*" in reads:
            return "reads many languages"
        names = [LANGUAGE_NAMES.get(code, code) for code in reads]
        return "reads " + (" and ".join(names) if len(names) <= 2 else f"{len(names)} languages, "
                           + ", ".join(names[:3]) + " among them")

    def compatibility_key(self) -> tuple:
        return (self.family, self.spec, self.pretrained, self.dim, _freeze(self.preprocess))

    def describe(self) -> str:
        tag = f" ({self.pretrained})" if self.pretrained else ""
        way = f", {self.inference.describe()}" if self.inference != Inference() else ""
        return f"{self.spec}{tag}, {self.dim}-d{way}"


# Text towers known to read more than English, by a piece of their spec or weights tag: how the languages of a
# model that does not record them are told.
MULTILINGUAL_MARKERS = ("xlm-roberta", "nllb", "multilingual", "m-clip", "mclip", "chinese-clip", "chinese_clip",
                        "mt5", "siglip2", "labse", "i18n")
LANGUAGE_NAMES = {"en": "English", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "ar": "Arabic",
                  "de": "German", "es": "Spanish", "fr": "French", "it": "Italian", "nl": "Dutch", "pl": "Polish",
                  "pt": "Portuguese", "ru": "Russian", "th": "Thai", "tr": "Turkish", "zh-tw": "Chinese"}
ENGLISH = ("en",)
MANY = ("*",)


def languages_read(spec: str, pretrained: str | None) -> tuple[str, ...]:
    """The languages a text tower reads, told from its spec and weights tag: many for a known multilingual
    family, English otherwise."""
    name = f"{spec} {pretrained or ''}".lower()
    return MANY if any(marker in name for marker in MULTILINGUAL_MARKERS) else ENGLISH


# Hugging Face text models (their config's model_type) pretrained on many languages: an open_clip model whose text
# tower is one of them reads them, whatever its spec says (a local-dir: copy of XLM-R's CLIP names nothing).
MULTILINGUAL_MODEL_TYPES = frozenset({"xlm-roberta", "xlm-roberta-xl", "mt5", "umt5", "altclip"})
CHINESE_AND_ENGLISH = ("zh", "en")


def text_model_languages(model_type: str | None, *names: str | None) -> tuple[str, ...] | None:
    """The languages a Hugging Face text model reads, told from its kind (config.model_type) or its names (hub
    id or folder, tokenizer); None where neither says more than English, so the caller falls back to the spec.

    Chinese-CLIP's text tower is a Chinese RoBERTa whose vocabulary holds English words too."""
    if model_type == "chinese_clip":
        return CHINESE_AND_ENGLISH
    if model_type in MULTILINGUAL_MODEL_TYPES:
        return MANY
    told = languages_read(" ".join(name for name in names if name), None)
    return None if told == ENGLISH else told


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@runtime_checkable
class Encoder(Protocol):
    """Turns images and texts into L2-normalised float32 vectors in one shared space.

    `preprocess_image` must be picklable and torch-free in its inputs: it runs in
    decoding worker processes, so the model never waits on one core.
    """

    identity: ModelIdentity
    device: str

    def preprocess_image(self, image: Image.Image) -> Any: ...

    def encode_preprocessed(self, batch: Sequence[Any]) -> np.ndarray: ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray: ...


def image_input_side(encoder: Encoder) -> int | None:
    """The side the encoder's preprocessing resizes an image to (its `image_input_side`, optional for your own
    encoders): photos are decoded no larger than it needs. None: unknown, every pixel is decoded."""
    side = getattr(encoder, "image_input_side", None)
    return int(side) if side else None


def encode_images(encoder: Encoder, images: Sequence[Image.Image]) -> np.ndarray:
    """Encode already-decoded images in one batch (the query path)."""
    return encoder.encode_preprocessed([encoder.preprocess_image(im) for im in images])


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
