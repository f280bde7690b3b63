"""The local engine against Ray with 1 and 2 encoding actors, on one folder and model, on this machine.

    python bench/bench_ray.py --images 2000
    python bench/bench_ray.py --images 300 --model ViT-B-32 --pretrained none

Ray is started once (its start-up printed apart); each build is a new index of the same photos (640x480
JPEGs) with the model loaded by the engine as a user's run loads it. Prints images/s, and Ray's overhead per
photo against the local engine.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from bench.bench_index import photo_folder  # noqa: E402
from bench.bench_throughput import model_spec, shared_weights  # noqa: E402


def build_seconds(folder: Path, out: Path, spec: str, weights: str | None, **engine) -> float:
    from xmodal.indexer import IndexConfig, build_index

    started = time.perf_counter()
    report = build_index(out, IndexConfig(images=[folder], model=spec, pretrained=weights, device="cpu", **engine))
    assert not report.failures
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--pretrained", default=None)
    args = parser.parse_args()

    import ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        folder, _ = photo_folder(tmp, args.images, size=(640, 480))
        spec = model_spec(args.model, tmp)
        weights = shared_weights(spec, args.pretrained, tmp)
        print(f"{os.cpu_count()} cores; {args.images} JPEGs 640x480; model {spec}")
        local = build_seconds(folder, tmp / "local", spec, weights)
        print(f"  local engine (default workers):  {args.images / local:8.1f} images/s ({local:.1f} s)")
        started = time.perf_counter()
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
        print(f"  ray.init (once):                 {time.perf_counter() - started:.1f} s")
        for actors in (1, 2):
            seconds = build_seconds(folder, tmp / f"ray{actors}", spec, weights, engine="ray", ray_actors=actors)
            overhead = (seconds - local) / args.images * 1000
            print(f"  Ray, {actors} encoding actor(s):       {args.images / seconds:8.1f} images/s ({seconds:.1f} s; "
                  f"{overhead:+.2f} ms per photo against local)")
        ray.shutdown()


if __name__ == "__main__":
    main()
