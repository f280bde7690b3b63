"""Real `xmodal` processes for the tests that stop them: started as a terminal starts a command, watched
through /proc (Linux-only, as CI is), and re-run to their end."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import env_with_tests_path, noise_image
from fakes import FakeEncoder
from xmodal.indexer import IndexConfig, build_index
from xmodal.indexer.build.edit import list_items


def write_photos(folder: Path, count: int) -> Path:
    """`count` small noise JPEGs: enough for several batches, decoded fast."""
    for i in range(count):
        noise_image(i, size=(96, 72)).save(folder / f"p{i:03d}.jpg", quality=90)
    return folder


def clean_build(photos: Path, index: Path) -> set[tuple]:
    """What a clean, uninterrupted build of `photos` holds."""
    build_index(index, IndexConfig(images=[photos], workers=0), encoder=FakeEncoder())
    return items(index)


def items(index: Path) -> set[tuple]:
    return {(row.modality, row.path, row.content_hash) for row in list_items(index)}


def command() -> list[str]:
    exe = shutil.which("xmodal")
    return [exe] if exe else [sys.executable, "-c", "from xmodal import cli; cli.run()"]


def as_in_a_terminal() -> None:
    """SIGINT handled as a shell in a terminal leaves it: a test run in the background passes it on ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args: str, env: dict | None = None) -> subprocess.Popen:
    """`xmodal ARGS` in a session (and process group) of its own, as a terminal runs a command."""
    return subprocess.Popen(command() + list(args), env={**env_with_tests_path(), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=as_in_a_terminal)


def wait_for(moment, run: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not moment():
        if run.poll() is not None:
            out, err = run.communicate()
            pytest.fail(f"xmodal ended (exit {run.returncode}) before {what}: {out[-500:]} {err[-2000:]}")
        if time.monotonic() > deadline:
            kill(run)
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.02)


def kill(run: subprocess.Popen) -> None:
    for pid in [run.pid, *processes(lambda stat: stat["session"] == run.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    run.communicate()


def processes(which) -> dict[int, str]:
    """pid -> command line of the processes `which(stat)` picks; those that ended (zombies) do not count."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2:].split()
        stat = {"state": fields[0], "parent": int(fields[1]), "session": int(fields[3])}
        if stat["state"] != "Z" and which(stat):
            found[int(entry)] = command
    return found


def children(pid: int) -> dict[int, str]:
    return processes(lambda stat: stat["parent"] == pid)


def loads_torch(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def progress(path: Path) -> list[int]:
    return [int(n) for n in path.read_text().split()] if path.exists() else []


def resume(*args: str, env: dict | None = None) -> dict[str, int]:
    """The same `xmodal index` again, to its end; its figures for this run."""
    done = subprocess.run(command() + list(args), capture_output=True, text=True, timeout=300,
                          env={**env_with_tests_path(), **(env or {})})
    assert done.returncode == 0, done.stderr
    figures = re.search(r"this run: encoded (\d+), reused (\d+), resumed (\d+)", done.stdout)
    return dict(zip(("encoded", "reused", "resumed"), map(int, figures.groups())))
