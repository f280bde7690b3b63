"""open_clip models: built-in names with a weights tag or a checkpoint file, hf-hub:, local-dir:."""
from __future__ import annotations

import contextlib
import os
import pickle
import struct
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ModelMismatchError, ModelUnavailableError, UnknownModelError, option
from .base import ModelIdentity, l2_normalize
from .device import cpu_autocast, precision_for
from .inference import GPU, Inference
from .export_cache import file_fingerprint
from .hub import WAYS_OUT, cache_only, cached_hub_file, hub_usable
from .openclip_text import hub_text_tower, load_tokenizer, missing_tower_message, tower_languages
from .recipe import ImageRecipe

LOCAL_DIR = "local-dir:"
HF_HUB = "hf-hub:"
DEFAULT_WEIGHTS = {"ViT-B-32": "laion2b_s34b_b79k"}
RANDOM_WEIGHTS = {"none", "random"}
RANDOM_SEED = 0  # random weights are seeded, so an index built with them reopens with the same model
_HUB_WEIGHT_FILES = ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]


class OpenClipEncoder:
    def __init__(self, model, preprocess, tokenizer, identity: ModelIdentity, device: str):
        self._model = model
        self._preprocess = preprocess
        self.tokenizer = tokenizer
        self.identity = identity
        self.device = device
        size = identity.preprocess.get("size")
        self.image_input_side = max(size) if isinstance(size, (list, tuple)) else size
        # open_clip's transform in numpy where it can be: decoding workers then need no torch at all
        self.recipe = ImageRecipe.from_config(identity.preprocess)

    def preprocess_image(self, image) -> Any:
        return self.recipe(image) if self.recipe else self._preprocess(image)

    def preprocess_compact(self, image) -> Any:
        """What decoding workers send: the recipe's uint8 crop, normalised in `encode_preprocessed`."""
        return self.recipe.crop(image) if self.recipe else self._preprocess(image)

    def encode_preprocessed(self, batch: Sequence[Any]) -> np.ndarray:
        import torch

        batch = self.recipe.normalised(list(batch)) if self.recipe else list(batch)
        pixels = stacked_pixels(batch, self.device, self._dtype())
        with torch.inference_mode(), cpu_autocast(self.identity.precision):
            features = self._model.encode_image(pixels)
        return l2_normalize(features.float().cpu().numpy())

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        tokens = self.tokenizer(list(texts)).to(self.device)
        with torch.inference_mode(), cpu_autocast(self.identity.precision):
            features = self._model.encode_text(tokens)
        return l2_normalize(features.float().cpu().numpy())

    @property
    def model(self):
        return self._model

    def with_precision(self, precision: str) -> "OpenClipEncoder":
        """The same weights run at another precision that needs no copy of them (bf16 autocast)."""
        return OpenClipEncoder(self._model, self._preprocess, self.tokenizer,
                               replace(self.identity, precision=precision), self.device)

    def _dtype(self):
        return torch_dtype(self._model)


def torch_dtype(model):
    """The dtype inputs take: the parameters' (an int8-quantised model keeps fp32 inputs)."""
    import torch

    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def stacked_pixels(batch: "list | np.ndarray", device: str, dtype):
    """One batch tensor on `device` from numpy arrays (CPU workers) and tensors (the GPU JPEG decoder),
    mixed as a batch may be; host memory is pinned for an asynchronous copy to a CUDA GPU."""
    import torch

    if isinstance(batch, np.ndarray) or all(isinstance(item, np.ndarray) for item in batch):
        host = torch.from_numpy(np.ascontiguousarray(batch) if isinstance(batch, np.ndarray) else np.stack(batch))
        if device.startswith("cuda"):
            host = host.pin_memory()
        return host.to(device, dtype=dtype, non_blocking=True)
    return torch.stack([torch.as_tensor(item).to(device, dtype=dtype) for item in batch])


def is_open_clip_spec(spec: str) -> bool:
    if spec.startswith((LOCAL_DIR, HF_HUB)):
        return True
    name = spec.replace("/", "-")
    if "open_clip" not in sys.modules and _shipped_config(name):
        return True  # without importing open_clip (4.8 s: torchvision, transformers, timm)
    import open_clip

    return name in open_clip.list_models()  # with the configs added to it in this process


def _shipped_config(name: str) -> bool:
    """Whether open_clip ships a model config named `name`: its model list is the names of these files."""
    import importlib.util

    try:
        found = importlib.util.find_spec("open_clip")
    except (ImportError, ValueError):
        return False
    folders = (found.submodule_search_locations or []) if found else []
    return any((Path(folder) / "model_configs" / f"{name}.json").is_file() for folder in folders)


def default_weights(name: str) -> str | None:
    import open_clip

    if name in DEFAULT_WEIGHTS:
        return DEFAULT_WEIGHTS[name]
    tags = open_clip.list_pretrained_tags_by_model(name)
    return tags[0] if tags else None


