"""What `auto` measures and chooses on this machine, what measuring costs, and what it buys (issue 30).

    python bench/bench_calibrate.py --images 200 --repeats 3 [--models offline ViT-B-32] [--as-cpu avx2]

For each model (the offline model: real weights; ViT-B-32 from a seeded random-weight checkpoint), in a cache
folder of its own:
1. a first `xmodal index` of the photos measures every way this machine can run (calibration, models/
   calibrate.py): its cost with the exports it needs, then again with the exports cached (measuring alone),
   and the table it measured (speed over torch fp32, lowest cosine), as `xmodal info` shows it;
2. whole `xmodal index` processes of the same photo-sized JPEGs (640x480), `auto` (the measured choice, read
   from the cache) against `--runtime torch --precision fp32`, interleaved: images/s (best of --repeats) and
   the ratio.
--as-cpu avx2 runs it all as on an AVX2-only CPU: that CPU's ways and AVX2's kernels, on this CPU's cores
(bench/as_cpu.py; avx512: Skylake-SP's). --cpu-features sets XMODAL_CPU_FEATURES alone (e.g. '-avx512_bf16'): the ways a CPU without
those flags offers, run on this CPU's kernels.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import as_cpu  # noqa: E402  (the repository's folder is on the path from here)
XMODAL = [sys.executable, "-c", "from xmodal import cli; cli.run()"]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(XMODAL + args, env=env, check=True, capture_output=True, text=True)


def index_seconds(photos: Path, out: Path, args: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    run(["index", str(photos), "--out", str(out), *args], env)
    return time.perf_counter() - started


def calibration_of(index: Path, env: dict[str, str]) -> dict:
    return json.loads(run(["info", str(index), "--json"], env).stdout)


def chosen_way(model: dict) -> str:
    from xmodal.indexer.models import ModelIdentity

    return ModelIdentity.from_dict(model).inference.describe()


def measure_the_rest(photos: Path, out: Path, base: list[str], env: dict[str, str], most: int = 6
                     ) -> tuple[int, dict | None]:
    """New one-photo indexes until one measures nothing (so no timed run pays for measuring): how many did
    measure, and the last one's info."""
    one = out / "one"
    one.mkdir(parents=True)
    shutil.copy(next(iter(sorted(photos.iterdir()))), one)
    for attempt in range(most):
        index = out / f"{attempt}.idx"
        done = run(["index", str(one), "--out", str(index), *base], env)
        if "note: measured " not in done.stderr:
            return attempt, calibration_of(out / f"{attempt - 1}.idx", env) if attempt else None
    return most, calibration_of(out / f"{most - 1}.idx", env)


def bench_model(model: str, photos: Path, count: int, repeats: int, workdir: Path, env: dict[str, str]) -> None:
    from bench.bench_index_precision import model_args
    from xmodal.indexer import describe_calibration

    base = model_args(model, workdir)
    cache = workdir / f"cache-{model}"
    env = {**env, "XDG_CACHE_HOME": str(cache), "XMODAL_CALIBRATE": "on"}
    first = index_seconds(photos, workdir / f"{model}-first.idx", base, env)
    measured = calibration_of(workdir / f"{model}-first.idx", env)
    shutil.rmtree(cache / "xmodal" / "calibrated")  # exports stay: measuring alone, the second time
    index_seconds(photos, workdir / f"{model}-second.idx", base, env)
    again = calibration_of(workdir / f"{model}-second.idx", env)
    chosen = again["model"]
    print(f"{model}: first run measured for {measured['calibration']['seconds']:.1f} s with its exports "
          f"(whole run {first:.1f} s); {again['calibration']['seconds']:.1f} s with exports cached; "
          f"chose {chosen_way(chosen)}", flush=True)
    print(f"  {describe_calibration(again['calibration'])}", flush=True)
    runs, complete = measure_the_rest(photos, workdir / f"{model}-rest", base, env)
    if runs:  # the ways the budget left: measured by the next new indexes (a photo each, here)
        chosen = complete["model"]
        print(f"  {runs} more new {'index' if runs == 1 else 'indexes'} measured the ways left, {complete['calibration']['seconds']:.1f} s of "
              f"measuring in all; then chose {chosen_way(chosen)}", flush=True)
        print(f"  {describe_calibration(complete['calibration'])}", flush=True)
    ways = {"auto": [], "torch fp32": ["--runtime", "torch", "--precision", "fp32"]}
    seconds = {name: [] for name in ways}
    for repeat in range(repeats):
        for name, extra in ways.items():
            seconds[name].append(index_seconds(photos, workdir / f"{model}-{name}-{repeat}.idx".replace(" ", "-"),
                                               base + extra, env))
    best = {name: min(found) for name, found in seconds.items()}
    print(f"  xmodal index, whole process, {count} photos, best of {repeats}: auto "
          f"{count / best['auto']:.1f} images/s, torch fp32 {count / best['torch fp32']:.1f} images/s: "
          f"auto x{best['torch fp32'] / best['auto']:.2f}", flush=True)


def machine_line() -> str:
    """The CPU, the flags xmodal uses, and the versions that decide each way's speed."""
    from xmodal.indexer.models.calibrate import cpu_name, machine

    found = machine()
    return (f"machine: {cpu_name()}, {found['cores']} cores, flags used {', '.join(found['flags'] or ['unknown'])}; "
            f"python {platform.python_version()}; {', '.join(f'{k} {v}' for k, v in found['versions'].items())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["offline", "ViT-B-32"])
    parser.add_argument("--cpu-features", default=None, metavar="MASK")
    parser.add_argument("--as-cpu", choices=as_cpu.CHOICES,
                        help="every process as on an older CPU: its ways and its kernels (bench/as_cpu.py)")
    args = parser.parse_args()
    if args.as_cpu:
        as_cpu.restart_as(args.as_cpu)
    from bench.bench_index import make_photos
    env = dict(os.environ)
    if args.cpu_features:
        env["XMODAL_CPU_FEATURES"] = args.cpu_features
        os.environ["XMODAL_CPU_FEATURES"] = args.cpu_features
    print(f"python bench/bench_calibrate.py --images {args.images} --repeats {args.repeats} --models "
          f"{' '.join(args.models)}" + (f" --cpu-features '{args.cpu_features}'" if args.cpu_features else "")
          + (f" --as-cpu {args.as_cpu}: {as_cpu.describe(as_cpu.KINDS[args.as_cpu])}" if args.as_cpu else ""))
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        photos = workdir / "photos"
        photos.mkdir()
        make_photos(photos, args.images)
        for model in args.models:
            bench_model(model, photos, args.images, args.repeats, workdir, env)


if __name__ == "__main__":
    main()
