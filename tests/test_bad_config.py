"""Settings that cannot work stop the run early, with a message that says what to fix."""

from __future__ import annotations

import pytest

import flows.retrain  # noqa: F401 - Prefect's console logging set up before any test captures the terminal
from tests.project import make_project, read_params, write_params
from tunegate.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture
def project(tmp_path, tiny_base_model, prefect_api, capfd):
    root = make_project(tmp_path / "project", tiny_base_model, rows=200)
    capfd.readouterr()  # what setting up the project printed is not the run's output
    return root


@pytest.fixture
def run(capfd):
    """`tunegate run` as a user types it, on the session's Prefect server (a process of its own costs a
    Prefect server start, ~15 s a test): its exit code and all it wrote to the terminal."""
    def run_in(project) -> tuple[int, str]:
        code = main(["--project", str(project), "run", "--no-serve"])
        written = capfd.readouterr()
        return code, written.out + written.err
    return run_in


def change(project, section: str, **values) -> None:
    params = read_params(project)
    params[section].update(values)
    write_params(project, params)


def test_unknown_base_model_path_fails_before_any_data_work(project, run):
    change(project, "model", base_model=str(project / "models" / "bert-tiny"))
    code, output = run(project)
    assert code == 2
    assert "model.base_model" in output and "does not exist" in output
    assert not (project / "data").exists()


def test_missing_text_column_names_the_file_and_the_columns_found(project, run):
    change(project, "data", text_column="body")
    code, output = run(project)
    assert code == 2
    assert "reviews.csv" in output and "'body'" in output and "review" in output
    assert not (project / "artifacts" / "model").exists()


def test_label_not_in_data_stops_before_training(project, run):
    change(project, "data", labels=["negative", "neutral", "positive"])
    code, output = run(project)
    assert code == 2
    assert "neutral" in output and "data.min_examples_per_label" in output  # the reason and the setting
    assert "data/reports/0000-reviews/validation.json" in output  # where to read the whole report
    assert "Traceback" not in output  # a user error is its reason, not a stack (the flow's logs keep it)
    assert not (project / "artifacts" / "model").exists()
