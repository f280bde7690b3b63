"""`xmodal eval`: retrieval quality of a model or an index on a labelled folder or a captions file.

Labelled folder (one subfolder per class): text -> image with the prompt
"a photo of a {class}" (precision@k, recall@k, mAP over the classes), and
image -> text as zero-shot classification over the class prompts (top-1, top-5).
Captions file (CSV or JSONL: image path + caption, several captions per image
allowed): Recall@K both ways, by the protocol of the CLIP paper.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..indexer.errors import InvalidInputError, TextColumnError, command, option
from ..indexer.models import Encoder, load_encoder
from ..indexer.imaging import check_decode_mode
from ..indexer.build import encode_image_files, find_images, read_texts

from . import metrics
from .engine import open_index

DEFAULT_PROMPT = "a photo of a {}"
DEFAULT_KS = (1, 5, 10)
ANN_PROBES = 1000  # stored vectors used as queries to measure an approximate index's recall


@dataclass
class EvalResult:
    dataset: str
    kind: str  # "labelled-folder" | "captions"
    items: dict[str, int]
    model: dict[str, Any]
    text_to_image: dict[str, float]
    image_to_text: dict[str, float]
    ann: dict[str, float] = field(default_factory=dict)
    failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _ImageVectors:
    paths: list[str]
    vectors: np.ndarray
    failures: int


def evaluate(dataset: str | Path, *, model: str | None = None, pretrained: str | None = None,
             index: str | Path | None = None, ks: tuple[int, ...] = DEFAULT_KS, device: str | None = None,
             prompt: str = DEFAULT_PROMPT, image_column: str = "image", caption_column: str = "caption",
             encoder: Encoder | None = None, workers: int | None = None,
             image_decode: str = "reduced", runtime: str | None = None, precision: str | None = None) -> EvalResult:
    """With an index, its stored vectors are scored; else the images are encoded, decoded `image_decode`.
    `runtime` and `precision` say how the model runs (indexer.models.inference; None: auto, or the index's)."""
    dataset = Path(dataset)
    check_decode_mode(image_decode)
    if not ks or min(ks) < 1:
        raise InvalidInputError("-k takes whole numbers of at least 1, e.g. -k 1,5,10")
    if dataset.is_dir():
        paths, labels, classes = _labelled_folder(dataset)
        run = _LabelledRun(classes, labels, prompt)
    elif dataset.is_file():
        paths, captions, owners = _captions_file(dataset, image_column, caption_column)
        run = _CaptionsRun(captions, owners)
    else:
        raise InvalidInputError(f"dataset {dataset} does not exist; give a labelled folder or a captions file")
    search_index = open_index(index, device=device, encoder=encoder, runtime=runtime, precision=precision) \
        if index else None
    encoder = search_index.encoder if search_index else \
        (encoder or load_encoder(model or "ViT-B-32", pretrained, device, runtime, precision))
    images = (_vectors_from_index(search_index, paths) if search_index
              else _vectors_from_files(encoder, paths, workers, image_decode))
    result = run.score(encoder, images, ks)
    result.dataset, result.model, result.failures = str(dataset), encoder.identity.to_dict(), images.failures
    if search_index is not None:
        result.ann = _ann_recall(search_index, ks)
    return result


class _LabelledRun:
    def __init__(self, classes: list[str], labels: dict[str, int], prompt: str):
        self.classes, self.labels, self.prompt = classes, labels, prompt

    def score(self, encoder: Encoder, images: _ImageVectors, ks) -> EvalResult:
        names = [c.replace("_", " ") for c in self.classes]
        prompts = encoder.encode_texts([self.prompt.format(n) for n in names])
        truth = np.array([self.labels[p] for p in images.paths])
        relevant = truth[None, :] == np.arange(len(self.classes))[:, None]  # class x image
        ranked = metrics.rank_relevance(prompts @ images.vectors.T, relevant)
        t2i = {}
        for k in ks:
            t2i[f"precision@{k}"] = _mean(metrics.precision_at_k(ranked, k))
            t2i[f"recall@{k}"] = _mean(metrics.recall_at_k(ranked, k))
        t2i["mAP"] = _mean(metrics.average_precision(ranked))
        by_image = metrics.rank_relevance(images.vectors @ prompts.T, relevant.T)
        i2t = {f"top{n}": _mean(metrics.hit_at_k(by_image, n)) for n in (1, 5)}
        return EvalResult("", "labelled-folder", {"images": len(truth), "classes": len(self.classes)},
                          {}, t2i, i2t)


class _CaptionsRun:
    def __init__(self, captions: list[str], owners: list[str]):
        self.captions, self.owners = captions, owners

    def score(self, encoder: Encoder, images: _ImageVectors, ks) -> EvalResult:
        position = {p: i for i, p in enumerate(images.paths)}
        kept = [(c, position[o]) for c, o in zip(self.captions, self.owners) if o in position]
        texts = encoder.encode_texts([c for c, _ in kept])
        owner = np.array([i for _, i in kept])
        relevant = owner[:, None] == np.arange(len(images.paths))[None, :]  # caption x image
        t2i = metrics.rank_relevance(texts @ images.vectors.T, relevant)
        i2t = metrics.rank_relevance(images.vectors @ texts.T, relevant.T)
        return EvalResult(
            "", "captions", {"images": len(images.paths), "captions": len(kept)}, {},
            {f"recall@{k}": _mean(metrics.hit_at_k(t2i, k)) for k in ks},
            {f"recall@{k}": _mean(metrics.hit_at_k(i2t, k)) for k in ks},
        )


def _labelled_folder(root: Path) -> tuple[list[str], dict[str, int], list[str]]:
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if len(classes) < 2:
        raise InvalidInputError(f"{root} needs one subfolder per class (found {len(classes)}); see {command('eval')}")
    labels: dict[str, int] = {}
    for number, name in enumerate(classes):
        labels.update({p: number for p in find_images([root / name])})
    return sorted(labels), labels, classes


def _captions_file(path: Path, image_column: str, caption_column: str) -> tuple[list[str], list[str], list[str]]:
    try:
        records = read_texts(path, text_column=caption_column)
    except TextColumnError as exc:  # named in eval's own words: the captions are its texts
        raise InvalidInputError(exc.args[0].replace(option("text_column"), option("caption_column"))) from None
    if records and image_column not in records[0].metadata:
        raise InvalidInputError(
            f"{path.name} has no column {image_column!r}; name the image column with {option('image_column')}"
        )
    owners = [str((path.parent / str(r.metadata[image_column])).resolve()) for r in records]
    return sorted(set(owners)), [r.text for r in records], owners


def _vectors_from_files(encoder: Encoder, paths: list[str], workers: int | None, decode: str) -> _ImageVectors:
    encoded = encode_image_files(encoder, paths, workers=workers, decode=decode)
    return _ImageVectors([d.path for d in encoded.images], encoded.vectors, len(encoded.failures))


def _vectors_from_index(search_index, paths: list[str]) -> _ImageVectors:
    wanted = set(paths)
    row_ids, vectors = search_index.embeddings("image")
    stored = [str(Path(search_index.item(int(r))["path"]).resolve()) for r in row_ids]
    keep = [i for i, p in enumerate(stored) if p in wanted]
    if not keep:
        raise InvalidInputError(
            f"the index at {search_index.path} holds none of the dataset's images; index the dataset first"
        )
    return _ImageVectors([stored[i] for i in keep], vectors[keep], len(wanted) - len(keep))


def _ann_recall(search_index, ks) -> dict[str, float]:
    spec = search_index.manifest.ann.get("image")
    if spec is None or spec.kind == "flat":
        return {}
    row_ids, vectors = search_index.embeddings("image")
    probes = vectors[np.random.default_rng(0).choice(len(vectors), min(ANN_PROBES, len(vectors)), replace=False)]
    k = max(ks)
    exact = -np.sort(-(probes @ vectors.T), axis=1)[:, :k]
    approximate = [np.array([h.score for h in found]) for found in search_index.search_many(vectors=probes, k=k)]
    return {"index_type": spec.kind, **{f"recall@{n}": metrics.ann_recall_at_k(approximate, exact, n) for n in ks}}


def _mean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return round(float(values.mean()), 4) if len(values) else float("nan")
