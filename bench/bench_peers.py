"""xmodal beside rclip and clip-retrieval: the same photos and the same weights, whole processes, one run.

    python bench/bench_peers.py --rclip-python /work/peers/rclip-venv/bin/python \\
        --clip-retrieval-python /work/peers/cr-venv/bin/python --images 300 --repeats 3 \\
        --out bench/results/peers_cpu.txt

Each tool indexes the same seeded photo-sized JPEGs (640x480) into a fresh index, in fresh processes,
interleaved (each repeat runs every tool in turn), best of --repeats: images/s of the whole process (start-up,
model load, decoding, encoding, writing), start-up (the wall time of a 1-image run) and peak RSS
(os.wait4's ru_maxrss of the launched process: the largest one process of its tree, children included).

The weights: a seeded random-weight open_clip checkpoint, the same file for all three. rclip 4.0.8 runs one
model, ViT-B-32-256 (open_clip's ViT-B-32 at 256 px; its preprocessing is fixed at 256 px), exported to ONNX;
so --model defaults to ViT-B-32-256 and rclip runs only with it. Its RCLIP_DATADIR is filled with the files its
download check looks for (names read from the installed rclip), exported from the checkpoint the way its
scripts/convert_model.py does (opset 18, TorchScript exporter, input "input", output "output", batch
dynamic, visual and textual towers apart, open_clip's BPE vocabulary), so it never downloads (and
HF_HUB_OFFLINE=1 makes sure). Its CLI has no index-only command: `rclip -f QUERY` in the folder indexes it,
then answers one text query (the text tower's load is in its time).

The peers live in their own virtual environments, outside the repository:

    ~/.pyenv/versions/3.12.1/bin/python -m venv /work/peers/rclip-venv      # rclip needs Python >= 3.12
    /work/peers/rclip-venv/bin/pip install rclip==4.0.8
    ~/.pyenv/versions/3.11.7/bin/python -m venv /work/peers/cr-venv
    /work/peers/cr-venv/bin/pip install clip-retrieval==2.45.0 'setuptools<81'   # it imports pkg_resources

A peer whose Python is not given is skipped, with a line saying so. xmodal runs its default way (auto) and
`--runtime torch --precision fp32`; each way's export cache is warmed first (an export is a one-time cost
per model and machine, not counted). At the end, each tool's stored vectors are compared with xmodal torch
fp32's (cosine per photo): the check that all three ran the same weights.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench import as_cpu  # noqa: E402  (the repository's folder is on the path from here)
XMODAL = [sys.executable, "-c", "from xmodal import cli; cli.run()"]
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}
RCLIP_QUERY = "a photo"
WAYS = {"auto": [], "torch-fp32": ["--runtime", "torch", "--precision", "fp32"],
        # what auto falls to where int8 breaks parity on real weights and the CPU has bf16 (--ways to add it)
        "openvino-bf16": ["--runtime", "openvino", "--precision", "bf16"]}
FLAGS = {"avx2": ("avx2",), "avx512": ("avx512f",), "avx512_bf16": ("avx512_bf16",),
         "vnni": ("avx512_vnni", "avx_vnni"), "amx": ("amx_bf16", "amx_int8", "amx_tile")}


@dataclass
class Run:
    seconds: float
    rss_mb: float


@dataclass
class Tool:
    """One way of indexing a folder: how to start it on a folder, and how many images its index then holds."""
    name: str
    kind: str  # "xmodal", "rclip" or "clip-retrieval"
    args: list[str] = field(default_factory=list)
    full: list[Run] = field(default_factory=list)
    one: list[Run] = field(default_factory=list)
    last_out: Path | None = None


# ---- the weights, and rclip's data folder --------------------------------------------------------------------

def write_checkpoint(model: str, path: Path) -> None:
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in open_clip.create_model(model).state_dict().items()}, str(path))


def export_rclip(model: str, checkpoint: Path, folder: Path, names: dict) -> None:
    """rclip's model files from the checkpoint, as its scripts/convert_model.py writes them."""
    import open_clip
    import torch

    clip = open_clip.create_model(model, pretrained=str(checkpoint)).eval()
    subdir = folder / names["subdir"]
    subdir.mkdir(parents=True, exist_ok=True)

    class Visual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = clip.visual

        def forward(self, inputs):
            return self.visual(inputs)

    class Textual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.clip_model = clip

        def forward(self, inputs):
            return self.clip_model.encode_text(inputs)

    size = names["image_size"]
    torch.backends.mha.set_fastpath_enabled(False)  # as convert_model.py: the fast path does not export
    for wrapper, dummy, name in ((Visual(), torch.randn(1, 3, size, size), names["visual"]),
                                 (Textual(), torch.zeros(1, 77, dtype=torch.long), names["textual"])):
        torch.onnx.export(wrapper.eval(), (dummy,), str(subdir / name), input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                          opset_version=18, dynamo=False)
    vocab = folder / names["vocab"]
    vocab.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz", vocab)
    for legal in names["legal"]:  # its download check wants the model repository's notices beside the model
        (folder / legal).write_text(f"Random weights ({model}, seed 0) exported by xmodal's bench/bench_peers.py; "
                                    "not rclip's model.\n")


