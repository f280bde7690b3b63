"""What a way per tower buys where one tower's fastest way breaks parity (issue 30).

    python bench/bench_per_tower.py --images 200 --repeats 3 [--as-cpu avx2]

No real CLIP weights are at hand, and int8 holds parity on both towers of random ones, so this bench takes the
measurements a first `xmodal index` of ViT-B-32 (random weights) made on this machine and marks every int8
way's text tower outside parity (lowest cosine 0.990), as on weights whose text tower's int8 breaks it. Then,
whole `xmodal index` processes of the same photo-sized JPEGs (640x480), interleaved, best of --repeats:
- `auto`: photos in the fastest int8 way, texts in the fastest way that still holds on them;
- the whole way `auto` ran before ways per tower: the fastest way that holds on both towers, asked for by name;
images/s and peak RSS (os.wait4's ru_maxrss of the process), then a one-shot `xmodal search` of each index
(a new process, p50 and p95 of --queries).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import as_cpu  # noqa: E402  (the repository's folder is on the path from here)
XMODAL = [sys.executable, "-c", "from xmodal import cli; cli.run()"]
BROKEN_COSINE = 0.990


def run(args: list[str], env: dict[str, str], log: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in MB, and stdout of one `xmodal` process."""
    with open(log, "w") as out, open(f"{log}.err", "w") as err:
        started = time.perf_counter()
        child = subprocess.Popen(XMODAL + args, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"xmodal {' '.join(args[:3])} failed: {Path(f'{log}.err').read_text()[-800:]}")
    return seconds, usage.ru_maxrss / 1024, log.read_text()


def break_text_int8(cache: Path) -> None:
    """Every int8 way's text tower outside parity in the cached measurements (as on such weights)."""
    for entry in (cache / "xmodal" / "calibrated").glob("*.json"):
        data = json.loads(entry.read_text())
        for result in data["calibration"]["results"]:
            if result["precision"] == "int8" and result["tower"] == "text" and result["min_cosine"] is not None:
                result["min_cosine"] = BROKEN_COSINE
        entry.write_text(json.dumps(data, indent=2))


def whole_way(cache: Path, photos: int):
    """The way auto ran before ways per tower: the fastest whole way that holds on both towers."""
    from xmodal.indexer.models.calibrate import Calibration

    [entry] = (cache / "xmodal" / "calibrated").glob("*.json")
    table = Calibration.from_dict(json.loads(entry.read_text())["calibration"]).table({"image": photos, "text": 0})
    return max((w for w, m in table.items() if not w.split and m.keeps_parity()), key=lambda w: table[w].speedup)


def measure_everything(photos: Path, base: list[str], work: Path, env: dict[str, str]) -> None:
    """A first index measures; new one-photo indexes measure the ways its budget left."""
    run(["index", str(photos), "--out", str(work / "first.idx"), *base], env, work / "first.log")
    one = work / "one"
    one.mkdir()
    (one / "a.jpg").write_bytes(next(iter(sorted(photos.iterdir()))).read_bytes())
    for attempt in range(6):
        done = subprocess.run(XMODAL + ["index", str(one), "--out", str(work / f"one-{attempt}.idx"), *base],
                              env=env, capture_output=True, text=True, check=True)
        if "note: measured " not in done.stderr:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--queries", type=int, default=7)
    parser.add_argument("--as-cpu", choices=as_cpu.CHOICES,
                        help="every process as on an older CPU: its ways and its kernels (bench/as_cpu.py)")
    args = parser.parse_args()
    if args.as_cpu:
        as_cpu.restart_as(args.as_cpu)
    from bench.bench_index import make_photos
    from bench.bench_index_precision import model_args
    from bench.bench_calibrate import machine_line

    print(f"python bench/bench_per_tower.py --images {args.images} --repeats {args.repeats} --queries "
          f"{args.queries}" + (f" --as-cpu {args.as_cpu}: {as_cpu.describe(as_cpu.KINDS[args.as_cpu])}"
                               if args.as_cpu else ""))
    print(machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photos = work / "photos"
        photos.mkdir()
        make_photos(photos, args.images)
        # in a process of its own: a run forked from this one after torch was imported here would report this
        # process's memory as its own peak RSS (ru_maxrss survives exec)
        subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(REPO)!r}); from bench."
                        f"bench_index_precision import model_args; model_args('ViT-B-32', __import__('pathlib')."
                        f"Path({str(work)!r}))"], check=True, capture_output=True)
        base = model_args("ViT-B-32", work)  # the checkpoint is written: its options alone
        cache = work / "cache"
        env = {**os.environ, "XDG_CACHE_HOME": str(cache), "XMODAL_CALIBRATE": "on"}
        measure_everything(photos, base, work, env)
        break_text_int8(cache)
        whole = whole_way(cache, args.images)
        ways = {"auto (a way per tower)": [], f"{whole.describe()} (whole, as auto before)":
                ["--runtime", whole.runtime, "--precision", whole.precision]}
        runs = {name: [] for name in ways}
        for repeat in range(args.repeats):
            for number, (name, extra) in enumerate(ways.items()):
                out = work / f"way{number}-{repeat}.idx"
                seconds, rss, _ = run(["index", str(photos), "--out", str(out), *base, *extra], env, work / "log")
                runs[name].append((seconds, rss))
        chosen = json.loads(run(["info", str(work / "way0-0.idx"), "--json"], env, work / "log")[2])["model"]
        print(f"ViT-B-32 (random weights), int8's text tower marked outside parity: auto runs "
              f"{_describe(chosen)}")
        for number, name in enumerate(ways):
            query = [run(["search", str(work / f"way{number}-0.idx"), "a red car", "-k", "5"], env, work / "log")
                     for _ in range(args.queries)]
            latencies = sorted(seconds for seconds, _, _ in query)
            best = min(seconds for seconds, _ in runs[name])
            print(f"  {name}: xmodal index, whole process, {args.images} photos, best of {args.repeats}: "
                  f"{args.images / best:.1f} images/s, peak RSS {max(rss for _, rss in runs[name]):,.0f} MB; "
                  f"one-shot xmodal search p50 {statistics.median(latencies):.2f} s, "
                  f"p95 {latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))]:.2f} s, "
                  f"{max(rss for _, rss, _ in query):,.0f} MB", flush=True)


def _describe(model: dict) -> str:
    from xmodal.indexer.models import ModelIdentity

    return ModelIdentity.from_dict(model).inference.describe()


if __name__ == "__main__":
    main()
