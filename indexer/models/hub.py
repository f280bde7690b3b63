"""Knowing, quickly, whether hub-hosted weights can be had: cached, or reachable.

Without this, huggingface_hub retries an unreachable host for most of a minute
before failing; users deserve one line at once instead.
"""
from __future__ import annotations

import functools
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
