"""Servers that tests start as real processes: a free port for each, and waiting until one answers."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_answers(url: str, process: subprocess.Popen, timeout_s: float = 90,
                       log: Callable[[], str] | None = None) -> None:
    """Poll `url` until it answers 200; fail with the server's output (`log`, else its stdout) if the
    process exits first or the time runs out."""
    def output() -> str:
        if log is not None:
            return log()[-3000:]
        return process.stdout.read() if process.stdout else ""

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None, f"the server of {url} exited:\n{output()}"
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout_s:.0f} s:\n{output()}"
        time.sleep(0.3)


def stop_process(process: subprocess.Popen, timeout_s: float = 20) -> None:
    """SIGTERM, and SIGKILL if it has not exited within timeout_s: a test never leaves a server behind."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class ClientThreads:
    """`clients` threads running `_client(i)` until stopped: a bounded load on a service under test, started and
    stopped as a context manager. Subclasses record what their clients saw under `_lock`."""

    join_timeout_s = 30.0

    def __init__(self, clients: int) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, client: int) -> None:
        raise NotImplementedError

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.join_timeout_s)

