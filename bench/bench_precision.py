"""Encoder towers at lower precision on the CPU: rate and parity against fp32 (issue 23, first step).

    python bench/bench_precision.py [--images 64] [--texts 256] [--repeats 3]
    (ONNX rows: pip install onnx; OpenVINO rows: pip install openvino, which also needs the ONNX export)

For each tower (the offline model's EfficientNet-Lite0 image tower and MiniLM text tower: real weights;
open_clip ViT-B-32 with random weights: speed only) and each way of running it (torch fp32, torch bf16
autocast, torch int8 dynamic quantisation of the Linear layers, ONNX Runtime fp32 and int8 where the export
works here, OpenVINO fp32 and bf16 on the same ONNX file): items/s (median of --repeats, model only, batches
of 32, every runtime on 2 threads) and the cosine of each item's embedding to fp32's (min and mean). Parity is
measured on real photos (data/catalog, data/photos, scikit-image's samples) and the demo listings. No product
code changes here: the table decides what does.
"""
from __future__ import annotations

import argparse
import copy
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BATCH = 32


def cpu_flags() -> str:
    text = Path("/proc/cpuinfo").read_text()
    model = next((l.split(":", 1)[1].strip() for l in text.splitlines() if l.startswith("model name")), "?")
    flags = next((l.split(":", 1)[1].split() for l in text.splitlines() if l.startswith("flags")), [])
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
    return f"{model}; {', '.join(wanted)}"


def real_photos(limit: int):
    from PIL import Image

    paths = sorted((REPO / "data" / "catalog" / "images").glob("*.png")) + sorted((REPO / "data" / "photos").glob("*"))
    images = [Image.open(p).convert("RGB") for p in paths if p.suffix.lower() in (".png", ".jpg", ".jpeg")]
    try:
        from skimage import data as samples

        for name in ("astronaut", "chelsea", "coffee", "rocket", "cat", "hubble_deep_field", "immunohistochemistry"):
            images.append(Image.fromarray(getattr(samples, name)()).convert("RGB"))
    except ImportError:
        pass
    while len(images) < limit:  # flipped copies: more inputs, still real photos
        images += [im.transpose(Image.FLIP_LEFT_RIGHT) for im in images]
    return images[:limit]


def listing_texts(limit: int) -> list[str]:
    with open(REPO / "data" / "catalog" / "listings.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    base = [r["description"] for r in rows] + [f"a photo of a {r['title'].lower()}" for r in rows]
    texts = []
    while len(texts) < limit:
        texts += [f"{t} ({len(texts) + i})" for i, t in enumerate(base)]
    return texts[:limit]


def timed(run, batches, repeats: int) -> tuple[float, np.ndarray]:
    outputs = [run(b) for b in batches]  # warm-up, and the outputs compared
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        for batch in batches:
            run(batch)
        seconds.append(time.perf_counter() - started)
    count = sum(len(b) if not isinstance(b, dict) else len(next(iter(b.values()))) for b in batches)
    return count / statistics.median(seconds), np.concatenate(outputs)


def torch_variants(module, make_input):
    """(name, run) for each way of running a torch module on a batch."""
    import torch

    def plain(m):
        def run(batch):
            with torch.inference_mode():
                return m(*make_input(batch)).float().numpy()
        return run

    def bf16(m):
        def run(batch):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return m(*make_input(batch)).float().numpy()
        return run

    quantised = torch.ao.quantization.quantize_dynamic(copy.deepcopy(module), {torch.nn.Linear}, dtype=torch.qint8)
    return [("torch fp32", plain(module)), ("torch bf16 autocast", bf16(module)), ("torch int8 dynamic", plain(quantised))]


def onnx_variants(module, make_input, sample, folder: Path, names: list[str]):
    """ONNX Runtime fp32 and int8 (dynamic), where this machine can export and quantise; else why not.

    Also returns the exported ONNX file (None where the export failed), for openvino_variants."""
    import torch

    found, path = [], folder / f"{id(module)}.onnx"
    try:
        import onnxruntime as ort

        inputs = make_input(sample)
        torch.onnx.export(module, tuple(inputs), str(path), input_names=names, output_names=["out"],
                          dynamic_axes={n: {0: "batch"} for n in names + ["out"]}, opset_version=17, dynamo=False)
    except Exception as exc:  # an exporter or runtime that is missing or fails: reported, not hidden
        return [], f"onnx export: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}", None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2

    def session_run(model_path):
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])

        def run(batch):
            feeds = {n: t.numpy() for n, t in zip(names, make_input(batch))}
            return session.run(None, feeds)[0].astype(np.float32)
        return run

    found.append(("onnxruntime fp32", session_run(path)))
    why = None
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantised = folder / f"{id(module)}-int8.onnx"
        quantize_dynamic(str(path), str(quantised), weight_type=QuantType.QInt8)
        found.append(("onnxruntime int8 dynamic", session_run(quantised)))
    except Exception as exc:
        why = f"onnx int8: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
    return found, why, path