def rclip_names(python: str) -> dict:
    """The files rclip's download check looks for, and its image size, from the installed rclip itself."""
    code = ("import json; from rclip import model_download as m; from rclip.utils.preprocess import IMAGE_SIZE; "
            "print(json.dumps(dict(subdir=m.MODEL_SUBDIR, visual=m.VISUAL_ONNX, textual=m.TEXTUAL_ONNX, "
            "vocab=m.TOKENIZER_VOCAB, legal=list(m.MODEL_LEGAL_FILES), image_size=IMAGE_SIZE)))")
    return json.loads(subprocess.run([python, "-c", code], check=True, capture_output=True, text=True).stdout)


def image_size(model: str) -> int:
    code = f"import open_clip; print(open_clip.get_model_config({model!r})['vision_cfg']['image_size'])"
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)


def fresh_rclip_datadir(model_dir: Path, where: Path) -> Path:
    """A new RCLIP_DATADIR (rclip keeps its index there, db.sqlite3) that links to the exported model files."""
    where.mkdir(parents=True)
    for entry in model_dir.iterdir():
        (where / entry.name).symlink_to(entry)
    return where


# ---- running one tool once ------------------------------------------------------------------------------------

def command(tool: Tool, photos: Path, out: Path, env: dict) -> tuple[list[str], Path]:
    """(argv, cwd) of one run of `tool` over `photos`, writing a fresh index at `out`."""
    if tool.kind == "xmodal":
        return XMODAL + ["index", str(photos), "--out", str(out), *tool.args], REPO
    if tool.kind == "rclip":
        env["RCLIP_DATADIR"] = str(fresh_rclip_datadir(Path(tool.args[1]), out))
        return [tool.args[0], "-m", "rclip", "-f", RCLIP_QUERY], photos
    return [tool.args[0], "-c", "from clip_retrieval.cli import main; main()", "inference", "--input_dataset",
            str(photos), "--output_folder", str(out), *tool.args[1:]], REPO


def run_once(tool: Tool, photos: Path, out: Path) -> Run:
    env = dict(os.environ, **OFFLINE)
    argv, cwd = command(tool, photos, out, env)
    log = out.parent / f"{out.name}.log"
    with open(log, "w") as sink:
        started = time.perf_counter()
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{tool.name} failed (exit {os.waitstatus_to_exitcode(status)}); its output: {log}\n"
                         + "".join(log.read_text(errors="replace").splitlines(True)[-15:]))
    return Run(seconds, usage.ru_maxrss / 1024)


