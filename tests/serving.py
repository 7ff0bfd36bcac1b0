"""Running the service in tests: a TestClient once the model is loaded, uvicorn on a free
loopback port in a thread, and ``skelgraph serve`` as a process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin

import pytest

#: the address the test clients use (one of the service's allowed hosts)
BASE_URL = "http://127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def ready_client(app, timeout: float = 120.0) -> Iterator[object]:
    """A :class:`~fastapi.testclient.TestClient` of :obj:`app` addressing it as 127.0.0.1 (an
    allowed host), once its model is loaded."""
    from fastapi.testclient import TestClient

    class LoopbackClient(TestClient):
        def websocket_connect(self, url: str, *args, **kwargs):
            return super().websocket_connect(urljoin("ws://127.0.0.1", url), *args, **kwargs)

    with LoopbackClient(app, base_url=BASE_URL) as client:
        wait_loaded(app, timeout)
        yield client


def wait_loaded(app, timeout: float = 120.0) -> None:
    """Waits until the app's model is loaded; fails the test when it failed to load."""
    service = app.state.service
    assert service.loaded.wait(timeout), f"the model did not load within {timeout} s"
    assert service.error is None, f"the model failed to load: {service.error}"


@contextmanager
def running(app) -> Iterator[str]:
    """Serves :obj:`app` with uvicorn in a thread on a free loopback port once its model is
    loaded; yields ``host:port``."""
    uvicorn = pytest.importorskip("uvicorn")
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    wait_loaded(app)
    host, port = server.servers[0].sockets[0].getsockname()[:2]
    try:
        yield f"{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def health(port: int, timeout: float = 1.0) -> dict | None:
    """``GET /health`` of a local server as JSON; :obj:`None` while it does not answer."""
    import json

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as r:
            return json.loads(r.read())
    except OSError:
        return None


@contextmanager
def serve_process(*args: str, port: int | None = None) -> Iterator[tuple[subprocess.Popen, int]]:
    """``skelgraph serve --port PORT ARGS`` as a process on a free loopback port; yields it
    and the port, and stops it (SIGTERM, then SIGKILL) at the end."""
    port = free_port() if port is None else port
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "skelgraph", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "warning", *args]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdout, process.stderr):
            stream.close()


def wait_health(port: int, status: str, timeout: float) -> dict:
    """Polls ``/health`` until its status is :obj:`status`; returns the answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = health(port)
        if answer is not None and answer["status"] == status:
            return answer
        time.sleep(0.1)
    raise AssertionError(f"/health did not say {status!r} within {timeout} s (last: {answer})")
