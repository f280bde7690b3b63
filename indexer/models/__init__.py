"""Encoders: the registry, the backends (open_clip, transformers) and their shared contract."""
from .base import Encoder, ModelIdentity, encode_images, l2_normalize
from .registry import DEFAULT_MODEL, list_models, load_encoder, load_encoder_for, register_model

__all__ = [
    "DEFAULT_MODEL", "Encoder", "ModelIdentity", "encode_images", "l2_normalize",
    "list_models", "load_encoder", "load_encoder_for", "register_model",
]
