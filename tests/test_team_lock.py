"""One retraining per registered model at a time across project folders (and machines): the lock a
real `prefect server start` holds, taken by real `tunegate run` processes."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.project import make_project
from tests.servers import free_port, stop_process, wait_until_answers

pytestmark = pytest.mark.slow

BAD_CSV = "words,mood\nfine film,positive\n"  # lacks the configured columns: ingest stops at once


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory) -> str:
    """A real Prefect server on 127.0.0.1, on its own database; its API URL."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    try:
        wait_until_answers(f"{url}/health", server, log=(home / "server.log").read_text)
        yield url
    finally:
        stop_process(server)
        log.close()


def project(root: Path, base_model: Path, model_name: str, when_running: str, bad_data: bool = False) -> Path:
    root = make_project(root, base_model, rows=200, registry={"model_name": model_name},
                        schedule={"when_running": when_running})
    if bad_data:  # the run takes its locks, then stops at ingest
        (root / "incoming" / "reviews.csv").write_text(BAD_CSV)
    return root


class UnansweringTrackingServer:
    """An MLflow tracking URI whose server takes connections and never answers, until `close()`: then
    every request waiting on it fails at once (connection reset). A run pointed at it ingests, then
    sits in its first registry call, holding its locks without using the CPU, until the test chooses
    to make it fail: a run held up by a tracking server that hangs, as one may."""

    def __init__(self):
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)  # connections complete in the kernel's backlog and are never accepted
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def waiting(self) -> int:
        """Connections waiting in the backlog: a listening socket's receive queue in /proc/net/tcp (Linux)."""
        port = f"{self._listener.getsockname()[1]:04X}"
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(f":{port}") and fields[3] == "0A":  # 0A: LISTEN
                return int(fields[4].split(":")[1], 16)
        return 0

    def close(self) -> None:
        self._listener.close()  # resets the connections waiting in the backlog; a second close is a no-op


class Run:
    """`tunegate run --no-serve` in its own process, talking to the shared Prefect server."""

    def __init__(self, root: Path, api_url: str, **env_vars: str):
        self.log_path = root.parent / f"{root.name}.log"
        env = {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(root / ".prefect"), **env_vars}
        self.started = time.monotonic()
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "tunegate", "--project", str(root), "run",
                                             "--no-serve"], env=env, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log():
            assert self.process.poll() is None, f"ended before {text!r}:\n{self.log()[-4000:]}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{self.log()[-4000:]}"
            time.sleep(0.3)

    def finish(self, timeout: float = 240) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after {timeout} s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def lock_time(self, what: str) -> datetime:
        """When this run took ('took') or gave back ('releasing') the model's lock, as it logged it."""
        found = re.search(rf"team lock: {what} \S+ at (\S+Z)", self.log())
        assert found, f"no 'team lock: {what}' line:\n{self.log()[-4000:]}"
        return datetime.fromisoformat(found.group(1).replace("Z", "+00:00"))


def limit_state(api_url: str, name: str):
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name)


