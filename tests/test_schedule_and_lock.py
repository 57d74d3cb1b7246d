"""Scheduled retraining is a real Prefect deployment; only one retraining runs at a time."""

from __future__ import annotations

import threading
import time

import pytest

from components.config import ScheduleParams
from components.layout import ProjectLayout
from components.lifecycle.locking import RunInProgress, exclusive_run
from components.lifecycle.tracking import RunOutcome
from tests.project import make_project


def test_schedule_deployment_is_created_with_cron_and_a_limit_of_one(tmp_path, prefect_api):
    from prefect import get_client

    from flows.schedule import retrain_deployment

    deployment_id = retrain_deployment(tmp_path, ScheduleParams(cron="*/30 2 * * 1-5", timezone="Europe/Paris")).apply()
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
    assert [s.schedule.cron for s in deployment.schedules] == ["*/30 2 * * 1-5"]
    assert deployment.schedules[0].schedule.timezone == "Europe/Paris"
    assert deployment.schedules[0].active
    assert deployment.parameters == {"project_dir": str(tmp_path.resolve()), "when_running": "skip"}
    assert deployment.concurrency_limit == 1 or deployment.global_concurrency_limit.limit == 1
    assert str(deployment.concurrency_options.collision_strategy).endswith("CANCEL_NEW")


def test_a_second_run_waits_for_the_first_or_is_refused(tmp_path):
    lock = tmp_path / "run.lock"
    events: list[str] = []

    def second_run():
        with exclusive_run(lock, wait=True, on_wait=lambda message: events.append("waiting")):
            events.append("second started")

    with exclusive_run(lock, wait=False):
        with pytest.raises(RunInProgress, match="already in progress.*pid"):
            with exclusive_run(lock, wait=False):
                pass
        waiter = threading.Thread(target=second_run)
        waiter.start()
        time.sleep(0.5)
        events.append("first finished")
    waiter.join(timeout=10)
    assert events == ["waiting", "first finished", "second started"]


@pytest.mark.slow
def test_retrain_while_another_run_holds_the_project_is_skipped_and_says_so(tmp_path, tiny_base_model, prefect_api):
    from flows.retrain import retrain

    root = make_project(tmp_path / "project", tiny_base_model, rows=200)
    with exclusive_run(ProjectLayout(root).run_lock, wait=False):
        started = time.perf_counter()
        result = retrain(project_dir=str(root), when_running="skip")
    assert result["status"] == RunOutcome.SKIPPED
    assert "already in progress" in result["message"]
    assert time.perf_counter() - started < 30
    assert not (root / "data").exists()