def warm_up(tool: Tool, photos: Path, out: Path, most: int = 6) -> Path:
    """Run `tool` once; xmodal again while a run still measures (a new index measures the ways an earlier
    run's budget left), so that no timed run pays for measuring. The last run's index."""
    for attempt in range(most):
        last = out.with_name(f"{out.name}-{attempt}")
        run_once(tool, photos, last)
        if tool.kind != "xmodal" or "note: measured " not in last.with_name(f"{last.name}.log").read_text():
            break
    return last


def vectors(tool: Tool) -> dict[str, np.ndarray]:
    """The image vectors `tool`'s last full run stored, by photo file name (unit length)."""
    out = tool.last_out
    if tool.kind == "xmodal":
        from xmodal.search import open_index

        opened = open_index(out)
        rows, found = opened.embeddings("image")
        named = {Path(opened.item(int(r))["path"]).name: v for r, v in zip(rows, found)}
    elif tool.kind == "rclip":
        with sqlite3.connect(out / "db.sqlite3") as db:
            named = {Path(p).name: np.frombuffer(v, np.float32)
                     for p, v in db.execute("SELECT filepath, vector FROM images WHERE deleted IS NULL")}
    else:
        import pyarrow.parquet as pq

        paths = pq.read_table(out / "metadata" / "metadata_0.parquet").column("image_path").to_pylist()
        named = dict(zip((Path(p).name for p in paths), np.load(out / "img_emb" / "img_emb_0.npy")))
    return {k: np.asarray(v, np.float32) / np.linalg.norm(v) for k, v in named.items()}


# ---- the report -----------------------------------------------------------------------------------------------

def cpu_line() -> str:
    name, flags, generation = platform.processor() or platform.machine(), set(), {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name in ("", platform.processor() or platform.machine()):
                name = value.strip()
            elif key.strip() in ("cpu family", "model") and key.strip() not in generation:
                generation[key.strip()] = value.strip()  # "AMD EPYC" names Zen 4 (family 25) and Zen 5 (26) alike
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    kind = as_cpu.masked()
    if kind:
        flags = {flag for flag in flags if not flag.startswith(kind.cleared)}
    shown = ", ".join(f"{label} {'yes' if any(f in flags for f in wanted) else 'no'}"
                      for label, wanted in FLAGS.items())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    family = f", family {generation['cpu family']} model {generation.get('model', '?')}" if generation else ""
    line = f"CPU: {name} ({platform.machine()}{family}), {cores} cores; {shown}"
    return f"{line}; run {as_cpu.describe(kind)}" if kind else line


def table(tools: list[Tool], count: int) -> list[str]:
    lines = ["| tool | images/s | start-up (1 image) | peak RSS |", "| --- | --- | --- | --- |"]
    for tool in tools:
        best = min(r.seconds for r in tool.full)
        lines.append(f"| {tool.name} | {count / best:.1f} | {min(r.seconds for r in tool.one):.1f} s | "
                     f"{max(r.rss_mb for r in tool.full):,.0f} MB |")
    return lines


def ratios(tools: list[Tool], count: int) -> list[str]:
    def rate(t: Tool) -> float:
        return count / min(r.seconds for r in t.full)

    lines = []
    for ours in (t for t in tools if t.kind == "xmodal"):
        for peer in (t for t in tools if t.kind != "xmodal"):
            lines.append(f"{ours.name} / {peer.name}: images/s x{rate(ours) / rate(peer):.2f}, start-up "
                         f"x{min(r.seconds for r in ours.one) / min(r.seconds for r in peer.one):.2f}, peak RSS "
                         f"x{max(r.rss_mb for r in ours.full) / max(r.rss_mb for r in peer.full):.2f}")
    return lines


def agreement(tools: list[Tool], reference: Tool, count: int) -> list[str]:
    """Each tool's stored vectors against the reference's, photo by photo. Random weights map every photo
    near one direction, so the cosines are also shown with the reference's mean vector taken out of both
    (the part that tells photos apart), beside that of different photos, for scale."""
    ref = vectors(reference)
    names = sorted(ref)
    ref_matrix = np.stack([ref[n] for n in names])
    mean = ref_matrix.mean(axis=0)

    def centred(matrix: np.ndarray) -> np.ndarray:
        matrix = matrix - mean
        return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)

    apart = centred(ref_matrix) @ centred(ref_matrix).T
    lines = [f"vectors against {reference.name}'s, per photo: cosine; with the photos' mean vector taken out "
             f"(different photos: mean {apart[~np.eye(len(names), dtype=bool)].mean():.3f})"]
    for tool in tools:
        stored = vectors(tool)
        if sorted(stored) != names or len(names) != count:
            raise SystemExit(f"{tool.name} stored {len(stored)} image vectors, not the {count} photos")
        matrix = np.stack([stored[n] for n in names])
        plain, taken = (ref_matrix * matrix).sum(1), (centred(ref_matrix) * centred(matrix)).sum(1)
        lines.append(f"  {tool.name}: min {plain.min():.4f} mean {plain.mean():.4f}; mean taken out: min "
                     f"{taken.min():.4f} mean {taken.mean():.4f}")
    return lines


