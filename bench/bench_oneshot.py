"""One-shot `xmodal search` end to end: wall time (p50/p95) and peak RSS of the whole process.

    python bench/bench_oneshot.py --runs 5
    python bench/bench_oneshot.py --runs 5 --models offline            # only the offline model

Builds the demo catalog's index once per model (the offline model, and ViT-B-32 from a
local random-weight checkpoint written to the work folder), then runs
`xmodal search INDEX "a red car" -k 5` in fresh processes, as a user would, and
prints where the import time goes (python -X importtime, top-level modules).
"""
from __future__ import annotations

import argparse
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
CATALOG = REPO / "data" / "catalog"
XMODAL = [sys.executable, "-c", "from xmodal import cli; cli.app()"]


def build(workdir: Path, model: str) -> Path:
    out = workdir / f"{model}.idx"
    args = ["--model", "offline"]
    if model == "ViT-B-32":
        checkpoint = workdir / "vit-b-32.safetensors"
        if not checkpoint.exists():
            write_random_checkpoint(checkpoint)
        args = ["--model", "ViT-B-32", "--pretrained", str(checkpoint)]
    subprocess.run(XMODAL + ["index", str(CATALOG / "images"), "--texts", str(CATALOG / "listings.csv"),
                             "--text-column", "description", "--out", str(out), *args],
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
    child = subprocess.Popen(XMODAL + ["search", str(index), "a red car", "-k", "5"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"xmodal search failed with exit code {child.returncode}")
    return seconds, usage.ru_maxrss / 1024


def import_breakdown(index: Path, top: int = 6) -> list[tuple[float, str]]:
    result = subprocess.run([sys.executable, "-X", "importtime", *XMODAL[1:], "search", str(index), "a red car"],
                            capture_output=True, text=True, cwd=REPO)
    found = []
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( ?)(\S+)$", line)
        if match:
            found.append((int(match.group(1)) / 1e6, match.group(3)))
    return sorted(found, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["offline", "ViT-B-32"])
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            index = build(Path(tmp), model)
            run_once(index)  # warm the page cache
            runs = [run_once(index) for _ in range(args.runs)]
            times = sorted(seconds for seconds, _ in runs)
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            print(f"{model:<9} xmodal search: p50 {statistics.median(times):.2f} s, p95 {p95:.2f} s, "
                  f"peak RSS {max(rss for _, rss in runs):.0f} MB ({args.runs} runs)")
            print("          imports: " + ", ".join(f"{name} {t:.2f} s" for t, name in import_breakdown(index)))


if __name__ == "__main__":
    main()
