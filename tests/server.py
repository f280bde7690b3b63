"""A real `xmodal serve` process on a free loopback port: start it, wait for /health, call it, stop it."""
from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from conftest import env_with_tests_path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def xmodal_command() -> list[str]:
    exe = shutil.which("xmodal")
    return [exe] if exe else [sys.executable, "-c", "from xmodal import cli; cli.app()"]


class Server:
    """`xmodal serve ARGS` on 127.0.0.1:<free port>; a context manager that stops it with SIGTERM."""

    def __init__(self, *args: str, env: dict | None = None, log: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "w+") if log else subprocess.DEVNULL
        self.process = subprocess.Popen(xmodal_command() + ["serve", *args, "--port", str(self.port)],
                                        stdout=subprocess.PIPE, stderr=self._log, text=True,
                                        env={**env_with_tests_path(), **(env or {})})
        self._wait_until_up()

    def _wait_until_up(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"xmodal serve exited with {self.process.returncode}: {self.log_text()}")
            try:
                if self.call("GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"xmodal serve did not answer /health within {timeout} s")

    def call(self, method: str, path: str, body=None, headers: dict | None = None, raw: bytes | None = None,
             timeout: float = 60) -> tuple[int, dict, bytes]:
        """(status, headers, body bytes), for any status."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=dict(headers or {}))
        if body is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def json(self, method: str, path: str, body=None, headers: dict | None = None) -> tuple[int, dict]:
        status, _, data = self.call(method, path, body, headers)
        return status, json.loads(data)

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_text(self) -> str:
        if self._log is subprocess.DEVNULL:
            return ""
        self._log.seek(0)
        return self._log.read()[-3000:]

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._log is not subprocess.DEVNULL:
            self._log.close()
