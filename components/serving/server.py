"""Running the app: from a daemon thread (tests, a CLI that does other work meanwhile) or in the foreground."""

from __future__ import annotations

import threading
import time

from fastapi import FastAPI

DEFAULT_REQUEST_TIMEOUT_S = 10.0  # an app without tunegate's settings (a test's bare FastAPI)


class BackgroundServer:
    """Serve an app from a daemon thread, for tests and for a CLI that does other work meanwhile.

    port=0 lets the OS pick a free port; `.url` gives the one actually bound.
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, *,
                 log_level: str = "warning", startup_timeout_s: float = 15.0) -> None:
        import uvicorn

        self.host = host
        self._requested_port = port
        self._startup_timeout_s = startup_timeout_s
        # lifespan on: the app's batcher and watchers start and stop with the server.
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                                     lifespan="on", http=_protocol(app)))
        self._thread = threading.Thread(target=self._server.run, name="tunegate-http", daemon=True)
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not running")
        return f"http://{self.host}:{self.port}"

    def start(self) -> "BackgroundServer":
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():  # uvicorn exits the thread when it cannot bind
                raise RuntimeError(f"HTTP server on {self.host}:{self._requested_port} failed to start (port in use?); "
                                   "see the error logged above")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"HTTP server on {self.host}:{self._requested_port} did not start "
                                   f"within {self._startup_timeout_s} s")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.port = None
        if self._thread.ident is None:  # never started
            return
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():  # open keep-alive connections: stop waiting for them
            self._server.force_exit = True
            self._thread.join(timeout_s)

    def __enter__(self) -> "BackgroundServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve_forever(app: FastAPI, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve in the foreground until interrupted (Ctrl+C, SIGTERM)."""
    import gc
    import sys

    import uvicorn

    settings = getattr(app.state, "settings", None)
    # What exists now (the model, the tokenizer, the app) lives as long as the process: out of the
    # collector's sight, a full collection no longer walks it and stalls the event loop meanwhile.
    gc.collect()
    gc.freeze()
    # The batcher's thread needs the GIL back each time onnxruntime returns; with the event loop busy it
    # waited up to the default 5 ms switch interval. 0.5 ms: +10% requests/s for a 3-layer
    # student at 16 clients (bench/student_speed.py).
    sys.setswitchinterval(0.0005)
    uvicorn.run(app, host=host, port=port, log_level="info", http=_protocol(app),
                access_log=bool(getattr(settings, "access_log", False)))


def _protocol(app: FastAPI):
    """httptools with a deadline for slow clients (serve.request_timeout_s, from the app's settings)."""
    from components.serving.slow_clients import deadline_protocol

    settings = getattr(app.state, "settings", None)
    return deadline_protocol(getattr(settings, "request_timeout_s", DEFAULT_REQUEST_TIMEOUT_S))
