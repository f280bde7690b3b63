"""Knowing, quickly, whether hub-hosted weights can be had: cached, or reachable.

Without this, huggingface_hub retries an unreachable host for most of a minute
before failing; users deserve one line at once instead.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import os
import socket
from urllib.parse import urlparse

from ..errors import option

_TRUTHY = {"1", "true", "yes", "on"}
PROBE_TIMEOUT_S = 3.0


def hub_offline_requested() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY


@functools.lru_cache(maxsize=8)
def host_reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    parsed = urlparse(url)
    host = parsed.hostname
    if not host:
        return False
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def hub_usable() -> bool:
    """True when a download from the Hugging Face hub may be attempted."""
    return not hub_offline_requested() and host_reachable(hub_endpoint())


# Where huggingface_hub and transformers keep the offline switch they read at import (HF_HUB_OFFLINE): transformers
# 4 copies it into its own module, 5 asks huggingface_hub's at each call.
_OFFLINE_SWITCHES = (("huggingface_hub.constants", "HF_HUB_OFFLINE"), ("transformers.utils.hub", "_is_offline_mode"))


@contextlib.contextmanager
def cache_only(active: bool):
    """Within it, huggingface_hub and transformers read the local cache alone, as under HF_HUB_OFFLINE=1: a library
    xmodal calls that asks the hub on its own (open_clip building a Hugging Face text tower) fails at once, or
    loads from the cache, instead of retrying an unreachable host for half a minute."""
    if not active:
        yield
        return
    saved = []
    for module_name, name in _OFFLINE_SWITCHES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if isinstance(getattr(module, name, None), bool):
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, True)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def cached_hub_file(repo_id: str, filenames: list[str], cache_dir: str | None = None) -> str | None:
    """The local path of the first of `filenames` already in the HF cache, else None."""
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        found = try_to_load_from_cache(repo_id, name, cache_dir=cache_dir)
        if isinstance(found, str) and os.path.isfile(found):
            return found
    return None


WAYS_OUT = (
    f"pass a local checkpoint ({option('pretrained', '/path/to/weights.safetensors')}) or a "
    f"local-dir:PATH model, pre-fill the Hugging Face cache on a connected machine, "
    f"or use {option('model', 'offline')} (pip install 'xmodal[offline]')"
)
