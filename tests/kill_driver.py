"""Run xmodal's indexer in this process and SIGKILL it at the Nth call of a chosen function.

    python tests/kill_driver.py INDEX IMAGES TEXTS POINT N      # POINT from POINTS, or "none"; TEXTS "-": none
    python tests/kill_driver.py INDEX IMAGES TEXTS loop ROUNDS  # rewrite a file and re-index, ROUNDS times
    python tests/kill_driver.py INDEX - TABLE POINT N products   # TABLE's rows are products (image column "image")
    python tests/kill_driver.py INDEX - - POINT N compact         # compact INDEX (xmodal compact)

XMODAL_TEST_ENGINE=ray runs the indexing on a local Ray this process starts; XMODAL_TEST_WORKERS=N decodes
photos in N worker processes (default 0: in this one); XMODAL_TEST_MODEL=SPEC encodes with another model.

Only the test suite uses this; the product has no fault hooks of its own.
"""
from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

POINTS = {
    "encode_image": ("fakes", "FakeEncoder", "encode_preprocessed"),
    "encode_text": ("fakes", "FakeEncoder", "encode_texts"),
    "journal_append": ("xmodal.indexer.store.journal", "Journal", "append"),
    "journal_read_chunk": ("xmodal.indexer.store.journal", None, "read_chunk"),  # on Ray: the driver reads workers' vectors
    "write_items": ("xmodal.indexer.store.segments", None, "write_items"),
    "write_vectors": ("xmodal.indexer.store.segments", None, "_save_npy"),  # ids, vectors and deletion files
    "write_deletions": ("xmodal.indexer.build.commit", None, "write_deletions"),
    "publish_segment": ("xmodal.indexer.store.layout", "IndexDir", "publish_segment"),
    "write_failures": ("xmodal.indexer.build.commit", None, "write_failures"),
    "ann_save": ("xmodal.indexer.store.ann", "VectorIndex", "save"),
    "generation_rename": ("xmodal.indexer.store.layout", None, "_fsync_tree"),
    "manifest_write": ("xmodal.indexer.store.layout", None, "_write_atomic"),
    "garbage_collect": ("xmodal.indexer.store.layout", "IndexDir", "_collect_garbage"),
    "journal_clear": ("xmodal.indexer.store.journal", "Journal", "clear"),
}


def arm(point: str, nth: int) -> None:
    module_name, class_name, attr = POINTS[point]
    owner = importlib.import_module(module_name)
    owner = getattr(owner, class_name) if class_name else owner
    original = getattr(owner, attr)
    calls = {"n": 0}

    @functools.wraps(original)
    def killer(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(owner, attr, killer)


def config(images: str, texts: str, products: bool = False):
    from xmodal.indexer import IndexConfig

    if products:
        return IndexConfig(texts=[Path(texts)], text_column="description", image_column="image",
                           model="python:fakes:make_encoder", workers=0, batch_size=4, journal_every=4)
    return IndexConfig(images=[Path(images)], texts=[Path(texts)] if texts != "-" else [],
                       model=os.environ.get("XMODAL_TEST_MODEL", "python:fakes:make_encoder"),
                       workers=int(os.environ.get("XMODAL_TEST_WORKERS", "0")), batch_size=4, journal_every=4,
                       engine=os.environ.get("XMODAL_TEST_ENGINE", "local"))


def small_segments(rows: str) -> None:
    """XMODAL_TEST_SEGMENT_ROWS: segments (and corpus batches) of that many rows, so a small run streams."""
    import xmodal.indexer.build.commit
    import xmodal.indexer.build.fresh
    import xmodal.indexer.build.sources.corpus
    xmodal.indexer.build.fresh.SEGMENT_ROWS = xmodal.indexer.build.commit.SEGMENT_ROWS = int(rows)
    xmodal.indexer.build.sources.corpus.STREAM_ROWS = int(rows)


def main() -> None:
    index, images, texts, point, number = sys.argv[1:6]
    if os.environ.get("XMODAL_TEST_SEGMENT_ROWS"):
        small_segments(os.environ["XMODAL_TEST_SEGMENT_ROWS"])
    products = sys.argv[6:7] == ["products"]
    from xmodal.indexer import build_index

    if sys.argv[6:7] == ["compact"]:
        from xmodal.indexer.build.edit import compact_index

        if point != "none":
            arm(point, int(number))
        print(compact_index(index))
        return
    if point == "loop":
        from conftest import noise_image

        for round_number in range(int(number)):
            noise_image(1000 + round_number).save(Path(images, "changing.png"))
            build_index(index, config(images, texts))
        return
    if point != "none":
        arm(point, int(number))
    report = build_index(index, config(images, texts, products))
    print(report.stats.to_dict())


if __name__ == "__main__":
    main()
