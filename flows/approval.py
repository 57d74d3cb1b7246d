"""The human approval gate.

A run that needs a person tags its version `approval=pending` in the registry and pauses for a
typed answer, given in the Prefect UI or with `tunegate approve` / `tunegate reject`. The registry
tag, not the waiting process, is the record: if that process died, answering later still applies
the decision to the right version, once.

Whoever answers writes the decision with their own MLflow client: `tunegate approve` tags the
version and moves the alias itself, then resumes the waiting run only to let it finish. With the
MLflow server checking logins (basic-auth), the server so judges the answerer's permission, not
the flow's service account's, and the approver recorded is the answerer's MLflow user. An answer
that carries no MLflow login (the Prefect UI form) is then not applied by the flow.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass, replace
from typing import Literal
from uuid import UUID

from prefect.input import RunInput

from components.layout import ProjectLayout
from components.lifecycle.locking import RunInProgress, exclusive_run
from components.lifecycle.registry_auth import EDIT, RegistryAccessError
from flows.team_lock import holding_flow_run

RETRAIN_FLOW_NAME = "tunegate-retrain"
PENDING = "pending"


class ApprovalInput(RunInput):
    decision: Literal["approve", "reject"]
    by: str
    comment: str = ""
    # Set by `tunegate approve/reject`: the answerer already wrote the decision to the registry. The
    # flow does not take this on trust: it finds the decision in the registry or refuses.
    applied: bool = False


@dataclass(frozen=True)
class Approval:
    approved: bool
    by: str
    comment: str
    how: Literal["person", "auto-local-profile", "timeout"]
    applied: bool = False  # already written to the registry by whoever answered

    def as_tags(self) -> dict[str, str]:
        return {"approval": "approved" if self.approved else "rejected", "approval_by": self.by,
                "approval_comment": self.comment, "approval_how": self.how}


def auto_approval(version: str) -> Approval:
    return Approval(True, by=f"{getpass.getuser()} (auto)", how="auto-local-profile",
                    comment=f"version {version} approved automatically by the 'local' approval profile")


def record_decision(registry, version: str, approval: Approval) -> str | None:
    """Write the answer with this registry client: tags on the version, and for an approval the
    champion alias. The permission is checked before the first write, so a refusal changes nothing.
    Returns the old champion."""
    action = f"{'approve' if approval.approved else 'reject'} v{version}"
    registry.require(EDIT, action)
    # An approval of a version whose files are not the registered ones is refused before it is recorded.
    verified = registry.verify(version) if approval.approved else None
    with registry.refusals_explained(action):
        registry.tag_version(version, approval.as_tags())
    if not approval.approved:
        return None
    previous = registry.promote(version, by=approval.by, reason=approval.comment or "approved", verified=verified)
    return previous.version if previous else None


class ApprovalNotApplied(RegistryAccessError):
    """An answer the flow may not write with its own MLflow login, or that the registry does not show."""


def apply_decision(registry, version: str, approval: Approval) -> str | None:
    """The retraining flow's side of an answer; returns the old champion.

    An answer written by the answerer (`applied`) is checked against the registry and not written
    again. A timeout never overwrites an answer the registry already holds. Without MLflow
    authentication the flow writes any other answer itself, as it always did; with it, the flow
    writes only its own decisions (auto-approval, timeout), never a person's."""
    if approval.applied:
        return _already_recorded(registry, version, approval)
    current = registry.version(version).tags.get("approval")
    if approval.how == "timeout" and current not in (None, PENDING):
        print(f"v{version} was answered ({current}) as the wait ran out; keeping that answer")
        return None
    identity = registry.identity()
    if identity is not None and approval.how == "person":
        raise ApprovalNotApplied(
            f"v{version} was answered '{'approve' if approval.approved else 'reject'}' by {approval.by!r} without an "
            f"MLflow login (the Prefect UI form), and the MLflow server checks who writes: this run does not apply a "
            f"person's answer with its own MLflow user {identity.username!r}. v{version} still waits: answer with "
            "`tunegate approve` or `tunegate reject`, which act with your own MLflow credentials.")
    if identity is not None and approval.how == "auto-local-profile":
        approval = replace(approval, by=f"{identity.username} (auto)")  # the account that approved, by policy
    return record_decision(registry, version, approval)


def _already_recorded(registry, version: str, approval: Approval) -> str | None:
    from components.lifecycle.registry import CHAMPION

    expected = "approved" if approval.approved else "rejected"
    found = registry.version(version).tags.get("approval")
    if found != expected or (approval.approved and registry.aliases().get(CHAMPION) != str(version)):
        raise ApprovalNotApplied(
            f"the answer to v{version} says it was {expected} by {approval.by!r} and already written, but the registry "
            f"shows approval={found!r}: not applying it from here. v{version} still waits: answer with "
            "`tunegate approve` or `tunegate reject`.")
    if not approval.approved:
        return None
    promoted = [event for event in registry.history() if event["version"] == str(version)]
    return promoted[-1]["previous"] if promoted else None


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
    return Approval(answer.decision == "approve", by=answer.by, comment=answer.comment, how="person",
                    applied=answer.applied)


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
    except Exception as error:  # noqa: BLE001 - the Prefect API of a dead run may be gone with it
        print(f"note: could not close flow run {flow_run_id}: {error}")


def answer_approval(layout: ProjectLayout, registry, decision: Literal["approve", "reject"], by: str | None,
                    comment: str, version: str | None = None) -> str:
    """Answer the version waiting for approval with `registry`'s own MLflow client; says what happened.

    `by`: who answers. With MLflow authentication on, the authenticated user is recorded, and a
    different `by` is refused; without it, `by` (default: the login name) is recorded."""
    pending = _pick_pending(registry, version)
    by = registry.actor(by)
    flow_run_id = pending.tags.get("approval_flow_run")
    approval = Approval(decision == "approve", by=by, comment=comment, how="person")
    done = "approved" if approval.approved else "rejected"
    try:
        # The waiting run holds the project lock for as long as it lives, and with a Prefect server the
        # model's team lock too (flows/team_lock.py), wherever it runs. Both free means it is gone
        # (crash, restart, Ctrl-C): the decision is applied here and its run closed.
        if flow_run_id and holding_flow_run(registry.model_name) == flow_run_id:
            raise RunInProgress(f"flow run {flow_run_id} holds the model's team lock")
        with exclusive_run(layout.run_lock, wait=False):
            previous = record_decision(registry, pending.version, approval)
            if flow_run_id:
                _close_abandoned_run(flow_run_id, f"process ended while paused; {done} later by {by}")
            was = f" (was v{previous})" if previous else ""
            outcome = f"v{pending.version} is champion{was}" if approval.approved else "champion unchanged"
            return f"{done} v{pending.version} (its run had ended; applied here): {outcome}"
    except RunInProgress:
        pass
    from prefect.flow_runs import resume_flow_run

    # The run waits: the decision is still written here, with the answerer's credentials (a refusal
    # raises before any write and before the run is resumed); the run then finds it and finishes.
    record_decision(registry, pending.version, approval)
    resume_flow_run(UUID(flow_run_id), run_input={"decision": decision, "by": by, "comment": comment, "applied": True})
    return f"{done} v{pending.version} by {by}; its waiting run {flow_run_id} goes on"
