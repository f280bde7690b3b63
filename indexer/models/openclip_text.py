"""open_clip models whose text tower is a Hugging Face model (xlm-roberta-base-ViT-B-32 and its kin): the
languages it reads, and the one line a missing text tower gets.

open_clip builds such a tower from the Hugging Face config (and tokenizer) its text_cfg names, from the hub or its
cache, even where the CLIP weights themselves are a local file: a checkpoint alone is not the whole model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ModelUnavailableError, option
from .base import languages_read, text_model_languages

LOCAL_DIR = "local-dir:"  # open_clip's schemas, as openclip.py names them
HF_HUB = "hf-hub:"


def tower_languages(model, tokenizer, spec: str, pretrained: str | None) -> tuple[str, ...]:
    """What the text tower reads. A Hugging Face tower says so by its config's kind and hub name and by its
    tokenizer's name, where a local-dir: or hf-hub: spec need not name it; open_clip's own towers, by the spec."""
    config = getattr(getattr(model, "text", None), "config", None)
    hf_tokenizer = getattr(tokenizer, "tokenizer", None)
    told = text_model_languages(getattr(config, "model_type", None), getattr(config, "name_or_path", None),
                                getattr(hf_tokenizer, "name_or_path", None))
    return told or languages_read(spec, pretrained)


def load_tokenizer(model_name: str):
    """open_clip's tokenizer for the model. A local-dir: model's Hugging Face tokenizer is read from the model's own
    folder, whatever its text_cfg names: a folder without it is told so."""
    import open_clip

    try:
        return open_clip.get_tokenizer(model_name)
    except (OSError, ValueError) as exc:
        if not model_name.startswith(LOCAL_DIR):
            raise
        raise ModelUnavailableError(
            f"could not load the tokenizer of {model_name!r}: open_clip reads a local-dir: model's Hugging Face "
            "tokenizer from that folder; save it there beside open_clip_config.json "
            "(transformers: AutoTokenizer.from_pretrained(NAME).save_pretrained(FOLDER))") from exc


def hub_text_tower(model_name: str) -> str | None:
    """The Hugging Face model a text_cfg names by hub id (xlm-roberta-base), not by a local folder; None for open_clip's
    own text towers, and for an hf-hub: model (loaded by that name only where the hub can be reached)."""
    import open_clip

    if model_name.startswith(HF_HUB):
        return None
    if model_name.startswith(LOCAL_DIR):
        config_file = Path(model_name[len(LOCAL_DIR):]) / "open_clip_config.json"
        try:
            model_cfg = json.loads(config_file.read_text(encoding="utf-8")).get("model_cfg") or {}
        except (OSError, ValueError):
            return None
    else:
        model_cfg = open_clip.get_model_config(model_name) or {}
    name = (model_cfg.get("text_cfg") or {}).get("hf_model_name")
    return name if name and not os.path.isdir(name) else None


def missing_tower_message(spec: str, tower: str) -> str:
    return (f"could not load model {spec!r}: its text tower, the Hugging Face model {tower} (config and tokenizer), "
            "is not in the local cache and the model hub cannot be reached; run the same command once where the hub "
            f"can be reached (that caches them), or use {option('model', 'local-dir:PATH')}: a folder with the "
            "weights, open_clip_config.json naming a local copy of the tower, and the tokenizer's files")
