"""The README's examples are true: every `console` block is run and its output compared.

A `console` block holds `$ command` lines, each followed by what it prints
(stdout and stderr as a terminal shows them). Commands run in README order,
in a scratch copy of the repository's data, with the offline model, no network.
A `python` block followed by a `text` block is run, and must print that text.
A `$ curl` line asks `xmodal serve shop.idx`, started for it in the same folder on a
free port (the README says localhost:8000).
Timings, dates, the checkout's path and the digits of a full-precision score past the fifth decimal
(float32 sums differ in their last bits between torch builds) are the only things allowed to differ.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, env_with_tests_path
from server import Server

README = REPO / "README.md"
SHOWN_ROOT = "/home/me/xmodal"  # where the README's outputs were made: a checkout there
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
VARIABLE = [
    (re.compile(r"\d+(\.\d+)? (s|ms|items/s)\b"), r"N \2"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00"), "TIMESTAMP"),
    (re.compile(r"xmodal run pid \d+"), "xmodal run pid N"),
    (re.compile(r'"took_ms": [\d.]+'), '"took_ms": N'),
    (re.compile(r"[\d.]+ (kB|MB) written"), r"N \1 written"),  # Parquet files hold the paths, which differ here
    (re.compile(r"(\d\.\d{5})\d{3,}"), r"\1..."),  # JSON scores: a float32 printed as a double
    (re.compile(r"[ \t]+$", re.M), ""),
]


def blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(README.read_text(encoding="utf-8"))]


def console_steps() -> list[tuple[str, str]]:
    steps = []
    for language, body in blocks():
        if language != "console":
            continue
        command, output = None, []
        for line in body.splitlines():
            if line.startswith("$ "):
                if command is not None:
                    steps.append((command, "\n".join(output)))
                command, output = line[2:], []
            else:
                output.append(line)
        if command is not None:
            steps.append((command, "\n".join(output)))
    return steps


def python_examples() -> list[tuple[str, str]]:
    found = blocks()
    return [(code, found[i + 1][1]) for i, (language, code) in enumerate(found[:-1])
            if language == "python" and found[i + 1][0] == "text"]


def normalise(text: str, root: Path) -> str:
    text = text.replace(str(root), SHOWN_ROOT)
    for pattern, replacement in VARIABLE:
        text = pattern.sub(replacement, text)
    return text.strip("\n")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("readme") / "xmodal"
    root.mkdir()
    shutil.copytree(REPO / "data", root / "data")
    return root


@pytest.fixture(scope="module")
def service(workdir):
    started: list[Server] = []

    def port() -> int:
        if not started:
            started.append(Server(str(workdir / "shop.idx")))
        return started[0].port

    yield port
    for server in started:
        server.stop()


def run(command: str, root: Path, service=None) -> str:
    if command.startswith("curl "):
        command = command.replace("localhost:8000", f"127.0.0.1:{service()}")
        done = subprocess.run(command, shell=True, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=120, env=env_with_tests_path())
        return done.stdout
    words = shlex.split(command)
    assert words[0] == "xmodal", f"README examples run xmodal, not {words[0]}"
    env = {**env_with_tests_path(), "COLUMNS": "100"}
    done = subprocess.run([sys.executable, "-c", "from xmodal import cli; cli.app()", *words[1:]], cwd=root, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    return done.stdout


def test_the_readme_has_examples_to_check():
    assert len(console_steps()) >= 10 and python_examples()


def test_console_examples_print_what_the_readme_shows(workdir, service):
    for command, shown in console_steps():
        printed = run(command, workdir, service)
        assert normalise(printed, workdir) == normalise(shown, workdir), f"$ {command}"


def test_python_examples_print_what_the_readme_shows(workdir):
    for code, shown in python_examples():
        done = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=600,
                              env=env_with_tests_path())
        assert done.returncode == 0, done.stderr[-3000:]
        assert normalise(done.stdout, workdir) == normalise(shown, workdir)
