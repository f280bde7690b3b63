"""The test run cleans up after itself: a run of the suite left 1 GB in /tmp/pytest-of-$USER (ONNX exports,
model copies, indexes), 3.1 GB over the three runs pytest keeps by default.

The repository's pytest settings (pyproject.toml) remove a passing test's tmp_path when it ends and a passing
session's whole folder when it ends; a failed test's folder stays for a look, for the last session only.
"""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO

WRITER = '''
def test_writes(tmp_path, tmp_path_factory):
    (tmp_path / "export.bin").write_bytes(bytes(1 << 20))
    (tmp_path_factory.mktemp("shared") / "model.bin").write_bytes(bytes(1 << 20))
'''


def session(folder, test: str, root) -> subprocess.CompletedProcess:
    """A pytest session under the repository's settings, its temporary folders under `root`."""
    (folder / "test_one.py").write_text(test)
    env = {**os.environ, "PYTEST_DEBUG_TEMPROOT": str(root)}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
                           str(REPO / "pyproject.toml"), "--rootdir", str(folder), str(folder / "test_one.py")],
                          capture_output=True, text=True, timeout=120, env=env, cwd=folder)


def files_under(root) -> list[str]:
    return [os.path.join(d, f) for d, _, names in os.walk(root) for f in names]


def test_a_passing_run_leaves_no_files_and_a_failing_one_only_the_last_sessions(tmp_path):
    root, folder = tmp_path / "temproot", tmp_path / "suite"
    root.mkdir()
    folder.mkdir()
    passed = session(folder, WRITER, root)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert files_under(root) == []
    failing = WRITER + "\n\ndef test_fails(tmp_path):\n    (tmp_path / 'log.txt').write_text('why')\n    assert False\n"
    for _ in range(2):
        assert session(folder, failing, root).returncode == 1
    kept = files_under(root)
    assert [os.path.basename(p) for p in kept if not p.endswith(".lock")].count("log.txt") == 1  # the last run's
    assert not any(p.endswith("export.bin") for p in kept)  # a passing test's folder went when it ended
