"""One-shot `xmodal search` end to end: wall time (p50/p95) and peak RSS of the whole process.

    python bench/bench_oneshot.py --runs 5
    python bench/bench_oneshot.py --runs 5 --models offline            # only the offline model

Builds the demo catalog's index once per model (the offline model, and ViT-B-32 from a
local random-weight checkpoint written to the work folder) three times: photos and listings run as before
issue 23 (--runtime torch --precision fp32) and as `auto` now chooses, and its photos alone as `auto`
chooses for them (it weighs each tower by what an index encodes); then runs
`xmodal search INDEX "a red car" -k 5` in fresh processes, as a user would, prints where the import
time goes (python -X importtime, top-level modules), and compares the two ways' top-10 hits.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench import as_cpu  # noqa: E402  (the repository's folder is on the path from here)
CATALOG = REPO / "data" / "catalog"
XMODAL = [sys.executable, "-c", "from xmodal import cli; cli.app()"]
QUERY = "a red car"


def build(workdir: Path, model: str, way: list[str], texts: bool = True) -> Path:
    out = workdir / f"{model}-{'-'.join(way) or 'auto'}{'' if texts else '-photos'}.idx"
    args = ["--model", "offline"]
    if model == "ViT-B-32":
        checkpoint = workdir / "vit-b-32.safetensors"
        if not checkpoint.exists():  # in a process of its own: a search forked from this one after torch was
            # imported here would report this process's memory as its own peak RSS (ru_maxrss survives exec)
            subprocess.run([sys.executable, __file__, "--write-checkpoint", str(checkpoint)], check=True)
        args = ["--model", "ViT-B-32", "--pretrained", str(checkpoint)]
    listings = ["--texts", str(CATALOG / "listings.csv"), "--text-column", "description"] if texts else []
    subprocess.run(XMODAL + ["index", str(CATALOG / "images"), *listings, "--out", str(out), *args, *way],
                   check=True, capture_output=True, cwd=REPO)
    return out


def write_random_checkpoint(path: Path) -> None:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def run_once(index: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one search process."""
    started = time.perf_counter()
    child = subprocess.Popen(XMODAL + ["search", str(index), QUERY, "-k", "5"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"xmodal search failed with exit code {child.returncode}")
    return seconds, usage.ru_maxrss / 1024


def hits(index: Path) -> list[tuple[int, float]]:
    found = subprocess.run(XMODAL + ["search", str(index), QUERY, "-k", "10", "--json"], cwd=REPO, check=True,
                           capture_output=True, text=True)
    return [(h["row_id"], h["score"]) for h in json.loads(found.stdout)["hits"]]


def import_breakdown(index: Path, top: int = 6) -> list[tuple[float, str]]:
    result = subprocess.run([sys.executable, "-X", "importtime", *XMODAL[1:], "search", str(index), QUERY],
                            capture_output=True, text=True, cwd=REPO)
    found = []
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( ?)(\S+)$", line)
        if match:
            found.append((int(match.group(1)) / 1e6, match.group(3)))
    return sorted(found, reverse=True)[:top]


# (the way asked for, whether the index holds the listings too): auto weighs each tower by what the index
# encodes, so an index of photos alone may run another way than one of photos and texts
WAYS = {"before (torch fp32)": (["--runtime", "torch", "--precision", "fp32"], True), "now (auto)": ([], True),
        "photos only (auto)": ([], False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["offline", "ViT-B-32"])
    parser.add_argument("--as-cpu", choices=as_cpu.CHOICES,
                        help="every process as on an older CPU: its ways and its kernels (bench/as_cpu.py)")
    parser.add_argument("--write-checkpoint", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_checkpoint:
        return write_random_checkpoint(args.write_checkpoint)
    if args.as_cpu:
        as_cpu.restart_as(args.as_cpu)
    print(f"python bench/bench_oneshot.py --runs {args.runs} --models {' '.join(args.models)}"
          + (f" --as-cpu {args.as_cpu}: {as_cpu.describe(as_cpu.KINDS[args.as_cpu])}" if args.as_cpu else ""))
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")  # exports go with the run, not the user's cache
        for model in args.models:
            found = {}
            for label, (way, texts) in WAYS.items():
                index = build(Path(tmp), model, way, texts)
                info = json.loads(subprocess.run(XMODAL + ["info", str(index), "--json"], cwd=REPO, check=True,
                                                 capture_output=True, text=True).stdout)["model"]
                run_once(index)  # warm the page cache (and, for an exported way, the export cache)
                runs = [run_once(index) for _ in range(args.runs)]
                times = sorted(seconds for seconds, _ in runs)
                p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
                print(f"{model:<9} {label:<19} {info['precision']} on {info['runtime']:<8} p50 "
                      f"{statistics.median(times):.2f} s, p95 {p95:.2f} s, peak RSS "
                      f"{max(rss for _, rss in runs):.0f} MB ({args.runs} runs)")
                print("          imports: " + ", ".join(f"{name} {t:.2f} s" for t, name in import_breakdown(index)))
                if texts:
                    found[label] = hits(index)
            before, now = found.values()
            same = [r for r, _ in before] == [r for r, _ in now]
            worst = max(abs(a - b) for (_, a), (_, b) in zip(before, now))
            print(f"{model:<9} top-10 hits now vs before: same row ids {same}, largest score difference {worst:.1e}")


if __name__ == "__main__":
    main()
