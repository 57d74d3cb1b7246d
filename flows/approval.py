"""The human approval gate: the flow pauses for a typed answer that a person gives in the Prefect UI
or with `tunegate approve` / `tunegate reject` from any process that reaches the same Prefect API."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from prefect.input import RunInput

RETRAIN_FLOW_NAME = "tunegate-retrain"


class ApprovalInput(RunInput):
    decision: Literal["approve", "reject"]
    by: str
    comment: str = ""


@dataclass(frozen=True)
class Approval:
    approved: bool
    by: str
    comment: str
    how: Literal["person", "auto-local-profile", "timeout"]

    def as_tags(self) -> dict[str, str]:
        return {"approval": "approved" if self.approved else "rejected", "approval_by": self.by,
                "approval_comment": self.comment, "approval_how": self.how}


def auto_approval(version: str) -> Approval:
    return Approval(True, by=f"{getpass.getuser()} (auto)", how="auto-local-profile",
                    comment=f"version {version} approved automatically by the 'local' approval profile")


def wait_for_approval(description: str, timeout_s: int, poll_interval_s: int) -> Approval:
    """Pause the running flow until a person answers; no answer within the timeout means rejected."""
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    try:
        answer = pause_flow_run(
            wait_for_input=ApprovalInput.with_initial_data(description=description, decision="approve",
                                                           by=getpass.getuser()),
            timeout=timeout_s,
            poll_interval=poll_interval_s,
        )
    except FlowPauseTimeout:
        return Approval(False, by="nobody", comment=f"no answer within {timeout_s} s", how="timeout")
    return Approval(answer.decision == "approve", by=answer.by, comment=answer.comment, how="person")


def paused_retrain_runs() -> list:
    """Retraining runs now waiting for an approval, newest first."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[RETRAIN_FLOW_NAME])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"]))),
            sort=FlowRunSort.START_TIME_DESC,
        )


def answer_approval(decision: Literal["approve", "reject"], by: str, comment: str,
                    flow_run_id: UUID | None = None) -> UUID:
    """Resume a paused retraining run with a decision; with no id, the only one waiting."""
    from prefect.flow_runs import resume_flow_run

    if flow_run_id is None:
        waiting = paused_retrain_runs()
        if not waiting:
            raise LookupError("no retraining run is waiting for approval")
        if len(waiting) > 1:
            listing = ", ".join(f"{run.id} ({run.name})" for run in waiting)
            raise LookupError(f"{len(waiting)} runs are waiting; pass --flow-run one of: {listing}")
        flow_run_id = waiting[0].id
    resume_flow_run(flow_run_id, run_input={"decision": decision, "by": by, "comment": comment})
    return flow_run_id