# ---- the run --------------------------------------------------------------------------------------------------

def model_args(spec: str, work: Path) -> tuple[str, Path | None, list[str]]:
    """(open_clip model name, its checkpoint (None for a local-dir: model), xmodal's model options)."""
    if spec.startswith("local-dir:"):  # e.g. the test suite's tiny model: the smoke test's quick model
        return "", None, ["--model", spec]
    checkpoint = work / f"{spec}.safetensors"
    # in a process of its own: a run forked from this one after torch was imported here would report this
    # process's memory as its own peak RSS (ru_maxrss survives exec)
    subprocess.run([sys.executable, __file__, "--write-checkpoint", spec, str(checkpoint)], check=True,
                   capture_output=True)
    return spec, checkpoint, ["--model", spec, "--pretrained", str(checkpoint)]


def peers(args, spec: str, checkpoint: Path | None, work: Path) -> list[Tool]:
    found = []
    if not args.rclip_python:
        print("rclip: skipped (no --rclip-python)")
    elif checkpoint is None:
        print("rclip: skipped (it runs open_clip models only, not a local-dir model)")
    else:
        names = rclip_names(args.rclip_python)
        if image_size(spec) != names["image_size"]:
            print(f"rclip: skipped (its preprocessing is fixed at {names['image_size']} px; {spec} takes "
                  f"{image_size(spec)} px: use --model ViT-B-32-256)")
        else:
            model_dir = work / "rclip-model"
            subprocess.run([sys.executable, __file__, "--export-rclip", spec, str(checkpoint), str(model_dir),
                            json.dumps(names)], check=True, capture_output=True)
            found.append(Tool("rclip 4.0.8 (ONNX Runtime fp32, batch 8)", "rclip", [args.rclip_python,
                                                                                    str(model_dir)]))
    if not args.clip_retrieval_python:
        print("clip-retrieval: skipped (no --clip-retrieval-python)")
    elif checkpoint is None:
        print("clip-retrieval: skipped (it runs open_clip models only, not a local-dir model)")
    else:
        workers = str(os.cpu_count())  # its DataLoader warns when given more workers than cores
        found.append(Tool("clip-retrieval 2.45 (torch fp32, --batch_size 32)", "clip-retrieval", [
            args.clip_retrieval_python, "--clip_model", f"open_clip:{spec}/{checkpoint}", "--batch_size", "32",
            "--num_prepro_workers", workers, "--enable_text", "False", "--enable_metadata", "False"]))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="ViT-B-32-256",
                        help="an open_clip model name (random weights, seed 0), or local-dir:DIR (xmodal only)")
    parser.add_argument("--ways", nargs="+", choices=list(WAYS), default=["auto", "torch-fp32"],
                        help="xmodal's ways to run (the last is the one the others' vectors are compared with)")
    parser.add_argument("--rclip-python", metavar="PYTHON", help="a Python whose environment has rclip 4.0.8")
    parser.add_argument("--clip-retrieval-python", metavar="PYTHON",
                        help="a Python whose environment has clip-retrieval 2.45")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    parser.add_argument("--as-cpu", choices=as_cpu.CHOICES,
                        help="every process as on an older CPU: its ways and its kernels (bench/as_cpu.py)")
    parser.add_argument("--write-checkpoint", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--export-rclip", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_checkpoint:
        return write_checkpoint(args.write_checkpoint[0], Path(args.write_checkpoint[1]))
    if args.export_rclip:
        spec, checkpoint, folder, names = args.export_rclip
        return export_rclip(spec, Path(checkpoint), Path(folder), json.loads(names))
    if args.as_cpu:
        as_cpu.restart_as(args.as_cpu)

    report = [f"python bench/bench_peers.py {' '.join(sys.argv[1:])}",
              cpu_line(), f"python {platform.python_version()} (xmodal)"]
    print("\n".join(report), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        work = Path(tmp)
        # xmodal's exports and measurements go with the run: the checkpoint's path is new each time, so they
        # would pile up in the user's cache (gigabytes a run)
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")
        from bench.bench_index import make_photos

        photos, one = work / "photos", work / "one"
        photos.mkdir()
        one.mkdir()
        make_photos(photos, args.images)
        shutil.copy(next(photos.iterdir()), one)
        spec, checkpoint, model = model_args(args.model, work)
        tools = [Tool("xmodal default (auto)" if way == "auto" else f"xmodal {' '.join(WAYS[way])}",
                      "xmodal", model + WAYS[way]) for way in args.ways]
        tools += peers(args, spec, checkpoint, work)
        # warm: xmodal's export cache and its measuring, every tool's files in the page cache
        warmed = [warm_up(tool, one, work / f"warm-{number}") for number, tool in enumerate(tools)]
        if "auto" in args.ways:
            chosen = json.loads(subprocess.run(XMODAL + ["info", str(warmed[0]), "--json"], check=True,
                                               capture_output=True, text=True).stdout)["model"]
            tools[0].name = f"xmodal default (auto: {chosen['precision']} on {chosen['runtime']})"
        for repeat in range(args.repeats):
            for number, tool in enumerate(tools):
                tool.last_out = work / f"full-{number}-{repeat}"
                tool.full.append(run_once(tool, photos, tool.last_out))
                tool.one.append(run_once(tool, one, work / f"one-{number}-{repeat}"))
                print(f"  repeat {repeat + 1}: {tool.name}: {args.images / tool.full[-1].seconds:.1f} images/s, "
                      f"1 image {tool.one[-1].seconds:.1f} s, {tool.full[-1].rss_mb:,.0f} MB", flush=True)
        weights = " (random weights, seed 0, one checkpoint for all)" if checkpoint else ""
        report += [f"{args.images} photos 640x480, model {args.model}{weights}, best of {args.repeats} interleaved runs, whole processes; the export to ONNX is cached "
                   "before timing (a one-time cost)", ""]
        report += table(tools, args.images) + [""] + ratios(tools, args.images)
        report += agreement(tools, tools[len(args.ways) - 1], args.images)  # torch fp32's where it ran
    report.append("peak RSS: the largest one process of each run's tree (os.wait4 ru_maxrss); start-up: the "
                  "wall time of a 1-image run")
    if any(tool.kind == "rclip" for tool in tools):
        report.append(f"rclip runs as `rclip -f {RCLIP_QUERY!r}` in the folder: its CLI has no index-only command, "
                      "so its runs also load the text tower and answer one query")
    print("\n".join(report[3:]))
    if args.out:
        args.out.write_text("\n".join(report) + "\n")


if __name__ == "__main__":
    main()
