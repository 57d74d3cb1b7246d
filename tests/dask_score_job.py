"""Batch scoring on a Dask cluster, runnable as `python -m tests.dask_score_job ADDRESS ONNX_DIR INPUT OUTPUT KILL_AFTER`,
which SIGKILLs itself once KILL_AFTER records are written, with chunks still in flight on the workers (the crash
the resume test recovers from). Same chunking, columns and model version as tests.score_job."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from tests.score_job import CHUNK_ROWS


def score_on_dask(address: str, onnx_dir: Path, input_path: Path, output_path: Path, kill_after: int | None = None):
    from components.dask_cluster import connect
    from components.export.predictor import OnnxTextClassifier
    from components.serving.batch_scoring import score_file
    from components.serving.dask_scoring import DaskChunkScorer

    def crash(records_done: int) -> None:
        if kill_after is not None and records_done >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup: as a machine that dies would

    with connect(address) as client:
        scorer = DaskChunkScorer(client, onnx_dir, ["CPUExecutionProvider"])
        return score_file(OnnxTextClassifier(onnx_dir), "1", input_path, output_path, chunk_rows=CHUNK_ROWS,
                          id_column="review_id", text_column="review", on_chunk=crash, scorer=scorer)


if __name__ == "__main__":
    score_on_dask(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5]))
