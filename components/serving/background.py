"""One daemon thread that runs beside the service until stopped: the champion watcher, the shadow's worker
and its watcher. Started and stopped with the app (components/serving/app.py's BackgroundService)."""

from __future__ import annotations

import threading


class StoppableThread:
    """`_run` in a daemon thread named `thread_name`; `_run` loops until `self._stop` is set."""

    def __init__(self, thread_name: str) -> None:
        self._thread_name = thread_name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        raise NotImplementedError

    def start(self):
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ask `_run` to end and wait for it up to timeout_s (work in progress is finished, not cut)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
