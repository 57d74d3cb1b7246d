"""The files part of a checkpoint's key: training, the teacher and the teacher's kept logits each keep
their work under a digest of what shapes it, files included (a teacher's weights weigh 438 MB)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

CHUNK = 1 << 24


class Digest(Protocol):
    def update(self, data: bytes, /) -> None: ...


def update_with_files(digest: Digest, paths: Iterable[Path], *, missing: bytes | None = None,
                      names: bool = False) -> None:
    """Feed each file's bytes to `digest`, streamed, in order (the digest is the same as of the whole
    bytes at once). `names`: each file's name goes first. A missing file feeds `missing`, or is an
    error when that is None: a key must not quietly ignore an input it was meant to cover."""
    for path in paths:
        if names:
            digest.update(path.name.encode())
        if missing is not None and not path.is_file():
            digest.update(missing)
            continue
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK), b""):
                digest.update(chunk)
