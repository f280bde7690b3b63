"""How long the processes of a kill -9'd `xmodal index` outlive it, and how soon the next run starts.

    python bench/bench_kill.py [--runs 5] [--photos 400] [--ray]

Each run: `xmodal index PHOTOS` with two decoding workers (or on a local Ray with --ray) and a slow fake
encoder, SIGKILLed to its main process once two batches are encoded; then the seconds until no process of its
session (nor its reaper) is left, and the seconds the same command takes to be let in by the lock (until its
first encoded batch). Prints p50 / p95 of each. Uses the tests' fake encoder (tests/fakes.py).
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


def _processes(pick) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/stat").read_text()
                command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2:].split()
            if fields[0] != "Z" and pick(int(fields[3]), command):
                found.append(int(entry))
    return found


def _left(pid: int) -> list[int]:
    return _processes(lambda session, command: session == pid or ("reap()" in command and command.split()[-1] == str(pid)))


def _batches(progress: Path) -> int:
    return len(progress.read_text().split()) if progress.exists() else 0


def _start(args: list[str], env: dict, progress: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from xmodal import cli; cli.run()", *args],
                            env={**env, "FAKE_PROGRESS_FILE": str(progress)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def one_run(photos: Path, work: Path, ray: bool) -> tuple[float, float]:
    out = work / "index"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "FAKE_BATCH_SECONDS": "0.3"}
    model = "python:fakes:make_slow_everywhere_encoder" if ray else "python:fakes:make_slow_encoder"
    args = ["index", str(photos), "--out", str(out), "--model", model, "--batch-size", "8"]
    args += ["--ray", "--ray-actors", "2"] if ray else ["--workers", "2"]
    first = _start(args, env, work / "progress")
    while _batches(work / "progress") < 2:
        time.sleep(0.02)
    os.kill(first.pid, signal.SIGKILL)
    killed = time.monotonic()
    first.wait()
    again = _start(args[:-3] + ["--workers", "0"] if ray else args, env, work / "again")
    while _left(first.pid) and time.monotonic() - killed < 60:
        time.sleep(0.02)
    gone = time.monotonic() - killed
    while _batches(work / "again") < 1 and again.poll() is None:
        time.sleep(0.02)
    let_in = time.monotonic() - killed
    again.kill()
    again.wait()
    return gone, let_in


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--ray", action="store_true")
    options = parser.parse_args()
    sys.path.insert(0, str(TESTS))
    from conftest import noise_image

    with tempfile.TemporaryDirectory() as folder:
        photos = Path(folder, "photos")
        photos.mkdir()
        for i in range(options.photos):
            noise_image(i, size=(96, 72)).save(photos / f"p{i:04d}.jpg", quality=90)
        gone, let_in = [], []
        for number in range(options.runs):
            work = Path(folder, f"run{number}")
            work.mkdir()
            seconds = one_run(photos, work, options.ray)
            gone.append(seconds[0])
            let_in.append(seconds[1])
    where = "on a local Ray" if options.ray else "with 2 decoding workers"
    print(f"kill -9 of xmodal index {where}, {options.runs} runs, {os.cpu_count()} cores")
    for name, values in (("processes left for", gone), ("next run's first batch after", let_in)):
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        print(f"  {name}: p50 {statistics.median(values):.2f} s, p95 {p95:.2f} s, max {max(values):.2f} s")


if __name__ == "__main__":
    main()
