"""open_clip models on ONNX Runtime or OpenVINO: each tower exported once into the export cache, then run
without torch.

A text query against an index built this way reads the model's identity from the manifest, finds the
exported text tower and tokenizer in the cache, and encodes with onnxruntime and the `tokenizers` library:
neither torch nor open_clip is imported. Only a missing (or stale) export loads the torch model, once.

An index run does the same once the model is known: the first run that loads the torch model for an exported
way records its identity (`remember_model`), keyed by the spec, the weights' and config's content and the
versions of open_clip and torch; later runs with the same key start from that record (`known_model`).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import ModelMismatchError
from .base import ModelIdentity, l2_normalize
from .export_cache import ExportCache, IdentityCache, file_fingerprint
from .inference import Inference
from .onnx_towers import MODEL_FILE, STATIC_INT8, StaticQuantisation, derive, export_graph, export_precision, load_tower, \
    runtime_key, weight_bits
from .recipe import Cropped, ImageRecipe

INPUTS = {"image": "pixels", "text": "tokens"}  # each exported tower's input
TOWER_FILE = "tower.json"
TOKENIZER_FILE = "tokenizer.json"
EXPORT_FORMAT = 2  # raise when what an export holds changes: older entries are then rebuilt
IDENTITY_FORMAT = 1  # raise when how an identity is made changes (xmodal's code): older records are then unread
BUILT_BY = ("open_clip_torch", "torch")  # the distributions whose versions make a model's identity


class OnnxOpenClipEncoder:
    """The Encoder contract on exported towers; `load_torch` gives the torch encoder where an export is due."""

    device = "cpu"

    def __init__(self, identity: ModelIdentity, load_torch: Callable[[], Any], cache: ExportCache | None = None):
        self.identity = identity
        self.recipe = ImageRecipe.from_config(identity.preprocess)
        size = identity.preprocess.get("size")
        self.image_input_side = max(size) if isinstance(size, (list, tuple)) else size
        self._load_torch = load_torch
        self._torch_encoder: Any = None
        self._cache = cache or ExportCache()
        self._image: Any = None
        self._text: tuple[Any, Any] | None = None

    def preprocess_image(self, image) -> np.ndarray:
        return self.recipe(image)

    def preprocess_compact(self, image) -> Cropped:
        return self.recipe.crop(image)

    def encode_preprocessed(self, batch: Sequence[Any]) -> np.ndarray:
        if self._image is None:
            self._image = self._load("image", [INPUTS["image"]])
        pixels = self.recipe.normalised(list(batch))
        if not isinstance(pixels, np.ndarray):  # not all uint8 crops: items preprocessed one by one among them
            pixels = np.ascontiguousarray(np.stack([np.asarray(item, dtype=np.float32) for item in pixels]))
        return l2_normalize(self._image(pixels))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self._text is None:
            from .clip_tokenizer import ClipTokenizer

            folder = self._tower_folder("text")
            context = json.loads((folder / TOWER_FILE).read_text())["context_length"]
            self._text = self._load("text", [INPUTS["text"]]), ClipTokenizer(folder / TOKENIZER_FILE, context)
        tower, tokenizer = self._text
        return l2_normalize(tower(tokenizer(list(texts))))

    def _load(self, tower: str, names: list[str]):
        way = self.identity.inference.tower(tower)
        return load_tower(way.runtime, way.precision, self._tower_folder(tower), names)

    def _tower_folder(self, tower: str) -> Path:
        return self._cache.ensure(tower_key(self.identity, tower), lambda folder: self._export(tower, folder))

    def _export(self, tower: str, folder: Path) -> None:
        """The tower's fp32 graph, exported from torch once per model (the entry ONNX Runtime's fp32 runs);
        every other way's file is derived from that entry without torch: linked, or quantised."""
        way = self.identity.inference.tower(tower)
        precision = export_precision(way.runtime, way.precision)
        if (way.runtime, precision) == ("onnx", "fp32"):
            self._export_graph(tower, folder)
            return
        graph = self.identity.with_way(Inference("onnx", "fp32"))
        source = self._cache.ensure(tower_key(graph, tower), lambda found: self._export_graph(tower, found))
        for extra in (TOKENIZER_FILE, TOWER_FILE):
            if (source / extra).exists():
                shutil.copyfile(source / extra, folder / extra)
        derive(source / MODEL_FILE, folder, precision, [INPUTS[tower]],
               self._quantisation(tower, source) if precision == STATIC_INT8 else None, weight_bits(precision))

    def _export_graph(self, tower: str, folder: Path) -> None:
        if self._torch_encoder is None:
            self._torch_encoder = self._load_torch()
            if self._torch_encoder.identity.compatibility_key() != self.identity.compatibility_key():
                raise ModelMismatchError(
                    f"the model loaded for export is {self._torch_encoder.identity.describe()}, not "
                    f"{self.identity.describe()}; its weights changed since the index was built")
        export_tower(self._torch_encoder.model, tower, folder)

    def _quantisation(self, tower: str, graph: Path) -> StaticQuantisation:
        """What a static int8 tower's activation ranges are measured on: the pictures and captions shipped for
        measuring ways (the same on every machine, so an export depends on the weights alone), the captions
        tokenized by the graph's own tokenizer. The text tower's token table is quantised too: ViT-B-32's text
        tower weighs 64 MB in int8 against 140 MB with it fp32, and a one-shot query loads all of it."""
        if tower == "image":
            return StaticQuantisation(self._calibration_pixels())
        from .calibrate import SHIPPED_TEXTS
        from .clip_tokenizer import ClipTokenizer

        context = json.loads((graph / TOWER_FILE).read_text())["context_length"]
        tokens = ClipTokenizer(graph / TOKENIZER_FILE, context)(list(SHIPPED_TEXTS))
        return StaticQuantisation(tokens, ("MatMul", "Gemm", "Gather"))

    def _calibration_pixels(self) -> np.ndarray:
        """What a static int8 image tower's activation ranges are measured on: the pictures shipped for
        measuring ways (the same on every machine, so an export depends on the weights alone). Ranges from
        them held ViT-B-32 at a lowest cosine of 0.9993 to fp32 on 38 real photos (random weights); ranges
        from 16 shifted copies of one picture fell to 0.977: what matters is that they vary."""
        from .calibrate import shipped_images

        return np.stack([np.asarray(self.recipe(image), dtype=np.float32) for image in shipped_images()])


