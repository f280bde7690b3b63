"""The run's own first photos and texts, which the ways a model can run here are timed on (models/calibrate.py)
the first time it runs on this machine: read only when measuring is due."""
from __future__ import annotations

from itertools import islice

from ..errors import ImageDecodeError
from ..imaging import load_image
from ..models.calibrate import SAMPLE_IMAGES, SAMPLE_TEXTS, Calibrating, Sample
from .encode import ProgressFactory
from .sources import PreparedCorpus, TextRecord


def run_calibrating(image_paths: list[str], products: list[TextRecord], corpora: list[PreparedCorpus],
                    progress: ProgressFactory | None, max_pixels: int, background: str | None) -> Calibrating:
    """What measuring reads if it is due: the run's first photos and texts, and how many of each it encodes."""
    photos = image_paths + [p.photo_file or p.image for p in products if p.image]
    texts = sum(c.rows for c in corpora) + len(products)
    return Calibrating(lambda: Sample.of(_first_images(photos, max_pixels, background),
                                         _first_texts(products, corpora)),
                       {"image": len(photos), "text": texts}, progress)


def _first_images(paths: list[str], max_pixels: int, background: str | None) -> list:
    """Up to SAMPLE_IMAGES of the run's photos, decoded as the run decodes them; unreadable ones are passed by
    (the run reports them)."""
    images = []
    for path in paths:
        if len(images) == 2 * SAMPLE_IMAGES:  # room for the duplicates Sample.of drops
            break
        try:
            images.append(load_image(path, max_pixels, background=background).convert("RGB"))
        except (ImageDecodeError, OSError, ValueError):
            continue
    return images


def _first_texts(products: list[TextRecord], corpora: list[PreparedCorpus]) -> list[str]:
    texts = [p.text for p in products[:SAMPLE_TEXTS]]
    for corpus in corpora:
        if len(texts) >= SAMPLE_TEXTS:
            break
        for batch in islice(corpus.batches(SAMPLE_TEXTS), 1):
            texts += [str(t) for t in batch.texts.to_pylist()]
    return texts[:SAMPLE_TEXTS]