def weights_of(spec: str, pretrained: str | None) -> str:
    """The weights' content where they are a file (a local-dir: model, a checkpoint path); a published tag
    names fixed weights; random weights are seeded."""
    if spec.startswith(LOCAL_DIR):
        found = weights_in_folder(Path(spec[len(LOCAL_DIR):]).expanduser())
        return f"sha256:{file_fingerprint(found)}" if found else "missing"
    if pretrained and Path(pretrained).is_file():
        return f"sha256:{file_fingerprint(Path(pretrained))}"
    return f"tag:{pretrained}"


def check_weights(identity: ModelIdentity) -> None:
    """Refuse an index's open_clip model whose weights file was rewritten since the index recorded it: the same
    spec then names another model, whose vectors would sit beside the old ones unnoticed."""
    if identity.family != "open_clip" or not (identity.weights or "").startswith("sha256:"):
        return
    now = weights_of(identity.spec, identity.pretrained)
    if now.startswith("sha256:") and now != identity.weights:
        where = identity.pretrained if identity.pretrained and os.path.isfile(identity.pretrained) else identity.spec
        raise ModelMismatchError(
            f"the weights in {where} changed since this index was built with them (sha256 "
            f"{identity.weights[7:19]}..., now {now[7:19]}...); put those weights back, or index into a new "
            f"{option('out')} folder with these")


def load_open_clip(spec: str, pretrained: str | None, device: str, way: Inference | None = None) -> OpenClipEncoder:
    """The model on torch, run `way` (fp32, bf16 autocast, or int8 Linear layers on the CPU; fp16 on a GPU)."""
    import open_clip

    weights = weights_of(spec, pretrained)

    if spec.startswith(LOCAL_DIR):
        spec, pretrained, kwargs = _local_dir_source(spec), None, {}
        model_name = spec
    elif spec.startswith(HF_HUB):
        model_name, pretrained, kwargs = _hf_hub_source(spec), None, {}
    else:
        model_name = spec.replace("/", "-")
        pretrained, kwargs = _named_source(model_name, pretrained)
    precision = precision_for(device)
    weights_file = _weights_file(model_name, kwargs)
    # a Hugging Face text tower (XLM-R's) comes from the hub or its cache, even beside a local checkpoint
    offline = hub_text_tower(model_name) is not None and not hub_usable()
    try:
        with _seeded(pretrained == "none"), _skip_random_init(weights_file is not None), cache_only(offline):
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, precision=precision, device=device, **kwargs
            )
            tokenizer = load_tokenizer(model_name)  # a Hugging Face tokenizer may be missing too
    except ModelUnavailableError:
        raise  # said in full already
    except (RuntimeError, OSError, ValueError, _weights_file_error()) as exc:
        raise _unavailable(spec, model_name, exc) from exc
    except (pickle.UnpicklingError, EOFError, IndexError, KeyError, AttributeError, struct.error) as exc:
        if weights_file is None and not (pretrained and os.path.isfile(pretrained)):
            raise
        # torch's unpickler meets a file that is not a checkpoint (a CSV, a truncated download) with these
        reason = (str(exc).strip().splitlines() or [""])[0][:120]
        raise ModelUnavailableError(f"{pretrained or weights_file} is not a checkpoint {model_name} can load "
                                    f"({type(exc).__name__}: {reason}); pass a .safetensors, .pt or .bin file of "
                                    "its weights") from exc
    model.eval()
    way = GPU if precision == "fp16" else (way or Inference())  # a GPU runs fp16, whatever a CPU way says
    if way.precision == "int8":
        model = quantized_int8(model)
    identity = ModelIdentity(
        family="open_clip",
        spec=spec,
        pretrained=pretrained,
        dim=_embed_dim(model),
        preprocess=_preprocess_record(model),
        versions=_versions(),
        runtime=way.runtime,
        precision=way.precision,
        reads=tower_languages(model, tokenizer, spec, pretrained),
        weights=weights,
    )
    return OpenClipEncoder(model, preprocess, tokenizer, identity, device)


def _unavailable(spec: str, model_name: str, exc: Exception) -> ModelUnavailableError:
    """One line: a Hugging Face text tower the hub cannot give (XLM-R's, beside a local checkpoint) says so."""
    tower = hub_text_tower(model_name) if isinstance(exc, OSError) else None
    if tower and not hub_usable():
        return ModelUnavailableError(missing_tower_message(spec, tower))
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ModelUnavailableError(f"could not load model {spec!r}: {first_line}; {WAYS_OUT}")


def _weights_file_error() -> type[Exception]:
    """A corrupt or truncated .safetensors file raises safetensors' own error, not an OSError."""
    try:
        from safetensors import SafetensorError
    except ImportError:
        return OSError
    return SafetensorError


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                   "xavier_uniform_", "xavier_normal_", "orthogonal_", "constant_", "zeros_", "ones_")


@contextlib.contextmanager
def _skip_random_init(active: bool):
    """Weights about to be overwritten by a checkpoint need no random init (1.1 s of a ViT-B/32 load here).

    open_clip loads checkpoints strictly, so every parameter is then set from the file.
    """
    import torch

    if not active:
        yield
        return
    saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS}
    try:
        for name in _INIT_FUNCTIONS:
            setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)


