"""Settings that cannot work stop the run early, with a message that says what to fix."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.project import make_project, read_params, write_params

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path, tiny_base_model):
    return make_project(tmp_path / "project", tiny_base_model, rows=200)


def run(project) -> tuple[int, str]:
    """`tunegate run` as a user types it, in its own process with its own Prefect."""
    env = {**os.environ, "PREFECT_HOME": str(project / ".prefect")}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run([sys.executable, "-m", "tunegate", "--project", str(project), "run", "--no-serve"],
                          env=env, capture_output=True, text=True, timeout=600)
    return done.returncode, done.stdout + done.stderr


def change(project, section: str, **values) -> None:
    params = read_params(project)
    params[section].update(values)
    write_params(project, params)


def test_unknown_base_model_path_fails_before_any_data_work(project):
    change(project, "model", base_model=str(project / "models" / "bert-tiny"))
    code, output = run(project)
    assert code == 2
    assert "model.base_model" in output and "does not exist" in output
    assert not (project / "data").exists()


def test_missing_text_column_names_the_file_and_the_columns_found(project):
    change(project, "data", text_column="body")
    code, output = run(project)
    assert code == 2
    assert "reviews.csv" in output and "'body'" in output and "review" in output
    assert not (project / "artifacts" / "model").exists()


def test_label_not_in_data_stops_before_training(project):
    change(project, "data", labels=["negative", "neutral", "positive"])
    code, output = run(project)
    assert code == 2
    assert "neutral" in output and "data.min_examples_per_label" in output  # the reason and the setting
    assert "data/reports/0000-reviews/validation.json" in output  # where to read the whole report
    assert "Traceback" not in output  # a user error is its reason, not a stack (the flow's logs keep it)
    assert not (project / "artifacts" / "model").exists()