def supports(torch_encoder) -> bool:
    """Whether both towers can run exported: open_clip's own BPE tokenizer (lowercasing, no extra special
    tokens) is the one `tokenizers` reproduces, and the image recipe must be numpy's."""
    from open_clip.tokenizer import SimpleTokenizer, _clean_lower

    tokenizer = torch_encoder.tokenizer
    return (type(tokenizer) is SimpleTokenizer and tokenizer.clean_fn is _clean_lower
            and tokenizer.reduction_fn is None and len(tokenizer.all_special_ids) == 2
            and torch_encoder.recipe is not None)


def tower_key(identity: ModelIdentity, tower: str) -> dict[str, Any]:
    way = identity.inference.tower(tower)
    return {"format": EXPORT_FORMAT, "family": identity.family, "spec": identity.spec,
            "pretrained": identity.pretrained, "dim": identity.dim, "preprocess": identity.preprocess,
            "weights": weights_fingerprint(identity), "tower": tower,
            **runtime_key(way.runtime, way.precision),
            # the tokenizer's character classes are written out from the `regex` module of the export's day
            "regex": _version("regex") if tower == "text" else None}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def weights_fingerprint(identity: ModelIdentity) -> str:
    return weights_of(identity.spec, identity.pretrained)


def weights_of(spec: str, pretrained: str | None) -> str:
    from .openclip import weights_of as of_files

    return of_files(spec, pretrained)


@dataclass(frozen=True)
class KnownModel:
    """An open_clip model as a run that loaded it saw it: its identity (fp32 on torch, on the CPU) and whether
    its towers run exported (`supports`)."""

    identity: ModelIdentity
    exportable: bool


def known_model(spec: str, pretrained: str | None) -> KnownModel | None:
    """The model `spec` and `pretrained` load, where a run recorded it under the same key; None otherwise (never
    seen, its weights or config changed since, another open_clip or torch)."""
    key = model_key(spec, pretrained)
    record = IdentityCache().get(key) if key else None
    try:
        return KnownModel(ModelIdentity.from_dict(record["identity"]), bool(record["exportable"]))
    except (TypeError, KeyError, ValueError):
        return None


def remember_model(spec: str, pretrained: str | None, torch_encoder) -> KnownModel:
    """Record the model loaded (fp32, on the CPU) from `spec` and `pretrained`, for the runs after this one."""
    known = KnownModel(torch_encoder.identity, supports(torch_encoder))
    key = model_key(spec, pretrained)
    if key:
        IdentityCache().put(key, {"identity": known.identity.to_dict(), "exportable": known.exportable})
    return known


def model_key(spec: str, pretrained: str | None) -> dict[str, Any] | None:
    """What decides the model `spec` and `pretrained` load, told without loading it: paths resolved, the
    weights' and a local-dir: config's content, the versions that build it. None where a local-dir: folder
    has no config (loading it then says what is wrong)."""
    from .openclip import LOCAL_DIR

    config = None
    if spec.startswith(LOCAL_DIR):
        folder = Path(spec[len(LOCAL_DIR):]).expanduser().resolve()
        spec = LOCAL_DIR + str(folder)
        try:
            config = hashlib.sha256((folder / "open_clip_config.json").read_bytes()).hexdigest()
        except OSError:
            return None
    if pretrained and os.path.isfile(pretrained):
        pretrained = str(Path(pretrained).resolve())
    return {"format": IDENTITY_FORMAT, "spec": spec, "pretrained": pretrained, "config": config,
            "weights": weights_of(spec, pretrained), "versions": {name: _built_by(name) for name in BUILT_BY}}


def _built_by(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)  # read from its metadata: importing open_clip costs seconds
    except PackageNotFoundError:
        return None


def export_tower(model, tower: str, folder: Path) -> None:
    """Write one tower of `model` to `folder` as its fp32 graph; a text tower with its tokenizer."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.clip = model

        def forward(self, inputs):
            return self.clip.encode_image(inputs) if tower == "image" else self.clip.encode_text(inputs)

    if tower == "image":
        side = model.visual.image_size
        side = side if isinstance(side, (tuple, list)) else (side, side)
        export_graph(Tower(), (torch.zeros(2, 3, *side),), folder / MODEL_FILE, [INPUTS[tower]])
        return
    import open_clip

    from .clip_tokenizer import build_tokenizer_json, open_clip_vocab_file

    context = int(model.context_length)
    export_graph(Tower(), (open_clip.tokenize(["a photo", "of two words and more"], context),), folder / MODEL_FILE,
                 [INPUTS[tower]])
    build_tokenizer_json(open_clip_vocab_file(), folder / TOKENIZER_FILE)
    (folder / TOWER_FILE).write_text(json.dumps({"context_length": context}))


def from_manifest(identity: ModelIdentity, way: Inference, load_torch: Callable[[], Any]) -> OnnxOpenClipEncoder:
    """The encoder of an index's model run `way`, from its recorded identity alone (no torch)."""
    return OnnxOpenClipEncoder(identity.with_way(way), load_torch)
