"""Scheduled retraining: a Prefect deployment of the retraining flow with a cron schedule.

At most one run of the deployment at a time (Prefect's deployment concurrency limit), on top of
the project lock every run takes, so a run started by hand and a scheduled one never overlap.
"""

from __future__ import annotations

from pathlib import Path

from components.config import ScheduleParams
from flows.retrain import retrain


def retrain_deployment(project_dir: Path, schedule: ScheduleParams):
    from prefect.client.schemas.objects import (
        ConcurrencyLimitConfig,
        ConcurrencyLimitStrategy,
    )
    from prefect.schedules import Cron

    strategy = ConcurrencyLimitStrategy.ENQUEUE if schedule.when_running == "wait" else ConcurrencyLimitStrategy.CANCEL_NEW
    return retrain.to_deployment(
        name=schedule.deployment_name,
        schedule=Cron(schedule.cron, timezone=schedule.timezone),
        parameters={"project_dir": str(project_dir.resolve()), "when_running": schedule.when_running},
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=strategy),
        tags=["tunegate", "retrain"],
        description=f"Retrain {project_dir.resolve()} on cron '{schedule.cron}' ({schedule.timezone})",
    )


def serve_schedule(project_dir: Path, schedule: ScheduleParams) -> None:
    """Register the deployment and run its scheduled flow runs in this process until stopped."""
    from prefect import serve

    serve(retrain_deployment(project_dir, schedule))
