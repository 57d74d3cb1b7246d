"""Scheduled retraining and monitoring: Prefect deployments of the retraining flow (schedule.cron) and of
the monitoring flow (monitor.cron), served by one process.

At most one run of the deployment at a time (Prefect's deployment concurrency limit), on top of
the project lock every run takes, so a run started by hand and a scheduled one never overlap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from components.config import ScheduleParams
from components.config.monitor import MonitorParams


def retrain_deployment(project_dir: Path, schedule: ScheduleParams):
    from prefect.client.schemas.objects import (
        ConcurrencyLimitConfig,
        ConcurrencyLimitStrategy,
    )
    from prefect.schedules import Cron

    from flows.retrain import retrain  # here, not above: it imports torch, which monitoring alone never needs

    strategy = ConcurrencyLimitStrategy.ENQUEUE if schedule.when_running == "wait" else ConcurrencyLimitStrategy.CANCEL_NEW
    return retrain.to_deployment(
        name=schedule.deployment_name,
        schedule=Cron(schedule.cron, timezone=schedule.timezone),
        parameters={"project_dir": str(project_dir.resolve()), "when_running": schedule.when_running},
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=strategy),
        tags=["tunegate", "retrain"],
        description=f"Retrain {project_dir.resolve()} on cron '{schedule.cron}' ({schedule.timezone})",
    )


def monitor_deployment(project_dir: Path, params: MonitorParams):
    """The monitoring flow on monitor.cron; at most one run at a time (a late one is dropped, not queued:
    the next run reads newer traffic anyway)."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    from flows.monitor import monitor

    return monitor.to_deployment(
        name=params.deployment_name,
        schedule=Cron(params.cron, timezone=params.timezone),
        parameters={"project_dir": str(project_dir.resolve())},
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        tags=["tunegate", "monitor"],
        description=f"Monitor live traffic of {project_dir.resolve()} on cron '{params.cron}' ({params.timezone})",
    )


def serve_schedule(project_dir: Path, schedule: ScheduleParams, monitor: MonitorParams | None = None,
                   only: Literal["retrain", "monitor"] | None = None) -> None:
    """Register the deployments and run their scheduled flow runs in this process until stopped."""
    from prefect import serve

    deployments = []
    if only in (None, "retrain"):
        deployments.append(retrain_deployment(project_dir, schedule))
    if only in (None, "monitor"):
        deployments.append(monitor_deployment(project_dir, monitor or MonitorParams()))
    serve(*deployments)
