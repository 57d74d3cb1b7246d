"""The hyperparameter sweep: which trials a sweep declares, how a trial's params are checked, and a
two-trial sweep on the tiny project whose winner the train stage takes over without training again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from components.config import ConfigError, SweepParams, load_params
from components.layout import ProjectLayout
from components.lifecycle.registry import ModelRegistry, resolve_tracking_uri
from components.lifecycle.tracking import RunOutcome
from components.model.sweep import (
    SweepFailed,
    TrialResult,
    best_trial,
    params_with,
    threads_per_trial,
    trial_overrides,
)
from tests.project import make_project, read_params, tiny_params, write_params

SPACE = {"train.learning_rate": [1e-4, 5e-5], "train.batch_size": [16, 32, 64]}


def sweep(**values) -> SweepParams:
    return SweepParams(**{"enabled": True, "space": SPACE, **values})


def test_grid_is_every_combination_first_key_slowest():
    trials = trial_overrides(sweep(method="grid"))
    assert trials == [
        {"train.learning_rate": 1e-4, "train.batch_size": 16}, {"train.learning_rate": 1e-4, "train.batch_size": 32},
        {"train.learning_rate": 1e-4, "train.batch_size": 64}, {"train.learning_rate": 5e-5, "train.batch_size": 16},
        {"train.learning_rate": 5e-5, "train.batch_size": 32}, {"train.learning_rate": 5e-5, "train.batch_size": 64},
    ]
    assert trial_overrides(sweep(method="grid")) == trials  # stable


def test_grid_drops_repeated_values():
    trials = trial_overrides(SweepParams(space={"train.epochs": [1, 2, 1]}))
    assert trials == [{"train.epochs": 1}, {"train.epochs": 2}]


def test_random_draws_distinct_points_of_the_grid_reproducibly():
    grid = trial_overrides(sweep(method="grid"))
    first = trial_overrides(sweep(method="random", trials=4, seed=3))
    assert len(first) == 4
    assert len({json.dumps(t, sort_keys=True) for t in first}) == 4
    assert all(t in grid for t in first)
    assert trial_overrides(sweep(method="random", trials=4, seed=3)) == first
    others = {json.dumps(trial_overrides(sweep(method="random", trials=4, seed=s))) for s in range(10)}
    assert len(others) > 1  # the seed matters


def test_random_with_more_trials_than_points_runs_the_grid():
    assert trial_overrides(sweep(method="random", trials=50)) == trial_overrides(sweep(method="grid"))


@pytest.fixture
def params(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(tmp_path / "model")))
    return load_params(tmp_path / "params.yaml", env={})


def test_params_with_replaces_train_values_and_keeps_the_rest(params):
    changed = params_with(params, {"train.learning_rate": 0.01, "train.epochs": 5})
    assert (changed.train.learning_rate, changed.train.epochs) == (0.01, 5)
    assert changed.train.batch_size == params.train.batch_size
    assert changed.model == params.model and changed.data == params.data
    assert params.train.epochs == 3  # the original is untouched


@pytest.mark.parametrize("overrides, says", [
    ({"train.learning_rate": -1.0}, "train.learning_rate"),
    ({"train.epochs": "many"}, "train.epochs"),
    ({"train.lr_schedule": "exponential"}, "train.lr_schedule"),
    ({"train.no_such_setting": 1}, "train.no_such_setting"),
    ({"model.max_length": 64}, "only train.<setting>"),
])
def test_params_with_refuses_bad_values_saying_which(params, overrides, says):
    with pytest.raises(ConfigError, match="sweep") as caught:
        params_with(params, overrides)
    assert says in str(caught.value)


def test_the_students_distillation_knobs_can_be_swept_when_distillation_is_on(tmp_path):
    from components.config import parse_params

    raw = tiny_params(tmp_path / "model", distill={"enabled": True, "teacher_model": "builtin:all-mpnet-base-v2"},
                      sweep={"enabled": True, "space": {"distill.alpha": [0.2, 0.5], "distill.temperature": [1, 4]}})
    params = parse_params(raw, source="params.yaml", env={})
    changed = params_with(params, {"distill.alpha": 0.2, "distill.temperature": 4.0, "train.epochs": 5})
    assert (changed.distill.alpha, changed.distill.temperature, changed.train.epochs) == (0.2, 4.0, 5)
    assert changed.distill.teacher_model == params.distill.teacher_model and params.distill.alpha == 0.5

    with pytest.raises(ConfigError, match="only shape a distilled student's loss"):
        parse_params({**raw, "distill": {"enabled": False}}, source="params.yaml", env={})
    # What would retrain the teacher is not the sweep's to vary: its logits are the distill stage's output.
    for key, value in (("distill.teacher_model", "builtin:all-minilm-l6-v2"), ("distill.teacher_train", {})):
        with pytest.raises(ConfigError, match="cannot be swept"):
            parse_params({**raw, "sweep": {"space": {key: [value]}}}, source="params.yaml", env={})
        with pytest.raises(ConfigError, match="distill.temperature or distill.alpha can be swept"):
            params_with(params, {key: value})
    with pytest.raises(ConfigError, match="distill.alpha"):
        params_with(params, {"distill.alpha": 1.5})  # the value is checked too


def test_best_trial_is_the_highest_score_and_the_lower_index_on_ties(tmp_path):
    def result(index, score):
        return TrialResult(index, {}, score, "macro_f1", 1, tmp_path, tmp_path)

    assert best_trial([result(0, 0.7), result(1, 0.9), result(2, 0.8)]).index == 1
    assert best_trial([result(2, 0.9), result(0, 0.9), result(1, 0.5)]).index == 0


def test_threads_are_shared_out_between_trials_running_at_once():
    assert threads_per_trial(2, 4, cores=8) == 4
    assert threads_per_trial(4, 4, cores=2) == 1
    assert threads_per_trial(4, 1, cores=8) == 8  # one trial: no one to share with


# --- end to end on the tiny project -------------------------------------------------------------
SWEEP_SPACE = {"train.learning_rate": [0.0, 0.005]}  # zero leaves the head random: trial 1 must win


def prepared_project(root: Path, base_model: Path, space: dict | None = None,
                     **sections) -> tuple[ProjectLayout, ModelRegistry]:
    from components.lifecycle.versioning import run_dvc
    from tunegate.cli import main

    make_project(root, base_model, **sections,
                 sweep={"enabled": True, "method": "grid", "max_concurrency": 2, "space": space or SWEEP_SPACE})
    assert main(["--project", str(root), "ingest"]) == 0
    run_dvc(root, "repro", "preprocess", "adapt", "start", "teacher", "distill", capture=True)  # all train reads
    layout = ProjectLayout(root)
    return layout, ModelRegistry(resolve_tracking_uri(None, layout.mlflow_dir), "tiny-sentiment",
                                 artifact_root=layout.mlflow_dir / "artifacts")


def child_runs(registry: ModelRegistry, parent_run_id: str) -> list:
    experiment = registry.client.get_experiment_by_name("tunegate")
    return registry.client.search_runs([experiment.experiment_id],
                                       filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_base_model, prefect_api):
    from flows.sweep import run_sweep

    layout, registry = prepared_project(tmp_path_factory.mktemp("sweep") / "project", tiny_base_model)
    params = load_params(layout.params_file)
    parent = registry.start_run("tunegate", "retrain-parent", {})
    summary = run_sweep(params, layout, registry, parent)
    return layout, registry, parent, summary


@pytest.mark.slow
def test_each_trial_is_a_nested_run_with_its_metrics(swept):
    layout, registry, parent, summary = swept
    runs = sorted(child_runs(registry, parent), key=lambda r: int(r.data.tags["sweep_trial"]))
    assert [r.info.run_name for r in runs] == ["trial-00", "trial-01"]
    for run, learning_rate in zip(runs, [0.0, 0.005]):
        assert run.info.status == "FINISHED"
        assert float(run.data.params["train.learning_rate"]) == learning_rate
        assert {"best_score", "validation_macro_f1", "validation_loss"} <= set(run.data.metrics)
        epochs = registry.client.get_metric_history(run.info.run_id, "validation_macro_f1")
        assert sorted(m.step for m in epochs) == [1, 2, 3]
    assert runs[1].data.metrics["best_score"] > runs[0].data.metrics["best_score"]
    # max_concurrency 2: the two trials ran side by side
    assert runs[1].info.start_time < runs[0].info.end_time and runs[0].info.start_time < runs[1].info.end_time
    assert summary["best_trial"] == 1 and summary["best_overrides"] == {"train.learning_rate": 0.005}
    assert summary["best_run_id"] == runs[1].info.run_id and summary["failed"] == 0

    parent_run = registry.client.get_run(parent)
    assert parent_run.data.tags["sweep_best_trial"] == "trial-01"
    assert parent_run.data.tags["sweep_best.train.learning_rate"] == "0.005"
    assert parent_run.data.metrics["sweep_best_score"] == pytest.approx(summary["best_score"])
    assert parent_run.data.metrics["sweep_trial_00_best_score"] == pytest.approx(runs[0].data.metrics["best_score"])
    assert not (layout.artifacts / "sweep" / "trial-00" / "model").exists()  # a loser's weights are not kept
    logged = json.loads(Path(registry.client.download_artifacts(parent, "sweep/summary.json")).read_text())
    assert [row["trial"] for row in logged["trials"]] == [0, 1]


@pytest.mark.slow
def test_the_winner_is_applied_and_dvc_takes_it_as_the_train_stage(swept):
    from components.lifecycle.versioning import run_dvc

    layout, _, _, summary = swept
    root = layout.root
    assert read_params(root)["train"]["learning_rate"] == 0.005
    assert read_params(root)["train"]["epochs"] == 3  # the rest stays as it was
    assert summary["previous_values"] == {"train.learning_rate": 0.002}
    winner = layout.artifacts / "sweep" / "trial-01"
    for name in ("model.safetensors", "config.json"):
        assert (layout.model_dir / name).read_bytes() == (winner / "model" / name).read_bytes()
    assert json.loads(layout.train_history.read_text()) == json.loads((winner / "train_history.json").read_text())

    status = run_dvc(root, "status", "--json", "train", capture=True)
    assert json.loads(status.stdout) == {}
    weights = (layout.model_dir / "model.safetensors").read_bytes()
    repro = run_dvc(root, "repro", "train", capture=True)
    assert "didn't change, skipping" in repro.stdout
    assert (layout.model_dir / "model.safetensors").read_bytes() == weights
    run_dvc(root, "repro", "evaluate", capture=True)  # evaluates the winner, as the chain goes on
    assert json.loads(layout.metrics_file.read_text())["accuracy"] >= 0.8
    assert (layout.model_dir / "model.safetensors").read_bytes() == weights


@pytest.mark.slow
def test_a_second_sweep_with_nothing_changed_trains_nothing(swept):
    from flows.sweep import run_sweep

    layout, registry, _, first = swept
    again = registry.start_run("tunegate", "retrain-again", {})
    summary = run_sweep(load_params(layout.params_file), layout, registry, again)
    assert summary["cached"] is True
    assert summary["best_overrides"] == first["best_overrides"]
    assert child_runs(registry, again) == []
    assert registry.client.get_run(again).data.tags["sweep_cached"] == "true"


@pytest.mark.slow
def test_a_failed_trial_does_not_stop_the_others_and_all_failing_fails_the_sweep(
        tmp_path, tiny_base_model, prefect_api, monkeypatch):
    import components.model.sweep as sweep_module
    from flows.sweep import run_sweep

    layout, registry = prepared_project(tmp_path / "project", tiny_base_model)
    real_command = sweep_module.trial_command

    def first_trial_crashes(directory, root, threads):
        if directory.name == "trial-00":
            return [real_command(directory, root, threads)[0], "-c", "raise SystemExit('trial boom')"]
        return real_command(directory, root, threads)

    monkeypatch.setattr(sweep_module, "trial_command", first_trial_crashes)
    parent = registry.start_run("tunegate", "retrain-parent", {})
    summary = run_sweep(load_params(layout.params_file), layout, registry, parent)
    assert summary["best_trial"] == 1 and summary["failed"] == 1
    failed = [row for row in summary["trials"] if row["status"] == "failed"]
    assert [row["trial"] for row in failed] == [0] and "trial boom" in failed[0]["error"]
    statuses = {r.data.tags["sweep_trial"]: r.info.status for r in child_runs(registry, parent)}
    assert statuses == {"0": "FAILED", "1": "FINISHED"}

    monkeypatch.setattr(sweep_module, "trial_command",
                        lambda directory, root, threads: [real_command(directory, root, threads)[0], "-c",
                                                          f"raise SystemExit('{directory.name} boom')"])
    (layout.artifacts / "sweep" / "summary.json").unlink()  # or the first sweep's result would stand
    with pytest.raises(SweepFailed) as caught:
        run_sweep(load_params(layout.params_file), layout, registry, registry.start_run("tunegate", "p", {}))
    assert "trial-00 boom" in str(caught.value) and "trial-01 boom" in str(caught.value)


@pytest.mark.slow
def test_a_sweep_of_the_distillation_weight_trains_students_of_one_teacher(tmp_path, tiny_base_model, prefect_api):
    from components.lifecycle.versioning import run_dvc
    from components.model.distill import DistillPaths
    from flows.sweep import run_sweep

    distill = {"enabled": True, "teacher_model": str(tiny_base_model), "alpha": 0.5,
               "teacher_train": {"epochs": 1, "learning_rate": 0.003, "num_threads": 1}}
    layout, registry = prepared_project(tmp_path / "project", tiny_base_model, space={"distill.alpha": [0.0, 0.9]},
                                        distill=distill)
    root, teacher = layout.root, DistillPaths(layout.artifacts)
    made_by_the_stages = {path: path.read_bytes()
                          for path in (teacher.teacher_model / "model.safetensors", teacher.targets)}
    parent = registry.start_run("tunegate", "retrain-parent", {})
    summary = run_sweep(load_params(layout.params_file), layout, registry, parent)

    runs = sorted(child_runs(registry, parent), key=lambda r: int(r.data.tags["sweep_trial"]))
    assert [float(r.data.params["distill.alpha"]) for r in runs] == [0.0, 0.9]
    assert all(float(r.data.params["distill.temperature"]) == 2.0 for r in runs)
    winner = summary["best_overrides"]["distill.alpha"]
    assert read_params(root)["distill"]["alpha"] == winner and summary["previous_values"] == {"distill.alpha": 0.5}
    assert json.loads(layout.train_history.read_text())["distill"]["alpha"] == winner
    # The students learnt from the one teacher: neither it nor its logits were made again.
    assert all(path.read_bytes() == content for path, content in made_by_the_stages.items())
    assert json.loads(run_dvc(root, "status", "--json", "train", capture=True).stdout) == {}

    # DVC tracks the knob for the train stage: another weight by hand makes the student stale.
    params = read_params(root)
    params["distill"]["alpha"] = 0.3
    write_params(root, params)
    assert "train" in json.loads(run_dvc(root, "status", "--json", "train", capture=True).stdout)


@pytest.mark.slow
def test_the_retrain_flow_sweeps_then_ships_the_winner(tmp_path, tiny_base_model, prefect_api):
    from components.lifecycle.registry import resolve_tracking_uri
    from flows.retrain import retrain

    root = tmp_path / "project"
    make_project(root, tiny_base_model, approval={"profile": "local"},
                 sweep={"enabled": True, "method": "grid", "max_concurrency": 2, "space": SWEEP_SPACE})
    result = retrain(project_dir=str(root))
    assert result["status"] == RunOutcome.PROMOTED, result
    assert read_params(root)["train"]["learning_rate"] == 0.005
    registry = ModelRegistry(resolve_tracking_uri(None, ProjectLayout(root).mlflow_dir), "tiny-sentiment")
    run = registry.client.get_run(result["run_id"])
    assert run.data.params["train.learning_rate"] == "0.005"  # logged after the sweep chose it
    assert len(child_runs(registry, result["run_id"])) == 2
    assert float(registry.version(result["version"]).tags["test_accuracy"]) >= 0.8
