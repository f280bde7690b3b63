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

Two or more checkouts side by side (`--side LABEL ROOT [FIELD=VALUE ...]`): each serves its own index of
data/catalog (built by its own code, with --model, default the tests' tiny CLIP), and their loads run in
turns, A B A B ..., for --rounds rounds, so whatever else the machine does falls on each alike. FIELD=VALUE
pairs are added to that side's request bodies (mode=vector asks for meaning alone on a commit that has
modes). Prints each run, then per side the median QPS over the rounds, p50/p95 over every request, and
the ratio to the first side:

    git worktree add /tmp/xmodal-old dc5ea05
    python bench/bench_serve.py --side old /tmp/xmodal-old --side main . --side main-vector . mode=vector \\
        --clients 8 --seconds 10 --rounds 5
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def write_tiny_clip(folder: Path) -> Path:
    """The tests' tiny open_clip (tests/conftest.py): real architecture, random weights, fast."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    if not (folder / "open_clip_model.safetensors").exists():
        folder.mkdir(parents=True, exist_ok=True)
        config = {"embed_dim": 32,
                  "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
                  "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
        (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": {}}))
        torch.manual_seed(0)
        save_file(open_clip.CLIP(**config).state_dict(), str(folder / "open_clip_model.safetensors"))
    return folder


@dataclass
class Side:
    """One checkout to serve: its code (ROOT, a commit with or without the package layout) and extra fields."""

    label: str
    root: Path
    fields: dict[str, Any]
    out: Path

    def command(self, *args: str) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        if (self.root / "__init__.py").exists():  # the package layout: the root is `xmodal`
            link = self.out / "pythonpath" / "xmodal"
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink() or link.resolve() != self.root.resolve():
                link.unlink(missing_ok=True)
                link.symlink_to(self.root.resolve())
            env["PYTHONPATH"] = str(link.parent)
            return [sys.executable, "-c", "from xmodal import cli; cli.app()", *args], env
        env.pop("PYTHONPATH", None)  # before it: bare packages, found beside cli.py, run as a script
        return [sys.executable, str(self.root / "cli.py"), *args], env

    def index(self, model: str) -> Path:
        folder = self.out / "catalog.idx"
        if not (folder / "manifest.json").exists():
            command, env = self.command("index", "--texts", str(REPO / "data/catalog/listings.csv"), "--text-column",
                                        "description", "--image-column", "image", "--model", model, "--out",
                                        str(folder))
            subprocess.run(command, check=True, cwd=self.root, env=env, stdout=subprocess.DEVNULL)
        return folder


def parse_sides(given: list[list[str]], out: Path) -> list[Side]:
    sides, folders = [], {}
    for label, root, *pairs in given:
        fields = {}
        for pair in pairs:
            name, _, value = pair.partition("=")
            fields[name] = json.loads(value) if value[:1] in "0123456789[{-" or value in ("true", "false") else value
        root = Path(root).resolve()
        # one index per checkout: sides of the same code share it
        folder = folders.setdefault(root, out / "sides" / label)
        sides.append(Side(label, root, fields, folder))
    return sides


def compare(args) -> None:
    model = args.model or f"local-dir:{write_tiny_clip(args.out / 'tiny_clip')}"
    sides = parse_sides(args.side, args.out)
    served = {}
    try:
        for side in sides:
            index = side.index(model)
            if side.root not in served:
                command, env = side.command("serve", str(index), "--port", "{port}", "--batching")
                served[side.root] = Served(index, True, command, env, side.root)
        clients = max(args.clients)
        print(f"{args.seconds:.0f} s per run, {args.rounds} rounds, {clients} clients, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f}, model {model.split('/')[-1]}", flush=True)
        runs: dict[str, list] = {side.label: [] for side in sides}
        cpu = {side.label: 0.0 for side in sides}
        for side in sides:  # warm each: first requests pay one-time costs
            load(served[side.root].port, "product", 2, 3, side.fields)
        for round_ in range(args.rounds):
            order = sides if round_ % 2 == 0 else sides[::-1]  # A B, B A: a drift in load falls on both
            for side in order:
                pid = served[side.root].process.pid
                before = cpu_seconds(pid)
                results = load(served[side.root].port, "product", clients, args.seconds, side.fields)
                cpu[side.label] += cpu_seconds(pid) - before
                runs[side.label].append(results)
                print(f"  round {round_ + 1} {side.label:<14} {len(results) / args.seconds:7.1f} req/s "
                      f"p50 {np.percentile([r[0] for r in results], 50) * 1000:5.1f} ms "
                      f"server CPU {(cpu_seconds(pid) - before) * 1000 / max(len(results), 1):5.2f} ms/request "
                      f"errors {sum(1 for r in results if r[1] != 200)}", flush=True)
        summarise(sides, runs, cpu, args.seconds)
    finally:
        for server in served.values():
            server.stop()


def summarise(sides: list[Side], runs: dict[str, list], cpu: dict[str, float], seconds: float) -> None:
    """Per side: the median rate of its runs, latencies over all its requests, the server's own time
    (took_ms) and CPU per request, and its rate over the first side's."""
    print(f"{'side':<14} {'req/s':>7} {'p50 ms':>7} {'p95 ms':>7} {'server ms':>9} {'CPU ms/req':>10} {'errors':>6} "
          f"{'ratio':>6}")
    first = None
    for side in sides:
        rates = [len(results) / seconds for results in runs[side.label]]
        every = [r for results in runs[side.label] for r in results]
        latencies = np.array([r[0] for r in every]) * 1000
        took = [r[2] for r in every if r[2] is not None]
        rate = float(np.median(rates))
        first = first or rate
        print(f"{side.label:<14} {rate:7.1f} {np.percentile(latencies, 50):7.1f} {np.percentile(latencies, 95):7.1f} "
              f"{np.median(took) if took else float('nan'):9.2f} {cpu[side.label] * 1000 / max(len(every), 1):10.2f} "
              f"{sum(1 for r in every if r[1] != 200):6} "
              f"{rate / first:6.3f}")


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


