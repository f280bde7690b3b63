"""Encoders: the registry, the backends (open_clip, transformers) and their shared contract."""
from .calibrate import describe_calibration, recorded_table
from .base import Encoder, ModelIdentity, encode_images, image_input_side, l2_normalize
from .device import DEVICES, is_gpu, resolve_device
from .inference import AUTO, PRECISIONS, RUNTIMES, Inference, accepted_ways, check_parity
from .languages import UNREAD_SHARE, LanguageTally, readers_of, script_language
from .onnx_towers import set_onnx_spinning
from .registry import DEFAULT_MODEL, list_models, load_encoder, load_encoder_for, register_model

__all__ = [
    "AUTO", "DEVICES", "PRECISIONS", "RUNTIMES",
    "DEFAULT_MODEL", "Encoder", "ModelIdentity", "encode_images", "image_input_side", "is_gpu", "l2_normalize",
    "resolve_device", "Inference", "accepted_ways", "check_parity", "describe_calibration", "recorded_table",
    "list_models", "load_encoder", "load_encoder_for", "register_model", "LanguageTally", "UNREAD_SHARE", "readers_of", "script_language",
    "set_onnx_spinning",
]
