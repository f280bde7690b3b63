"""Re-run cost: a no-change re-run and a 1% change, as fractions of a full build, in one run.

    python bench/bench_incremental.py --images 1000 [--model tiny]

The model is loaded once and handed to every run, so the figures compare
indexing work alone (a CLI re-run with nothing new also skips loading the model).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from bench_index import bench_encoder, make_photos  # noqa: E402


def timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--pretrained", default=None)
    args = parser.parse_args()
    from PIL import Image

    from xmodal.indexer import IndexConfig, build_index

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        encoder = bench_encoder(args.model, args.pretrained, "cpu", tmp)
        photos = tmp / "photos"
        photos.mkdir()
        make_photos(photos, args.images)
        config = IndexConfig(images=[photos])
        full, report = timed(lambda: build_index(tmp / "index", config, encoder=encoder))
        same, unchanged = timed(lambda: build_index(tmp / "index", config, encoder=encoder))
        changed = max(1, args.images // 100)
        files = sorted(photos.iterdir())
        for i, path in enumerate(files[:changed]):
            Image.new("RGB", (640, 480), (i, 255 - i, 7)).save(path, quality=90)
        one_pct, delta = timed(lambda: build_index(tmp / "index", config, encoder=encoder))
        print(f"{args.images} JPEGs 640x480, model {encoder.identity.describe()}, cpu")
        print(f"full build:      {full:7.2f} s  (encoded {report.stats.encoded})")
        print(f"no-change rerun: {same:7.2f} s  = {same / full:.1%} of full (encoded {unchanged.stats.encoded})")
        print(f"1% changed:      {one_pct:7.2f} s  = {one_pct / full:.1%} of full "
              f"(encoded {delta.stats.encoded}, removed {delta.stats.removed}, reused {delta.stats.reused})")


if __name__ == "__main__":
    main()
