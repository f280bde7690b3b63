"""The tests that need a system program (espeak-ng, chromium and its driver) on a machine without it: they skip,
naming the Debian package to install, and fail instead under XMODAL_REQUIRE_BROWSER=1, as CI sets."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, TESTS
from system_tools import CHROMEDRIVER, CHROMIUM, ESPEAK, missing_reason

# A test that speaks (its fixture runs espeak-ng), and a page test (its module needs chromium and chromedriver).
SPEAKS = "tests/test_voice.py::test_chinese_heard_in_traditional_characters_is_searched_as_the_catalog_writes_it"
PAGE = "tests/test_serve_page.py::test_a_shared_url_runs_its_search_and_shows_thumbnails"


def _bin_with(folder: Path, *commands: str) -> str:
    """A PATH holding only these (do-nothing) commands."""
    folder.mkdir(exist_ok=True)
    for command in commands:
        (folder / command).write_text("#!/bin/sh\nexit 0\n")
        (folder / command).chmod(0o755)
    return str(folder)


def test_the_reason_names_what_is_missing_and_its_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _bin_with(tmp_path / "bin"))
    assert missing_reason(ESPEAK) == "espeak-ng is not installed: apt-get install espeak-ng"
    assert missing_reason(CHROMIUM, CHROMEDRIVER) == \
        "chromium and chromedriver are not installed: apt-get install chromium chromium-driver"
    monkeypatch.setenv("PATH", _bin_with(tmp_path / "bin", "chromium-browser"))  # Ubuntu's name will do
    assert missing_reason(CHROMIUM, CHROMEDRIVER) == "chromedriver is not installed: apt-get install chromium-driver"
    monkeypatch.setenv("PATH", _bin_with(tmp_path / "bin", "chromedriver", "espeak-ng"))
    assert missing_reason(ESPEAK, CHROMIUM, CHROMEDRIVER) is None


def _pytest_without_the_tools(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """The suite's own voice and page tests, in a real pytest run whose PATH has none of the tools."""
    assert PAGE.split("::")[1] in (TESTS / "test_serve_page.py").read_text()
    environment = {name: value for name, value in os.environ.items() if name != "XMODAL_REQUIRE_BROWSER"}
    environment.update(PATH=_bin_with(tmp_path / "bin"), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rsfE", "-p", "no:cacheprovider",
                           f"--basetemp={tmp_path / 'run'}", SPEAKS, PAGE], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_a_fresh_machine_skips_them_naming_the_package(tmp_path):
    done = _pytest_without_the_tools(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "2 skipped" in done.stdout
    assert "espeak-ng is not installed: apt-get install espeak-ng" in done.stdout
    assert "chromium and chromedriver are not installed: apt-get install chromium chromium-driver" in done.stdout


def test_ci_fails_them_instead(tmp_path):
    done = _pytest_without_the_tools(tmp_path, XMODAL_REQUIRE_BROWSER="1")
    assert done.returncode == 1, done.stdout[-3000:]
    assert "skipped" not in done.stdout
    assert "XMODAL_REQUIRE_BROWSER=1 but espeak-ng is not installed: apt-get install espeak-ng" in done.stdout
    assert "XMODAL_REQUIRE_BROWSER=1 but chromium and chromedriver are not installed" in done.stdout
