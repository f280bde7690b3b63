"""kill -9 of a real `xmodal index` (the OOM killer, a closed laptop lid, a container stop) at several moments.

Each time: the next run starts at once, is not refused by the lock, and builds what a clean build builds; and
within 5 s of the kill no process the run started is left (its decoding workers, a local Ray's processes,
the reaper that ends those). Before, the two decoding workers lived on for good holding the writer lock
they had inherited, and every later run said "another xmodal run (pid N) is writing" about a dead pid.
Also the lock on its own: held by a process that is not a writer of the index (a stray copy of the
writer's descriptor, a pid reused), it is taken over; held by a live writer, it is refused.
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import runs
from conftest import env_with_tests_path
from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.errors import IndexLockedError
from xmodal.indexer.store.lock import WriterLock, running_writer

PHOTOS = 160
SLOW = "python:fakes:make_slow_encoder"
SLOW_ON_RAY = "python:fakes:make_slow_everywhere_encoder"
DRIVER = str(Path(__file__).with_name("kill_driver.py"))
GONE_WITHIN = 5.0


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    return runs.write_photos(tmp_path_factory.mktemp("photos"), PHOTOS)


@pytest.fixture(scope="module")
def clean_items(photos, tmp_path_factory) -> set[tuple]:
    return runs.clean_build(photos, tmp_path_factory.mktemp("clean") / "index")


def _left_behind(pid: int) -> dict[int, str]:
    """Processes of the killed run's session, and its reaper (a session of its own, naming the run's pid)."""
    return runs.processes(lambda stat: stat["session"] == pid) | {
        other: command for other, command in runs.processes(lambda stat: True).items()
        if "reap()" in command and command.split()[-1] == str(pid)}


def _kill_9(run: subprocess.Popen) -> float:
    """SIGKILL to the run's main process alone, as the OOM killer sends it; when it was sent."""
    os.kill(run.pid, signal.SIGKILL)
    killed = time.monotonic()
    run.wait()
    run.stdout.close()  # not read to its end: a process left behind would hold it open for good
    run.stderr.close()
    return killed


def _assert_nothing_left(pid: int, killed: float) -> None:
    while _left_behind(pid) and time.monotonic() - killed < GONE_WITHIN:
        time.sleep(0.1)
    assert not _left_behind(pid), f"still running {GONE_WITHIN} s after kill -9 of {pid}: {_left_behind(pid)}"


@pytest.mark.parametrize("moment", ["decoding", "encoding"])
def test_kill_9_leaves_no_worker_and_no_lock(tmp_path, photos, clean_items, moment):
    out, progress = tmp_path / "index", tmp_path / "progress"
    args = ["index", str(photos), "--out", str(out), "--model", SLOW, "--batch-size", "8", "--workers", "2"]
    run = runs.start(*args, env={"FAKE_PROGRESS_FILE": str(progress), "FAKE_BATCH_SECONDS": "0.5"})
    if moment == "decoding":
        runs.wait_for(lambda: len(runs.children(run.pid)) == 2 and not runs.progress(progress), run,
                      "two decoding workers before the first batch")
    else:
        runs.wait_for(lambda: len(runs.progress(progress)) >= 2 and len(runs.children(run.pid)) == 2, run,
                      "two batches encoded beside two decoding workers")
    killed = _kill_9(run)
    figures = runs.resume(*args, env={"FAKE_PROGRESS_FILE": str(tmp_path / "more"), "FAKE_BATCH_SECONDS": "0"})
    assert figures["resumed"] + figures["encoded"] == PHOTOS
    assert runs.items(out) == clean_items
    _assert_nothing_left(run.pid, killed)


