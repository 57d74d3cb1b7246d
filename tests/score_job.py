"""Batch scoring of a file, runnable as `python -m tests.score_job ONNX_DIR INPUT OUTPUT KILL_AFTER`, which
SIGKILLs itself once KILL_AFTER records are done (the crash the resume test recovers from)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

CHUNK_ROWS = 10


def score(onnx_dir: Path, input_path: Path, output_path: Path, kill_after: int | None = None):
    from components.export.predictor import OnnxTextClassifier
    from components.serving.batch_scoring import score_file

    def crash(records_done: int) -> None:
        if kill_after is not None and records_done >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup: as a machine that dies would

    return score_file(OnnxTextClassifier(onnx_dir), "1", input_path, output_path, chunk_rows=CHUNK_ROWS,
                      id_column="review_id", text_column="review", on_chunk=crash)


if __name__ == "__main__":
    score(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