def test_a_second_run_of_the_same_model_is_skipped_or_waits_for_the_first(tmp_path, tiny_base_model,
                                                                          prefect_server):
    from uuid import UUID

    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    first_root = project(tmp_path / "first", tiny_base_model, "shared-model", "skip")
    skipper_root = project(tmp_path / "skipper", tiny_base_model, "shared-model", "skip", bad_data=True)
    waiter_root = project(tmp_path / "waiter", tiny_base_model, "shared-model", "wait", bad_data=True)
    runs: list[Run] = []
    tracking = UnansweringTrackingServer()
    try:
        # The first run takes both locks, ingests its data, then waits on the tracking server.
        first = Run(first_root, prefect_server, MLFLOW_TRACKING_URI=tracking.url,
                    MLFLOW_HTTP_REQUEST_MAX_RETRIES="0")
        runs.append(first)
        first.wait_for("team lock: took tunegate-retrain-shared-model")
        skipper, waiter = Run(skipper_root, prefect_server), Run(waiter_root, prefect_server)
        runs += [skipper, waiter]

        assert skipper.finish() == 0, skipper.log()[-4000:]
        said = skipper.log()
        assert "retraining skipped: model 'shared-model' is being retrained by another run" in said, said[-4000:]
        for where in (f"host {socket.gethostname()}", f"project {first_root.resolve()}",
                      "tunegate-retrain-shared-model"):
            assert where in said
        holder_run = re.search(r"flow run (\S+) \(([0-9a-f-]{36})\)", said)
        assert holder_run, said[-4000:]
        with temporary_settings({PREFECT_API_URL: prefect_server}), get_client(sync_client=True) as client:
            named = client.read_flow_run(UUID(holder_run.group(2)))
        assert (named.name, named.parameters["project_dir"]) == (holder_run.group(1), str(first_root.resolve()))
        assert time.monotonic() - skipper.started < 90
        assert not (skipper_root / "data").exists()  # it ended before ingesting anything

        waiter.wait_for("waiting for the retraining of model 'shared-model' in progress")
        assert holder_run.group(2) in waiter.log()
        time.sleep(2)  # a waiter that ignored the lock would be past it by now
        assert "team lock: took" not in waiter.log()

        # The tracking server now drops its connections and the first run fails: its lock must be given
        # back all the same. First the run must be waiting on it (after ingesting, which takes longer than
        # the steps above when it imports the PII scanner): a close before it connects is a refusal, not a reset.
        deadline = time.monotonic() + 240
        while not tracking.waiting():
            assert first.process.poll() is None and time.monotonic() < deadline, first.log()[-4000:]
            time.sleep(0.5)
        tracking.close()
        assert first.finish() != 0
        assert "Connection reset" in first.log() or "ConnectionReset" in first.log(), first.log()[-4000:]
        assert waiter.finish() != 0  # it ran, on its own bad data, once the first had ended
        assert waiter.lock_time("took") >= first.lock_time("releasing")
        assert "no text column 'review'" in waiter.log()
        assert limit_state(prefect_server, "tunegate-retrain-shared-model").active_slots == 0
    finally:
        tracking.close()
        for run in runs:
            run.stop()


def test_a_failed_run_releases_the_lock_and_other_models_are_not_blocked(tmp_path, tiny_base_model, prefect_server):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from components.lifecycle.locking import RunInProgress
    from flows.team_lock import model_lock

    failing_root = project(tmp_path / "failing", tiny_base_model, "failing-model", "skip", bad_data=True)
    with temporary_settings({PREFECT_API_URL: prefect_server}):
        with model_lock("busy-model", tmp_path / "elsewhere", wait=False):
            refused = pytest.raises(RunInProgress, match="'busy-model' is being retrained by another run.*pid")
            with refused, model_lock("busy-model", tmp_path / "another", wait=False):
                pass
            failing = Run(failing_root, prefect_server)
            try:
                assert failing.finish() != 0
            finally:
                failing.stop()
        said = failing.log()
        assert "team lock: took tunegate-retrain-failing-model" in said, said[-4000:]  # busy-model did not block it
        assert "skipped" not in said
        assert "team lock: releasing tunegate-retrain-failing-model" in said
        assert limit_state(prefect_server, "tunegate-retrain-failing-model").active_slots == 0
        with model_lock("failing-model", tmp_path / "next", wait=False) as name:  # free at once
            assert name == "tunegate-retrain-failing-model"


def test_a_slot_left_behind_is_named_with_the_command_that_frees_it(tmp_path, prefect_server):
    """A server restarted with its default in-memory lease storage forgets the lease, not the taken slot."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from components.lifecycle.locking import RunInProgress
    from flows.team_lock import model_lock

    with temporary_settings({PREFECT_API_URL: prefect_server}):
        with model_lock("orphan-model", tmp_path, wait=False):  # creates the limit
            pass
        with get_client(sync_client=True) as client:  # what the restart leaves: a slot no lease accounts for
            client.update_global_concurrency_limit("tunegate-retrain-orphan-model",
                                                   GlobalConcurrencyLimitUpdate(active_slots=1))
        with pytest.raises(RunInProgress) as refused, model_lock("orphan-model", tmp_path, wait=False):
            pass
        command = re.search(r"`(prefect gcl update \S+ --active-slots 0)`", str(refused.value))
        assert command, str(refused.value)
        env = {**os.environ, "PREFECT_API_URL": prefect_server}
        subprocess.run([sys.executable, "-m", *command.group(1).split()], env=env, check=True, capture_output=True,
                       timeout=120)
        with model_lock("orphan-model", tmp_path, wait=False) as name:
            assert name == "tunegate-retrain-orphan-model"
