"""bench/bench_peers.py, xmodal beside rclip and clip-retrieval (issue 30): its xmodal half, with the tiny model and
no peers, so that the script the speed figures come from keeps running; the peers need their own venvs."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO, env_with_tests_path


def test_the_xmodal_half_indexes_times_and_checks_its_vectors(tmp_path, tiny_spec):
    out = tmp_path / "peers.txt"
    done = subprocess.run([sys.executable, str(REPO / "bench" / "bench_peers.py"), "--model", tiny_spec,
                           "--images", "4", "--repeats", "1", "--ways", "auto", "--out", str(out)],
                          capture_output=True, text=True, env=env_with_tests_path(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "rclip: skipped (no --rclip-python)" in done.stdout
    assert "clip-retrieval: skipped (no --clip-retrieval-python)" in done.stdout
    report = out.read_text()
    assert re.search(r"^CPU: .+, \d+ cores; avx2 (yes|no), .*amx (yes|no)$", report, re.M)
    row = re.search(r"^\| xmodal default \(auto: \w+ on \w+\) \| ([\d.]+) \| ([\d.]+) s \| ([\d,]+) MB \|$", report,
                    re.M)
    assert row and float(row.group(1)) > 0 and float(row.group(2)) > 0 and int(row.group(3).replace(",", "")) > 50
    # the 4 photos' stored vectors were read back and compared (here with themselves: the same way)
    assert re.search(r"^  xmodal default \(auto: .+\): min 1\.0000 mean 1\.0000; mean taken out: min 1\.0000",
                     report, re.M)
