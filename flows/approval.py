"""The human approval gate.

A run that needs a person tags its version `approval=pending` in the registry and pauses for a
typed answer, given in the Prefect UI or with `tunegate approve` / `tunegate reject`. The registry
tag, not the waiting process, is the record: if that process died, answering later still applies
the decision to the right version, once.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from prefect.input import RunInput

from components.layout import ProjectLayout
from components.lifecycle.locking import RunInProgress, exclusive_run

RETRAIN_FLOW_NAME = "tunegate-retrain"
PENDING = "pending"


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


def apply_decision(registry, version: str, approval: Approval) -> str | None:
    """Record the answer on the version; an approval also makes it champion. Returns the old champion."""
    registry.tag_version(version, approval.as_tags())
    if not approval.approved:
        return None
    previous = registry.promote(version, by=approval.by, reason=approval.comment or "approved")
    return previous.version if previous else None


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
    """Retraining runs now paused for an approval, newest first."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateName,
    )
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[RETRAIN_FLOW_NAME])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"]))),
            sort=FlowRunSort.START_TIME_DESC,
        )


def _pick_pending(registry, version: str | None):
    waiting = registry.find_versions(approval=PENDING)
    if version is not None:
        waiting = [v for v in waiting if v.version == str(version)]
    if not waiting:
        raise LookupError(f"no version of {registry.model_name!r} waits for approval"
                          + (f" with number {version}" if version else ""))
    if len(waiting) > 1:
        raise LookupError("several versions wait for approval; pass --version one of: "
                          + ", ".join(v.version for v in waiting))
    return waiting[0]


def _close_abandoned_run(flow_run_id: str, message: str) -> None:
    """Best effort: the paused run whose process died should not look like it still waits."""
    from prefect import get_client
    from prefect.states import Cancelled

    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(UUID(flow_run_id), Cancelled(message=message), force=True)
    except Exception as error:  # the Prefect API of a dead run may be gone with it
        print(f"note: could not close flow run {flow_run_id}: {error}")


def answer_approval(layout: ProjectLayout, registry, decision: Literal["approve", "reject"], by: str,
                    comment: str, version: str | None = None) -> str:
    """Answer the version waiting for approval; says what happened."""
    pending = _pick_pending(registry, version)
    flow_run_id = pending.tags.get("approval_flow_run")
    approval = Approval(decision == "approve", by=by, comment=comment, how="person")
    done = "approved" if approval.approved else "rejected"
    try:
        # The waiting run holds the project lock for as long as it lives. A free lock means it is
        # gone (crash, restart, Ctrl-C), so the decision is applied here instead.
        with exclusive_run(layout.run_lock, wait=False):
            previous = apply_decision(registry, pending.version, approval)
            if flow_run_id:
                _close_abandoned_run(flow_run_id, f"process ended while paused; {done} later by {by}")
            was = f" (was v{previous})" if previous else ""
            outcome = f"v{pending.version} is champion{was}" if approval.approved else "champion unchanged"
            return f"{done} v{pending.version} (its run had ended; applied here): {outcome}"
    except RunInProgress:
        from prefect.flow_runs import resume_flow_run

        resume_flow_run(UUID(flow_run_id), run_input={"decision": decision, "by": by, "comment": comment})
        return f"{done} v{pending.version}; its waiting run {flow_run_id} goes on"
