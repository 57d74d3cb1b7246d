"""The Dask sweep of tests/test_dask.py, run as `python -m tests.sweep_dask_job PROJECT PARENT_RUN_ID` in a process
of its own. A LocalCluster's worker processes are spawned with their parent's sys.path and working directory:
started from a fresh process, they import the project's code as a user's run does, whatever import state the
test process's earlier tests left behind. Prints the sweep's summary as JSON on its last line."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(root: Path, parent_run_id: str) -> dict:
    from components.config import load_params
    from components.layout import ProjectLayout
    from components.lifecycle.registry import ModelRegistry, resolve_tracking_uri
    from flows.sweep import run_sweep

    layout = ProjectLayout(root)
    registry = ModelRegistry(resolve_tracking_uri(None, layout.mlflow_dir), "tiny-sentiment",
                             artifact_root=layout.mlflow_dir / "artifacts")
    return run_sweep(load_params(layout.params_file), layout, registry, parent_run_id)


if __name__ == "__main__":
    summary = main(Path(sys.argv[1]), sys.argv[2])
    print(json.dumps({"best_trial": summary["best_trial"], "best_run_id": summary["best_run_id"]}))
