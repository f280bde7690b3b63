"""The system programs some tests need (not pip packages): found in one place, so that a fresh machine passes
`python -m pytest -q` with the tests whose program is absent skipped, each naming the Debian package to
install. With XMODAL_REQUIRE_BROWSER=1 (.ci/run installs them all and sets it) an absent one fails the test
instead: CI must never pass by skipping.

A test states what it needs with `@needs(ESPEAK)` (or `pytestmark = needs(CHROMIUM, CHROMEDRIVER)` for a
module); a fixture or helper that runs a program calls `require(ESPEAK)` first.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import pytest

REQUIRE = "XMODAL_REQUIRE_BROWSER"


@dataclass(frozen=True)
class Tool:
    name: str  # what the reason calls it
    commands: tuple[str, ...]  # any of these on PATH will do
    package: str  # the Debian package that installs it

    def found(self) -> str | None:
        return next(filter(None, (shutil.which(command) for command in self.commands)), None)


ESPEAK = Tool("espeak-ng", ("espeak-ng",), "espeak-ng")  # speaks the voice tests' queries
CHROMIUM = Tool("chromium", ("chromium", "chromium-browser"), "chromium")  # runs the search page
CHROMEDRIVER = Tool("chromedriver", ("chromedriver",), "chromium-driver")  # lets Selenium drive it


def missing_reason(*tools: Tool) -> str | None:
    """Why these tools cannot be used here, naming the packages to install; None when all are found."""
    absent = [tool for tool in tools if tool.found() is None]
    if not absent:
        return None
    names = " and ".join(tool.name for tool in absent)
    verb = "is" if len(absent) == 1 else "are"
    return f"{names} {verb} not installed: apt-get install {' '.join(tool.package for tool in absent)}"


def require(*tools: Tool) -> None:
    """Skip the calling test where a tool is absent; fail it instead under XMODAL_REQUIRE_BROWSER=1."""
    reason = missing_reason(*tools)
    if reason is None:
        return
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{REQUIRE}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def needs(*tools: Tool) -> pytest.MarkDecorator:
    """Mark a test, a class or a module as needing `tools` (checked at its setup, by the hook below)."""
    return pytest.mark.needs_tools(*tools)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "needs_tools(*tools): system programs the test runs (tests/system_tools.py)")


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures start servers or browsers
def pytest_runtest_setup(item) -> None:
    for mark in item.iter_markers("needs_tools"):
        require(*mark.args)
