"""An approval survives the death of the process that asked for it: answering later deploys the
version that waited, once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from components.layout import ProjectLayout
from components.lifecycle.registry import CHAMPION, ModelRegistry, resolve_tracking_uri
from tests.project import make_project
from tunegate.cli import main

pytestmark = pytest.mark.slow


def test_approving_after_the_waiting_run_died_deploys_that_version_once(tmp_path, tiny_base_model, prefect_api, capsys):
    root = make_project(tmp_path / "project", tiny_base_model)
    log = (tmp_path / "run.log").open("w")
    env = {**os.environ, "PREFECT_HOME": str(root / ".prefect")}
    env.pop("PREFECT_API_URL", None)  # the run gets its own Prefect, which dies with it
    # A session of its own, so killing it takes its Prefect server down too, as a reboot would.
    run = subprocess.Popen([sys.executable, "-m", "tunegate", "--project", str(root), "run", "--no-serve"],
                           env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    registry = ModelRegistry(resolve_tracking_uri(None, ProjectLayout(root).mlflow_dir), "tiny-sentiment")
    deadline = time.monotonic() + 600
    try:
        while "waits for approval" not in (tmp_path / "run.log").read_text():
            assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(1)
        time.sleep(2)  # let it reach the pause
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
    (pending,) = registry.find_versions(approval="pending")
    assert CHAMPION not in registry.aliases()

    assert main(["--project", str(root), "approve", "--by", "carol", "--comment", "fine after the restart"]) == 0
    assert f"approved v{pending.version}" in capsys.readouterr().out
    assert registry.aliases()[CHAMPION] == pending.version
    tags = registry.version(pending.version).tags
    assert (tags["approval"], tags["approval_by"], tags["approval_how"]) == ("approved", "carol", "person")
    assert [(e["action"], e["version"], e["by"]) for e in registry.history()] == [("promote", pending.version, "carol")]

    # Nothing is asked or applied twice.
    assert main(["--project", str(root), "approve", "--by", "dave"]) == 2
    assert "no version" in capsys.readouterr().err
    assert len(registry.history()) == 1