def test_kill_9_while_committing_a_segment_with_workers_decoding(tmp_path, photos, clean_items):
    """Killed as it writes its first segment's items, while its workers decode the photos after them."""
    out = tmp_path / "index"
    env = {**env_with_tests_path(), "XMODAL_TEST_WORKERS": "2", "XMODAL_TEST_SEGMENT_ROWS": "32",
           "XMODAL_TEST_MODEL": SLOW, "FAKE_BATCH_SECONDS": "0.05", "FAKE_PROGRESS_FILE": os.devnull}
    run = subprocess.Popen([sys.executable, DRIVER, str(out), str(photos), "-", "write_items", "1"],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    _, err = run.communicate(timeout=120)
    killed = time.monotonic()
    assert run.returncode == -signal.SIGKILL, err
    resumed = subprocess.run([sys.executable, DRIVER, str(out), str(photos), "-", "none", "0"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert runs.items(out) == clean_items
    _assert_nothing_left(run.pid, killed)


def test_kill_9_of_a_run_on_a_local_ray_ends_ray_too(tmp_path, photos, clean_items):
    """Killed while Ray's actors encode: the raylet and the GCS ended by themselves, but Ray's dashboard and
    runtime-env agents lived on for good (seen 40 s later, parent pid 1)."""
    out, progress = tmp_path / "index", tmp_path / "progress"
    args = ["index", str(photos), "--out", str(out), "--model", SLOW_ON_RAY, "--batch-size", "8"]
    run = runs.start(*args, "--ray", "--ray-actors", "2",
                     env={"FAKE_PROGRESS_FILE": str(progress), "FAKE_BATCH_SECONDS": "0.5"})
    runs.wait_for(lambda: any((out / ".journal").glob("chunk-ray-*.parquet")), run, "a batch written by a worker")
    assert any("agent" in command.lower() for command in runs.processes(
        lambda stat: stat["session"] == run.pid).values())
    killed = _kill_9(run)
    figures = runs.resume(*args, "--workers", "0", env={"FAKE_PROGRESS_FILE": str(progress), "FAKE_BATCH_SECONDS": "0"})
    assert figures["resumed"] > 0 and figures["resumed"] + figures["encoded"] == PHOTOS
    assert runs.items(out) == clean_items
    _assert_nothing_left(run.pid, killed)


# ---- the lock on its own ----------------------------------------------------------------------------

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.pwrite(fd, sys.argv[2].encode(), 0)
print("holding", flush=True)
time.sleep(120)
"""


def _stray_holder(index: Path, named_pid: int) -> subprocess.Popen:
    """A process holding INDEX/.lock that is not a writer of it; the lock file names `named_pid`, as a killed
    writer leaves it (its copy of the writer's descriptor is what an orphaned worker of an older xmodal held)."""
    index.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(index / ".lock"), str(named_pid)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "holding"
    return holder


def _dead_pid() -> int:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


@pytest.mark.parametrize("named", ["a dead writer", "a pid reused by another program"])
def test_a_lock_held_by_no_writer_is_taken_over(tmp_path, photos, named):
    index = tmp_path / "index"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # alive, holds no lock
    holder = _stray_holder(index, _dead_pid() if named == "a dead writer" else other.pid)
    try:
        assert running_writer(index) is None  # nor do readers take it for a writer
        report = build_index(index, IndexConfig(images=[photos], workers=2), encoder=FakeEncoder())
        assert report.stats.encoded == PHOTOS
        assert running_writer(index) is None
        with WriterLock(index):  # the lock is free again for the next run
            assert running_writer(index) == os.getpid()
    finally:
        for process in (holder, other):
            process.kill()
            process.wait()


def test_a_live_writer_is_refused_and_named(tmp_path):
    """Another process that took the lock as a writer does (flock, its own pid written) is a live writer."""
    index = tmp_path / "index"
    writer = _stray_holder(index, 0)
    try:
        (index / ".lock").write_text(str(writer.pid))  # what a writer writes: its own pid
        assert running_writer(index) == writer.pid
        with pytest.raises(IndexLockedError, match=f"another xmodal run \\(pid {writer.pid}\\) is writing"):
            WriterLock(index).__enter__()
    finally:
        writer.kill()
        writer.wait()


FORK_AND_DIE = """
import os, signal, sys, time
from pathlib import Path
from xmodal.indexer.store.lock import WriterLock
with WriterLock(Path(sys.argv[1])):
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_process_forked_by_a_writer_does_not_keep_its_lock(tmp_path):
    """A writer forks (code of the user's, or of a library) and is killed: its child does not hold the lock."""
    index = tmp_path / "index"
    writer = subprocess.Popen([sys.executable, "-c", FORK_AND_DIE, str(index)], env=env_with_tests_path(),
                              start_new_session=True)
    assert writer.wait(timeout=60) == -signal.SIGKILL
    try:
        fd = os.open(index / ".lock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError where the child kept it
        os.close(fd)
    finally:
        try:
            os.killpg(writer.pid, signal.SIGKILL)  # the child, in the writer's process group
        except ProcessLookupError:
            pass


def test_a_refused_lock_leaves_nothing_for_forked_children_to_close(tmp_path):
    """A lock refused to a second run of this process once left its descriptor's number on the list of those a
    forked child closes: in the full suite the number went to a decoding worker's own pipe end, and the worker,
    closing it as it started, ended at once ('a decoding process ended (exit status 0)')."""
    index = tmp_path / "index"
    with WriterLock(index):
        with pytest.raises(IndexLockedError):
            WriterLock(index).__enter__()
        read, write = os.pipe()  # the lowest free numbers: the refused lock's among them
    pipe = os.fstat(read).st_ino  # both ends' inode
    child = os.fork()
    if child == 0:
        os._exit(0 if os.fstat(read).st_ino == os.fstat(write).st_ino == pipe else 1)
    try:
        assert os.waitpid(child, 0)[1] == 0, "the forked child found its pipe replaced"
    finally:
        os.close(read)
        os.close(write)