def openvino_variants(onnx_path, names: list[str], make_input):
    """OpenVINO fp32 and bf16 on the CPU, from the ONNX file onnx_variants exported; and why there is no int8 row."""
    no_int8 = "openvino int8: OpenVINO alone has no quantiser; needs nncf (weight compression / PTQ), not used here"
    if onnx_path is None:
        return [], "openvino: skipped, no ONNX export to read"
    try:
        import openvino as ov
    except ImportError:
        return [], "openvino: not installed (pip install openvino)"
    core = ov.Core()
    try:
        model = core.read_model(str(onnx_path))
    except Exception as exc:
        return [], f"openvino read: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}"

    def compiled_run(hint):
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": 2})
        request = compiled.create_infer_request()

        def run(batch):
            feeds = {n: t.numpy() for n, t in zip(names, make_input(batch))}
            return request.infer(feeds)[compiled.output(0)].astype(np.float32)
        return run

    found, whys = [], [no_int8]
    for name, hint in (("openvino fp32", "f32"), ("openvino bf16", "bf16")):
        try:
            found.append((name, compiled_run(hint)))
        except Exception as exc:
            whys.insert(0, f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
    return found, "; ".join(whys)


def report(tower: str, kind: str, variants, batches, repeats: int, finish=lambda x: x, notes=()):
    reference = None
    for name, run in variants:
        rate, out = timed(run, batches, repeats)
        vectors = finish(out)
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        if reference is None:
            reference, fp32_rate = vectors, rate
        cosines = (vectors * reference).sum(1)
        print(f"{tower:<26} {name:<26} {rate:>9.1f} {kind}/s  x{rate / fp32_rate:>4.2f}  "
              f"cosine to fp32 min {cosines.min():.4f} mean {cosines.mean():.4f}", flush=True)
    for note in notes:
        if note:
            print(f"{tower:<26} ({note})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(2)
    import xmodal
    from xmodal.indexer.models import load_encoder
    from xmodal.indexer.models.offline import conse_mix

    print(f"python bench/bench_precision.py --images {args.images} --texts {args.texts} --repeats {args.repeats}")
    print(f"machine: {cpu_flags()}; torch {torch.__version__} on {torch.get_num_threads()} threads; "
          f"xmodal {xmodal.__version__}")
    photos, texts = real_photos(args.images), listing_texts(args.texts)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        offline = load_encoder("offline", None, "cpu")
        pixels = np.stack([offline.preprocess_image(p) for p in photos])
        image_batches = [pixels[i:i + BATCH] for i in range(0, len(pixels), BATCH)]
        classifier = offline._load_classifier()

        def classify(batch):
            return (torch.from_numpy(np.ascontiguousarray(batch)),)

        def mixed(logits):  # the offline image embedding: ConSE over the class prompts, from the logits
            probabilities = torch.softmax(torch.from_numpy(logits), dim=-1).numpy()
            return conse_mix(probabilities, offline.class_embeddings, 20)

        found, why, onnx_path = onnx_variants(classifier, classify, image_batches[0], folder, ["pixels"])
        ov_found, ov_why = openvino_variants(onnx_path, ["pixels"], classify)
        report("offline image (EffNet-L0)", "images", torch_variants(classifier, classify) + found + ov_found,
               image_batches, args.repeats, mixed, [why, ov_why])

        text_model, tokenizer = offline.text.load_torch("cpu")
        tokenised = [tokenizer(texts[i:i + BATCH], padding="max_length", truncation=True, max_length=32,
                               return_tensors="pt") for i in range(0, len(texts), BATCH)]

        class MeanPooled(torch.nn.Module):
            def __init__(self, model):
                super().__init__()
                self.model = model

            def forward(self, ids, mask):
                hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
                weights = mask.unsqueeze(-1).to(hidden.dtype)
                return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

        pooled = MeanPooled(text_model).eval()

        def token_input(batch):
            return batch["input_ids"], batch["attention_mask"]

        found, why, onnx_path = onnx_variants(pooled, token_input, tokenised[0], folder, ["ids", "mask"])
        ov_found, ov_why = openvino_variants(onnx_path, ["ids", "mask"], token_input)
        report("offline text (MiniLM-L6)", "texts", torch_variants(pooled, token_input) + found + ov_found, tokenised,
               args.repeats, notes=[why, ov_why])

        import open_clip

        model = open_clip.create_model("ViT-B-32", pretrained=None).eval()  # random weights: speed only

        class ImageTower(torch.nn.Module):
            def __init__(self, clip):
                super().__init__()
                self.clip = clip

            def forward(self, pixels):
                return self.clip.encode_image(pixels)

        clip_pixels = torch.randn(args.images, 3, 224, 224, generator=torch.Generator().manual_seed(0)).numpy()
        clip_batches = [clip_pixels[i:i + BATCH] for i in range(0, len(clip_pixels), BATCH)]
        tower = ImageTower(model).eval()
        found, why, onnx_path = onnx_variants(tower, classify, clip_batches[0], folder, ["pixels"])
        ov_found, ov_why = openvino_variants(onnx_path, ["pixels"], classify)
        report("ViT-B-32 image (random)", "images", torch_variants(tower, classify) + found + ov_found, clip_batches,
               args.repeats, notes=[why, ov_why, "random weights: the cosines show numeric error only, not quality"])
    print("(model only: preprocessed inputs, no decoding; rates are medians of the repeats)")


if __name__ == "__main__":
    sys.exit(main())
