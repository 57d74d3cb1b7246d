"""The approval step of a retraining run, alone, for tests: `python -m tests.approval_wait_job PROJECT
TRACKING_URI MODEL VERSION`. Holds the project's run lock, tags the version pending, pauses for an
answer and applies it with the same functions flows/retrain.py calls (wait_for_approval,
apply_decision), under this process's own MLflow login (the flow's service account). Prints
`RESULT {json}` at the end; a failure (e.g. a registry write refused) exits non-zero."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from prefect import flow, runtime

from components.layout import ProjectLayout
from components.lifecycle.locking import exclusive_run
from components.lifecycle.registry import ModelRegistry
from flows.approval import PENDING, RETRAIN_FLOW_NAME, apply_decision, wait_for_approval


@flow(name=RETRAIN_FLOW_NAME)
def wait_then_apply(project: str, tracking_uri: str, model_name: str, version: str) -> dict:
    registry = ModelRegistry(tracking_uri, model_name)
    with exclusive_run(ProjectLayout(Path(project)).run_lock, wait=False):
        registry.tag_version(version, {"approval": PENDING, "approval_flow_run": str(runtime.flow_run.id)})
        print(f"v{version} waits for approval", flush=True)
        approval = wait_for_approval(f"approve {model_name} v{version}?", timeout_s=240, poll_interval_s=1)
        previous = apply_decision(registry, version, approval)
    return {"approved": approval.approved, "by": approval.by, "applied": approval.applied, "previous": previous}


if __name__ == "__main__":
    print("RESULT " + json.dumps(wait_then_apply(*sys.argv[1:5])), flush=True)
