"""Batch scoring spread over a Dask cluster: the chunks that score_file reads go to the workers, their
predictions come back in input order, and score_file writes them and its progress file as without Dask.

The client still reads the input one chunk at a time and keeps at most `window` chunks in flight, so it
never holds the whole file. The model directory is sent once (scattered to every worker, so workers on
other machines need no copy of the project) and each worker process opens it once, on its first chunk.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import tempfile
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from components.export.integrity import listed_below

# --- on the workers ----------------------------------------------------------------------------
_predictors: dict[tuple[str, tuple[str, ...], int], Any] = {}  # per worker process: (digest, providers, threads)
_loading = threading.Lock()  # a worker with several threads opens the model once, not once per thread
loads = 0  # models this process opened: 1 per worker and model, whatever the number of chunks


def _open_on_worker(digest: str, packed: bytes, providers: tuple[str, ...], threads: int,
                    expected_files: list[dict] | None):
    global loads
    key = (digest, providers, threads)
    with _loading:
        if key not in _predictors:
            from components.export.integrity import check_files
            from components.export.predictor import load_predictor

            try:
                from distributed import get_worker

                scratch = get_worker().local_directory  # removed with the worker
            except ValueError:
                scratch = None
            target = Path(tempfile.mkdtemp(prefix=f"tunegate-model-{digest[:12]}-", dir=scratch))
            with tarfile.open(fileobj=io.BytesIO(packed)) as archive:
                archive.extractall(target, filter="data")
            if expected_files is not None:  # the files the client checked against the registered manifest
                check_files(target, expected_files)
            _predictors[key] = load_predictor(target, providers=list(providers), intra_op_threads=threads)
            loads += 1
        return _predictors[key]


def score_on_worker(digest: str, packed: bytes, providers: tuple[str, ...], threads: int, texts: list[str],
                    batch_size: int, expected_files: list[dict] | None = None) -> list[dict]:
    return _open_on_worker(digest, packed, providers, threads, expected_files).predict(texts, batch_size=batch_size)


def worker_loads() -> int:
    """How many models this worker process has opened (asked with client.run in tests and by curious users)."""
    return loads


# --- on the client -----------------------------------------------------------------------------
def pack_model(model_dir: Path) -> tuple[str, bytes]:
    """The export directory as an in-memory tar and its sha256 (the workers' cache key)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for path in sorted(Path(model_dir).rglob("*")):
            if path.is_file():
                archive.add(path, arcname=str(path.relative_to(model_dir)))
    packed = buffer.getvalue()
    return hashlib.sha256(packed).hexdigest(), packed


class DaskChunkScorer:
    """score_file's `scorer`: maps the stream of chunk texts to their predictions, in order, on `client`."""

    def __init__(self, client, model_dir: Path, providers: Sequence[str], batch_size: int = 64,
                 window: int | None = None) -> None:
        from components.dask_cluster import cluster_shape

        shape = cluster_shape(client)
        self.client = client
        self.model_dir = Path(model_dir)
        # Each worker checks what it unpacked against the registered manifest's entries before loading it.
        self.expected_files = listed_below(self.model_dir)
        self.providers = tuple(providers)
        self.batch_size = batch_size
        self.threads = shape.threads_per_task
        # One chunk running and one waiting per task slot keeps every worker busy while the client writes.
        self.window = window or max(2, 2 * shape.threads)

    def __call__(self, texts_stream: Iterable[list[str]]) -> Iterator[list[dict]]:
        digest, packed = pack_model(self.model_dir)
        model = self.client.scatter(packed, broadcast=True, hash=False)
        in_flight: deque = deque()
        try:
            for texts in texts_stream:
                in_flight.append(self.client.submit(score_on_worker, digest, model, self.providers, self.threads,
                                                    texts, self.batch_size, self.expected_files, pure=False)
                                 if texts else [])
                if len(in_flight) >= self.window:
                    yield _result(in_flight.popleft())
            while in_flight:
                yield _result(in_flight.popleft())
        finally:
            pending = [f for f in in_flight if not isinstance(f, list)]
            if pending:
                self.client.cancel(pending)
            self.client.cancel([model])


def _result(item) -> list[dict]:
    return item if isinstance(item, list) else item.result()
