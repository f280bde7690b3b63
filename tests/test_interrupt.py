"""Ctrl-C in a terminal: SIGINT to the whole process group of a real `xmodal`, at several moments.

A terminal sends Ctrl-C to every process of the command: decoding workers, a local Ray and its workers.
Each time the command must end within 10 s (a hang shows as that deadline), with exactly one `error:` line
and no traceback on stderr, exit 130 (`serve`: 0 and "stopped", a service's normal end), no process of
its session still running, and the next run must resume and build what a clean build builds.

The moments are read from the run itself (its worker processes, torch's library mapped into it, its
progress file, its journal), not guessed with sleeps; /proc makes these tests Linux-only, as CI is.
The decoding stream is also tested alone: a worker that dies, or that cannot be stopped politely, must
neither hang it nor its closing.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import threading
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.build.decode import DecodedStream
from xmodal.indexer.errors import DecodeWorkerError
import runs
from server import free_port

PHOTOS = 160
SLOW = "python:fakes:make_slow_encoder"  # FAKE_BATCH_SECONDS a batch; each batch noted in FAKE_PROGRESS_FILE
SLOW_ON_RAY = "python:fakes:make_slow_everywhere_encoder"  # the same, in Ray's actors too
INTERRUPTED = ("error: interrupted; the last committed index is unchanged, and running the same command again "
               "resumes from the work already encoded")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return runs.write_photos(tmp_path_factory.mktemp("photos"), PHOTOS)


@pytest.fixture(scope="module")
def clean_items(photos, tmp_path_factory) -> set[tuple]:
    """What a clean, uninterrupted build holds."""
    return runs.clean_build(photos, tmp_path_factory.mktemp("clean") / "index")


def _ctrl_c(run: subprocess.Popen) -> tuple[str, str]:
    """SIGINT to the run's whole process group, as a terminal sends it; its stdout and stderr once it ended."""
    os.killpg(run.pid, signal.SIGINT)
    try:
        return run.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        left = runs.processes(lambda stat: stat["session"] == run.pid)
        runs.kill(run)
        pytest.fail(f"still running 10 s after Ctrl-C: {left}")


def _assert_interrupted(run: subprocess.Popen, out: str, err: str) -> None:
    assert run.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [INTERRUPTED], err
    assert not runs.processes(lambda stat: stat["session"] == run.pid)


def test_ctrl_c_while_the_model_loads_and_the_workers_decode(tmp_path, photos, clean_items, tiny_spec):
    """A new index with a local-dir: model: the decoding workers start before the model loads (warm start);
    Ctrl-C while torch is being imported (asked for: an exported way whose model a run before recorded loads
    no torch). Before, the workers died with 38 lines of tracebacks, and now and then one died holding the
    pool's queue lock and Pool.terminate() waited for it for good."""
    out = tmp_path / "index"
    run = runs.start("index", str(photos), "--out", str(out), "--model", tiny_spec, "--workers", "2",
                     "--runtime", "torch", "--precision", "fp32")
    runs.wait_for(lambda: len(runs.children(run.pid)) == 2 and runs.loads_torch(run.pid) and not (out / ".journal").exists(),
              run, "the model loading beside two decoding workers")
    _assert_interrupted(run, *_ctrl_c(run))
    assert not out.exists()  # nothing was encoded: no trace of the new index
    assert runs.resume("index", str(photos), "--out", str(out), "--model", tiny_spec)["encoded"] == PHOTOS
    assert runs.items(out) == clean_items


@pytest.mark.parametrize("batches", [1, 4], ids=["first-batch", "mid-run"])
def test_ctrl_c_while_encoding_keeps_what_was_encoded(tmp_path, photos, clean_items, batches):
    out, progress = tmp_path / "index", tmp_path / "progress"
    args = ["index", str(photos), "--out", str(out), "--model", SLOW, "--batch-size", "8", "--workers", "2"]
    run = runs.start(*args, env={"FAKE_PROGRESS_FILE": str(progress), "FAKE_BATCH_SECONDS": "0.5"})
    runs.wait_for(lambda: len(runs.progress(progress)) >= batches, run, f"{batches} batch(es) encoded")
    _assert_interrupted(run, *_ctrl_c(run))
    encoded = sum(runs.progress(progress))
    figures = runs.resume(*args, env={"FAKE_PROGRESS_FILE": str(tmp_path / "more"), "FAKE_BATCH_SECONDS": "0"})
    assert encoded - 8 <= figures["resumed"] <= encoded  # a batch encoded as the signal came may be redone
    assert figures["resumed"] + figures["encoded"] == PHOTOS
    assert runs.items(out) == clean_items


@pytest.fixture(scope="module")
def served_index(photos, tiny_spec, tmp_path_factory) -> Path:
    """An index of the tiny open_clip model run on torch: serving it imports torch, which takes seconds (an
    index of an exported way is served without torch)."""
    index = tmp_path_factory.mktemp("served") / "photos.idx"
    build_index(index, IndexConfig(images=[photos], workers=0, model=tiny_spec, runtime="torch", precision="fp32"))
    return index


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


