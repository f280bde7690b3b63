"""Load on `xmodal serve`: N concurrent clients for T seconds, on loopback, against real indexes.

    python bench/bench_serve.py [--clients 1 8] [--seconds 60] [--out bench/out/serve]

Builds (once, under --out) two indexes with the offline model (real MiniLM text encoder):
  catalog   data/catalog as 12 products (photo + description fused)
  texts100k 100,000 generated shop listings (text, colour, price), flat 384-d
then, for each index, starts a real server process, warms it, and runs each client count
with text encoding batched across requests, and the highest count once more without.
Each client is a thread with its own keep-alive connection posting text queries (a mix of
colours, objects and filters, each text new, so none comes from the service's cache of recent
texts) as fast as it is answered. Prints, per run: QPS, client-seen
latency p50/p95/p99, the server's own took_ms p50, errors, and the server's RSS at start
and end. The client runs on the same machine and takes some of its CPU.
"""
from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
COLOURS = ["red", "blue", "green", "black", "white", "yellow", "silver", "orange", "grey", "brown"]
THINGS = ["car", "bicycle", "sofa", "lamp", "jacket", "sneakers", "backpack", "guitar", "watch", "kettle",
          "desk", "camera", "scooter", "dress", "mug", "helmet", "tent", "chair", "phone case", "umbrella"]
WORDS = ["vintage", "brand new", "lightly used", "restored", "compact", "large", "handmade", "classic",
         "sporty", "waterproof", "leather", "wooden", "electric", "folding", "premium", "budget"]
QUERIES = [f"I want to buy a {c} {t}" for c in COLOURS[:6] for t in THINGS[:10]] + \
          [f"{w} {t} for a gift" for w in WORDS[:8] for t in THINGS[10:]]


def write_listings(path: Path, count: int) -> None:
    rng = random.Random(0)
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["text", "colour", "price"])
        for i in range(count):
            colour, thing = rng.choice(COLOURS), rng.choice(THINGS)
            out.writerow([f"{rng.choice(WORDS).capitalize()} {colour} {thing}, {rng.choice(WORDS)}, item {i}",
                          colour, rng.randrange(5, 30000)])


def xmodal(*args: str) -> None:
    subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.app()", *args], check=True, cwd=REPO)


def build_indexes(out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    catalog, texts = out / "catalog.idx", out / "texts100k.idx"
    if not (catalog / "manifest.json").exists():
        xmodal("index", "--texts", str(REPO / "data/catalog/listings.csv"), "--text-column", "description",
               "--image-column", "image", "--model", "offline", "--out", str(catalog))
    if not (texts / "manifest.json").exists():
        listings = out / "listings100k.csv"
        write_listings(listings, 100_000)
        started = time.perf_counter()
        xmodal("index", "--texts", str(listings), "--text-column", "text", "--model", "offline",
               "--index-type", "flat", "--out", str(texts))
        print(f"built texts100k in {time.perf_counter() - started:.0f} s", flush=True)
    return {"catalog": catalog, "texts100k": texts}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Served:
    def __init__(self, index: Path, batching: bool):
        self.port = free_port()
        flag = "--batching" if batching else "--no-batching"
        self.process = subprocess.Popen([sys.executable, "-c", "from xmodal import cli; cli.app()", "serve", str(index),
                                         "--port", str(self.port), flag], cwd=REPO,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(60)


def body_for(target: str, rng: random.Random) -> bytes:
    # Every text is new (the service remembers recent ones): each request pays for its encoding.
    request = {"text": f"{rng.choice(QUERIES)}, budget {rng.randrange(10**6)}", "k": 10, "target": target}
    if rng.random() < 0.25:
        request["where"] = f"price < {rng.choice([1000, 5000, 20000])}"
    return json.dumps(request).encode()


def client(port: int, target: str, until: float, seed: int, results: list) -> None:
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.monotonic() < until:
        body = body_for(target, rng)
        started = time.perf_counter()
        try:
            connection.request("POST", "/search", body, {"Content-Type": "application/json"})
            answer = connection.getresponse()
            data = answer.read()
            took = json.loads(data)["took_ms"] if answer.status == 200 else None
            results.append((time.perf_counter() - started, answer.status, took))
        except (OSError, http.client.HTTPException, ValueError):
            results.append((time.perf_counter() - started, 0, None))
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)


def load(port: int, target: str, clients: int, seconds: float) -> list:
    until = time.monotonic() + seconds
    results: list = []
    threads = [threading.Thread(target=client, args=(port, target, until, i, results)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def report(name: str, clients: int, batching: bool, seconds: float, results: list, rss: tuple) -> str:
    latencies = np.array([r[0] for r in results]) * 1000
    server = np.array([r[2] for r in results if r[2] is not None])
    errors = sum(1 for r in results if r[1] != 200)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return (f"{name:<10} {clients:>7} {'on' if batching else 'off':>8} {len(results) / seconds:>7.1f} "
            f"{p50:>7.1f} {p95:>7.1f} {p99:>7.1f} {np.median(server) if len(server) else float('nan'):>9.1f} "
            f"{errors:>6} {rss[0]:>9.0f} {rss[1]:>7.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--out", type=Path, default=REPO / "bench/out/serve")
    parser.add_argument("--only", choices=["catalog", "texts100k"], nargs="+")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    indexes = build_indexes(args.out)
    targets = {"catalog": "product", "texts100k": "text"}
    print(f"{args.seconds:.0f} s per run, {os.cpu_count()} CPUs, text queries, k=10, 25% with a price filter")
    print(f"{'index':<10} {'clients':>7} {'batching':>8} {'QPS':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
          f"{'server ms':>9} {'errors':>6} {'RSS0 MB':>9} {'RSS1 MB':>7}", flush=True)
    for name in args.only or list(indexes):
        runs = [(c, True) for c in args.clients] + [(max(args.clients), False)]
        for batching in (True, False):
            served = Served(indexes[name], batching)
            try:
                load(served.port, targets[name], 2, 3)  # warm: first requests pay one-time costs
                for clients, _ in [r for r in runs if r[1] == batching]:
                    start_rss = rss_mb(served.process.pid)
                    results = load(served.port, targets[name], clients, args.seconds)
                    print(report(name, clients, batching, args.seconds, results,
                                 (start_rss, rss_mb(served.process.pid))), flush=True)
            finally:
                served.stop()


if __name__ == "__main__":
    main()
