"""The examples of the README and the docs pages are true: every `console` block is run and its output compared.

A `console` block holds `$ command` lines, each followed by what it prints
(stdout and stderr as a terminal shows them). Commands run in the order of PAGES (README.md, then each
docs page, each page top to bottom), as one sequence in one scratch copy of the repository's data, with
the offline model, no network: a page's example may use what an earlier page built.
A `python` block followed by a `text` block is run (after every console step, in the same order), and
must print that text. A `$ curl` line asks `xmodal serve shop.idx`, started for it in the same folder on a
free port (the pages say localhost:8000).
Every relative link and #anchor of these pages must lead to a file or a heading that exists.
The pages show what a CPU without bf16 instructions prints (the offline model runs fp32 on ONNX Runtime there),
the one output every CPU can give: the examples run with XMODAL_CPU_FEATURES masking avx512_bf16 and amx_bf16,
the user-facing override the README names, so they are checked on any CPU; what the README says a CPU with
them prints instead is checked where this CPU has them.
Timings, dates, the checkout's path and the digits of a full-precision score past the fifth decimal
(float32 sums differ in their last bits between torch builds) are the only things allowed to differ.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, env_with_tests_path
from server import Server

from xmodal.indexer.models import Inference
from xmodal.indexer.models.inference import missing_requirement

README = REPO / "README.md"
DOCS = REPO / "docs"
# Whose examples run, in this order. A page comes after the pages that build what its examples use: the README
# builds catalog.idx (searched in search.md, shop.md, re-run in sources.md), search.md photos.idx (grown in
# sources.md), shop.md shop.idx (served in serve.md).
PAGES = [README, *(DOCS / f"{name}.md" for name in (
    "search", "shop", "duplicates", "sources", "models", "serve", "voice", "languages", "python-api", "storage", "ray", "gpu",
    "benchmarks",
    "architecture"))]
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


NO_BF16 = "-avx512_bf16,-amx_bf16"  # XMODAL_CPU_FEATURES for the pages' outputs (README: "Index, search, inspect")
OUTER_CPU_FEATURES = os.environ.get("XMODAL_CPU_FEATURES")  # a simulated CPU this run was started with, if any


def cpu_features_setting(*masks: str | None) -> str:
    return ",".join(mask for mask in (OUTER_CPU_FEATURES, *masks) if mask)


@pytest.fixture(scope="module", autouse=True)
def _as_on_a_cpu_without_bf16():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XMODAL_CPU_FEATURES", cpu_features_setting(NO_BF16))
        yield


def page_name(page: Path) -> str:
    return page.relative_to(REPO).as_posix() if page.is_relative_to(REPO) else page.name


def blocks(page: Path = README) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(page.read_text(encoding="utf-8"))]


def console_steps() -> list[tuple[str, str, str]]:
    """(page, command, what it prints) of every `$ ` line of every page, in PAGES order."""
    steps = []
    for page in PAGES:
        for language, body in blocks(page):
            if language != "console":
                continue
            command, output = None, []
            for line in body.splitlines():
                if line.startswith("$ "):
                    if command is not None:
                        steps.append((page_name(page), command, "\n".join(output)))
                    command, output = line[2:], []
                else:
                    output.append(line)
            if command is not None:
                steps.append((page_name(page), command, "\n".join(output)))
    return steps


def located_python_examples() -> list[tuple[str, str, str]]:
    """(page, code, what it prints) of every `python` block followed by a `text` block, in PAGES order."""
    examples = []
    for page in PAGES:
        found = blocks(page)
        examples += [(page_name(page), code, found[i + 1][1]) for i, (language, code) in enumerate(found[:-1])
                     if language == "python" and found[i + 1][0] == "text"]
    return examples


def python_examples() -> list[tuple[str, str]]:
    """(code, what it prints); the first is the README's first API example (tests/test_packaging.py runs it)."""
    return [(code, shown) for _, code, shown in located_python_examples()]


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


def test_the_pages_have_examples_to_check():
    assert len(console_steps()) >= 10 and python_examples()
    assert located_python_examples()[0][0] == "README.md"


def test_every_docs_page_is_run():
    assert PAGES[0] == README and len(set(PAGES)) == len(PAGES)
    assert sorted(DOCS.glob("*.md")) == sorted(PAGES[1:]), "add the page to PAGES, after the pages it builds on"


def test_console_examples_print_what_the_pages_show(workdir, service):
    for page, command, shown in console_steps():
        printed = run(command, workdir, service)
        assert normalise(printed, workdir) == normalise(shown, workdir), f"{page}: $ {command}"


def test_python_examples_print_what_the_pages_show(workdir):
    for page, code, shown in located_python_examples():
        done = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=600,
                              env=env_with_tests_path())
        assert done.returncode == 0, f"{page}: {done.stderr[-3000:]}"
        assert normalise(done.stdout, workdir) == normalise(shown, workdir), page


def test_a_cpu_with_bf16_prints_the_way_the_readme_says(tmp_path, monkeypatch):
    """The README's first index example, run as this CPU is: where it has bf16 instructions, the same output
    but the way, which reads as the README says."""
    said = "the line reads `bf16 on openvino on cpu`"
    assert said in " ".join(README.read_text(encoding="utf-8").split())
    monkeypatch.setenv("XMODAL_CPU_FEATURES", cpu_features_setting())
    missing = missing_requirement(Inference("openvino", "bf16"))
    if missing:
        pytest.skip(f"bf16 on openvino does not run here: {missing}")
    page, command, shown = next(step for step in console_steps() if "--out catalog.idx --model offline" in step[1])
    shutil.copytree(REPO / "data" / "catalog", tmp_path / "data" / "catalog")
    assert "fp32 on onnx on cpu" in shown
    printed = run(command, tmp_path)
    assert normalise(printed, tmp_path) == normalise(shown.replace("fp32 on onnx on cpu", "bf16 on openvino on cpu"),
                                                     tmp_path)


# Links and pictures, [text](target) and ![alt](target), outside code; addresses (https:, ...) are not checked
LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)


def without_code(text: str) -> str:
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: its text lowercased, punctuation dropped, spaces as hyphens."""
    heading = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen = set(), {}
    for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8"))):
        name = anchor(heading)
        found.add(name if name not in seen else f"{name}-{seen[name]}")  # GitHub numbers a repeated heading
        seen[name] = seen.get(name, 0) + 1
    return found


def broken_links(page: Path) -> list[str]:
    broken = []
    for match in LINK.finditer(without_code(page.read_text(encoding="utf-8"))):
        target = match.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{page_name(page)}: {target}: no such file")
        elif fragment and (linked.suffix != ".md" or fragment not in anchors(linked)):
            broken.append(f"{page_name(page)}: {target}: no such heading")
    return broken


def test_every_link_leads_somewhere():
    pages = [README, *sorted(DOCS.glob("*.md"))]
    assert sum(len(LINK.findall(without_code(p.read_text(encoding="utf-8")))) for p in pages) >= 5  # links are seen
    assert [broken for page in pages for broken in broken_links(page)] == []


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A page\n\n## The index on disk (format 3)\n\n[ok](#a-page) [ok](#the-index-on-disk-format-3) "
                    "[bad](#the-index) [bad](missing.md) `[in code](missing.md)`\n\n```\n# not a heading\n```\n"
                    "[bad](page.md#not-a-heading) [ok](https://example.com) ![ok](page.md)\n")
    assert [b.split(": ", 1)[1] for b in broken_links(page)] == [
        "#the-index: no such heading", "missing.md: no such file", "page.md#not-a-heading: no such heading"]