def quantized_int8(model):
    """torch's dynamic int8 quantisation of the image tower's Linear layers (weights int8, activations per
    batch). The text tower stays fp32: open_clip reads its cast dtype from a Linear weight, which a quantised
    layer no longer has, and a query's few words cost little."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation in favour of torchao: not the user's concern
        model.visual = torch.ao.quantization.quantize_dynamic(model.visual, {torch.nn.Linear}, dtype=torch.qint8)
    return model


def weights_in_folder(folder: Path) -> Path | None:
    """A local-dir: model's weights file, in open_clip's order of preference."""
    return next((folder / n for n in _HUB_WEIGHT_FILES if (folder / n).is_file()), None)


def _weights_file(model_name: str, kwargs: dict[str, Any]) -> str | None:
    """The checkpoint file the model will be loaded from, when it is known to exist."""
    if model_name.startswith(LOCAL_DIR):
        found = weights_in_folder(Path(model_name[len(LOCAL_DIR):]))
        return str(found) if found else None
    found = kwargs.get("pretrained")
    return found if found and os.path.isfile(found) else None


@contextlib.contextmanager
def _seeded(active: bool):
    import torch

    if not active:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        yield


def _local_dir_source(spec: str) -> str:
    path = Path(spec[len(LOCAL_DIR):]).expanduser()
    if not (path / "open_clip_config.json").is_file():
        raise UnknownModelError(
            f"{spec!r}: no open_clip_config.json in {path}; a local-dir: model is a folder "
            "holding open_clip_config.json and open_clip_model.safetensors"
        )
    return LOCAL_DIR + str(path.resolve())


def _hf_hub_source(spec: str) -> str:
    """Use the cached copy when the hub cannot be reached, so offline users are not stalled."""
    if hub_usable():
        return spec
    repo_id = spec[len(HF_HUB):]
    config = cached_hub_file(repo_id, ["open_clip_config.json"])
    weights = cached_hub_file(repo_id, _HUB_WEIGHT_FILES)
    if config and weights and os.path.dirname(config) == os.path.dirname(weights):
        return LOCAL_DIR + os.path.dirname(config)
    raise ModelUnavailableError(
        f"weights for {spec!r} are not in the local cache and the model hub cannot be reached; {WAYS_OUT}"
    )


def _named_source(name: str, pretrained: str | None) -> tuple[str | None, dict[str, Any]]:
    """Resolve (weights tag or file) to what create_model_and_transforms needs."""
    import open_clip

    if pretrained is None:
        pretrained = default_weights(name)
    if pretrained is None or pretrained.lower() in RANDOM_WEIGHTS:
        return "none", {}
    if os.path.isfile(pretrained):
        path = str(Path(pretrained).resolve())
        return path, {"pretrained": path}
    cfg = open_clip.get_pretrained_cfg(name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        raise UnknownModelError(
            f"{name} has no weights tag or file {pretrained!r}; known tags: {', '.join(tags) or 'none'} "
            "(or pass a checkpoint file path, or 'none' for random weights)"
        )
    if hub_usable():
        return pretrained, {"pretrained": pretrained}
    return pretrained, _cached_tag_kwargs(name, pretrained, cfg)


def _cached_tag_kwargs(name: str, tag: str, cfg: dict) -> dict[str, Any]:
    cached = None
    if cfg.get("hf_hub"):
        # open_clip's convention: "org/repo/" (default file name) or "org/repo/file.bin".
        repo_id, filename = os.path.split(cfg["hf_hub"])
        cached = cached_hub_file(repo_id, _safetensors_first([filename] if filename else _HUB_WEIGHT_FILES))
    if cached is None and cfg.get("url"):
        candidate = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"]))
        cached = candidate if os.path.isfile(candidate) else None
    if cached is None:
        raise ModelUnavailableError(
            f"weights {name} ({tag}) are not in the local cache and the model hub cannot be reached; {WAYS_OUT}"
        )
    kwargs: dict[str, Any] = {"pretrained": cached, "force_quick_gelu": bool(cfg.get("quick_gelu"))}
    for key, arg in (("mean", "image_mean"), ("std", "image_std"),
                     ("interpolation", "image_interpolation"), ("resize_mode", "image_resize_mode")):
        if cfg.get(key) is not None:
            kwargs[arg] = cfg[key]
    return kwargs


def _safetensors_first(names: list[str]) -> list[str]:
    """open_clip's own order: the safetensors twin of each weights file before the file itself."""
    out = []
    for name in names:
        stem, ext = os.path.splitext(name)
        if name == "open_clip_pytorch_model.bin":
            out.append("open_clip_model.safetensors")
        elif ext in (".bin", ".pth", ".pt"):
            out.append(stem + ".safetensors")
        out.append(name)
    return list(dict.fromkeys(out))


def _embed_dim(model) -> int:
    projection = getattr(model, "text_projection", None)
    if projection is not None and hasattr(projection, "shape"):
        return int(projection.shape[-1])
    return int(model.visual.output_dim)


def _preprocess_record(model) -> dict[str, Any]:
    cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


def _versions() -> dict[str, str]:
    import open_clip
    import torch

    return {"open_clip": open_clip.__version__, "torch": torch.__version__}
