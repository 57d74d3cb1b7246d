"""One retraining at a time per project: an OS file lock that dies with its holder."""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


class RunInProgress(RuntimeError):
    """Another retraining run holds the project; this one was told not to wait."""


def _holder(lock_path: Path) -> str:
    try:
        info = json.loads(lock_path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    return f"pid {info.get('pid', '?')} since {info.get('since', '?')}"


@contextmanager
def exclusive_run(lock_path: Path, wait: bool, on_wait: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the project's run lock; `wait=False` raises RunInProgress instead of queueing."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(lock_path)
            if not wait:
                raise RunInProgress(f"a retraining run is already in progress ({holder}; lock {lock_path})") from None
            on_wait(f"waiting for the retraining run in progress ({holder}) to finish")
            fcntl.flock(handle, fcntl.LOCK_EX)  # the kernel releases it if the holder dies
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