@pytest.mark.parametrize("moment", ["loading", "serving"])
def test_ctrl_c_stops_serve_as_any_stop_does(served_index, moment):
    """A service stopped by its operator has ended normally: exit 0 and "stopped", whether it was serving
    or still loading. Before, a Ctrl-C while it loaded said the index run's "interrupted ... resumes" and
    exited 130, and could hang: a KeyboardInterrupt inside an import left a lock the text batcher waited on."""
    port = free_port()
    run = runs.start("serve", str(served_index), "--port", str(port))
    if moment == "loading":
        runs.wait_for(lambda: runs.loads_torch(run.pid), run, "the model loading")
        assert not _answers(port)
    else:
        runs.wait_for(lambda: _answers(port), run, "an answer on /health")
    out, err = _ctrl_c(run)
    assert (run.returncode, err) == (0, "")
    assert out.splitlines()[-1] == "stopped"
    assert not runs.processes(lambda stat: stat["session"] == run.pid)


def _ray_agents(run: subprocess.Popen) -> dict[int, str]:
    return runs.processes(lambda stat: stat["session"] == run.pid and stat["parent"] != run.pid)


@pytest.mark.parametrize("moment", ["starting", "mid-run"])
def test_ctrl_c_on_a_local_ray_ends_it_all_and_resumes(tmp_path, photos, clean_items, moment):
    """The local Ray xmodal starts (raylet, GCS, agents) is in the command's process group, its workers in its
    session. Ctrl-C as Ray starts: before, its dashboard and runtime-env agents (which keep SIGINT blocked)
    ran on for a minute or more, and the driver could crash on its way out (SIGSEGV). Mid-run: Ray Data's
    executor thread, left running while Ray stopped, could end the driver (exit 1) before its line."""
    out, progress = tmp_path / "index", tmp_path / "progress"
    args = ["index", str(photos), "--out", str(out), "--model", SLOW_ON_RAY, "--batch-size", "8"]
    run = runs.start(*args, "--ray", "--ray-actors", "2",
                 env={"FAKE_PROGRESS_FILE": str(progress), "FAKE_BATCH_SECONDS": "0.5"})
    if moment == "starting":
        runs.wait_for(lambda: any("agent" in c.lower() for c in _ray_agents(run).values()), run, "Ray's agents starting")
    else:
        runs.wait_for(lambda: any((out / ".journal").glob("chunk-ray-*.parquet")), run, "a batch written by a worker")
    _assert_interrupted(run, *_ctrl_c(run))
    written = sum(pq.ParquetFile(chunk).metadata.num_rows for chunk in (out / ".journal").glob("chunk-ray-*.parquet")) \
        if out.exists() else 0
    assert written > 0 or moment == "starting"
    figures = runs.resume(*args, "--workers", "0", env={"FAKE_PROGRESS_FILE": str(progress), "FAKE_BATCH_SECONDS": "0"})
    assert (figures["resumed"], figures["encoded"]) == (written, PHOTOS - written)
    assert runs.items(out) == clean_items


def _within(seconds: float, action):
    """What `action` returns or raises, or a failure if it is still running after `seconds` (a hang)."""
    outcome = {}

    def run():
        try:
            outcome["value"] = action()
        except BaseException as exc:  # noqa: BLE001  (handed to the test)
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        pytest.fail(f"still waiting after {seconds} s")
    return outcome


def test_a_decoding_worker_that_dies_is_one_error_not_a_hang(photos):
    """A worker killed mid-run (out of memory, a decoder crash): before, the pool replaced it and waited for
    the lost task's answer for good."""
    paths = sorted(str(p) for p in photos.iterdir()) * 4  # tasks enough for both workers after the kill
    stream = DecodedStream(paths, FakeEncoder().preprocess_image, workers=2)
    items = iter(stream)
    next(items)
    os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)
    outcome = _within(30, lambda: sum(1 for _ in items))
    assert isinstance(outcome.get("error"), DecodeWorkerError), outcome
    assert "a decoding process ended (killed by SIGKILL) while decoding" in str(outcome["error"])
    assert not multiprocessing.active_children()


class _DeafToSigterm(FakeEncoder):
    """A preprocessing whose library handles SIGTERM its own way (here: ignores it)."""

    def preprocess_image(self, image):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return super().preprocess_image(image)


def test_closing_the_stream_is_bounded_whatever_its_workers_do(photos):
    """Workers that do not end when asked to are killed: before, Pool.terminate() joined them for good."""
    stream = DecodedStream(sorted(str(p) for p in photos.iterdir()), _DeafToSigterm().preprocess_image, workers=2)
    items = iter(stream)
    next(items)
    assert "error" not in _within(30, stream.close)
    assert not multiprocessing.active_children()