def cpu_seconds(pid: int) -> float:
    """The CPU time a process has used, every thread (user + system): a cost per request that other work
    on the machine slows less than it slows requests per second."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Served:
    def __init__(self, index: Path, batching: bool, command: list[str] | None = None, env: dict | None = None,
                 cwd: Path = REPO):
        self.port = free_port()
        flag = "--batching" if batching else "--no-batching"
        command = [a.replace("{port}", str(self.port)) for a in command] if command else \
            [sys.executable, "-c", "from xmodal import cli; cli.app()", "serve", str(index), "--port", str(self.port), flag]
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
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


def body_for(target: str, rng: random.Random, fields: dict | None = None) -> bytes:
    # Every text is new (the service remembers recent ones): each request pays for its encoding.
    request = {"text": f"{rng.choice(QUERIES)}, budget {rng.randrange(10**6)}", "k": 10, "target": target}
    if rng.random() < 0.25:
        request["where"] = f"price < {rng.choice([1000, 5000, 20000])}"
    return json.dumps({**request, **(fields or {})}).encode()


def client(port: int, target: str, until: float, seed: int, results: list, fields: dict | None = None) -> None:
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.monotonic() < until:
        body = body_for(target, rng, fields)
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


def load(port: int, target: str, clients: int, seconds: float, fields: dict | None = None) -> list:
    until = time.monotonic() + seconds
    results: list = []
    threads = [threading.Thread(target=client, args=(port, target, until, i, results, fields)) for i in range(clients)]
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
    parser.add_argument("--side", nargs="+", action="append", metavar="LABEL ROOT [FIELD=VALUE]",
                        help="compare checkouts: a label, the checkout's folder, fields added to its requests")
    parser.add_argument("--rounds", type=int, default=5, help="with --side: runs of each side, taken in turns")
    parser.add_argument("--model", help="with --side: the model to index data/catalog with (default: tiny CLIP)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.side:
        return compare(args)
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
