"""`tunegate curve`: nested stratified subsets fixed by seed, the curve section's checks, and a two-method,
two-size curve on the tiny project that writes its nested MLflow runs, CSV, table and plot, then trains
nothing when run again."""

from __future__ import annotations

import csv
import json
from collections import Counter

import pytest

import flows.curve  # noqa: F401 - imports flows.retrain before capsys: Prefect's console-handler quirk
from components.config import ConfigError
from components.config.curve import CurveParams
from components.model.curve import (
    epochs_for,
    sentence_order,
    stratified_order,
    subset,
    subset_order,
    validation_interval,
)
from tests.project import make_project

LABELS = [0] * 140 + [1] * 60  # 70% / 30%


def test_subsets_are_nested_stratified_and_fixed_by_seed():
    order = stratified_order(LABELS, seed=3)
    assert sorted(order) == list(range(len(LABELS)))
    previous: set[int] = set()
    for size in (10, 20, 50, 100, 200):
        rows = subset(order, size)
        assert len(rows) == size and previous <= set(rows)  # the 20 contain the 10
        counts = Counter(LABELS[i] for i in rows)
        assert abs(counts[1] - 0.3 * size) <= 1  # each class in its share, within one row
        previous = set(rows)
    assert stratified_order(LABELS, seed=3) == order  # fixed by the seed
    assert subset(stratified_order(LABELS, seed=4), 20) != subset(order, 20)  # another seed, other rows


def test_token_labels_get_a_seeded_order_of_sentences():
    sentences = [[0, 1, 2]] * 30
    assert subset_order(sentences, 5) == sentence_order(30, 5) == sentence_order(30, 5)
    assert sorted(sentence_order(30, 5)) == list(range(30)) and sentence_order(30, 6) != sentence_order(30, 5)


def test_small_subsets_train_at_least_min_steps():
    assert epochs_for(rows=64, batch_size=32, epochs=2, min_steps=100) == 50
    assert epochs_for(rows=10_000, batch_size=32, epochs=2, min_steps=100) == 2
    assert epochs_for(rows=64, batch_size=32, epochs=2, min_steps=0) == 2
    # and validate as often as the recipe does: twice for a 2-epoch recipe, the last epoch included
    assert validation_interval(50, 2) == 25 and validation_interval(2, 2) == 1 and validation_interval(7, 2) == 4


@pytest.mark.parametrize("values, says", [
    ({"sizes": []}, "curve.sizes is empty"),
    ({"sizes": [0, 64]}, "positive"),
    ({"sizes": [64, 64]}, "duplicates"),
    ({"seeds": [1, 1]}, "distinct seeds"),
    ({"methods": {"odd": {"model.max_length": 16}}}, "train.<setting>"),
    ({"methods": {"odd": {"train.seed": 3}}}, "set by the curve itself"),
])
def test_the_curve_section_refuses_what_cannot_make_a_curve(values, says):
    with pytest.raises(ValueError, match=says):
        CurveParams(**values)


def test_choices_narrow_the_curve_and_unknown_methods_are_named():
    chosen = CurveParams().choose(["lora"], [16, "all"], [3])
    assert list(chosen.methods) == ["lora"] and chosen.sizes == [16, "all"] and chosen.seeds == [3]
    with pytest.raises(ConfigError, match=r"\['dora'\].*full, lora, prefix"):
        CurveParams().choose(["dora"])
    with pytest.raises(ConfigError, match="duplicates"):
        CurveParams().choose(sizes=[8, 8])


# --- end to end on the tiny project -------------------------------------------------------------------
CURVE = {"sizes": [16, 32], "seeds": [7], "min_steps": 0, "max_concurrency": 4,
         "methods": {"full": {"train.peft": "none"}, "lora": {"train.peft": "lora", "train.learning_rate": 0.005}}}


def prepared_project(root, base_model):
    """The tiny project with data/ and the tokenized splits, made in this process (what `tunegate curve`
    otherwise prepares with ingest and `dvc repro`, as a retraining run does: tested there)."""
    from components import stages
    from components.config import load_params
    from components.data.ingest import DataStore, ingest_batch, read_configured_source
    from components.layout import ProjectLayout

    make_project(root, base_model, train={"epochs": 1}, curve=CURVE)
    layout = ProjectLayout(root)
    params = load_params(layout.params_file, env={})
    ingest_batch(read_configured_source(params.data, root, task=params.task), params.data, DataStore(layout.data_dir),
                 base=True, task=params.task)
    stages.preprocess(layout, params)
    return layout


def nested_runs(registry, parent_run_id: str) -> list:
    experiment = registry.client.get_experiment_by_name("tunegate")
    return registry.client.search_runs([experiment.experiment_id],
                                       filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


@pytest.mark.slow
def test_a_two_method_two_size_curve_writes_runs_table_plot_and_is_cached(tmp_path, tiny_base_model, prefect_api,
                                                                         capsys):
    from components.lifecycle.registry import ModelRegistry, resolve_tracking_uri
    from components.lifecycle.versioning import run_dvc
    from flows.curve import run_curve
    from tunegate.cli import main

    layout = prepared_project(tmp_path / "project", tiny_base_model)
    root = layout.root
    result = run_curve(root, prepare=False)
    assert result["failed"] == [] and (result["points"], result["trained"]) == (4, 4)

    registry = ModelRegistry(resolve_tracking_uri(None, layout.mlflow_dir), "tiny-sentiment")
    runs = nested_runs(registry, result["run_id"])
    seen = sorted((r.data.params["curve.method"], int(r.data.params["curve.size"]), r.data.params["curve.seed"])
                  for r in runs)
    assert seen == [("full", 16, "7"), ("full", 32, "7"), ("lora", 16, "7"), ("lora", 32, "7")]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["curve_cached"] == "false"
        assert {"test_accuracy", "test_macro_f1", "val_accuracy", "trainable_share", "seconds_per_epoch"} <= set(
            run.data.metrics)
        share = run.data.metrics["trainable_share"]
        assert share == 1.0 if run.data.params["curve.method"] == "full" else 0 < share < 0.5
        if run.data.params["curve.method"] == "lora":
            assert run.data.params["train.peft"] == "lora"

    with open(result["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted((r["method"], int(r["labels"])) for r in rows) == [("full", 16), ("full", 32), ("lora", 16),
                                                                       ("lora", 32)]
    assert all(0 <= float(r["test_score"]) <= 1 and r["test_score"] == r["test_accuracy"] for r in rows)
    table = (layout.artifacts / "curve" / "README.md").read_text()
    assert "| method | trainable | 16 | 32 |" in table and "| full | 100.00% |" in table and "| lora |" in table
    assert (layout.artifacts / "curve" / "curve.png").read_bytes()[:4] == b"\x89PNG"
    logged = {a.path for a in registry.client.list_artifacts(result["run_id"], "curve")}
    assert logged == {"curve/curve.csv", "curve/curve.json", "curve/curve.png", "curve/README.md"}
    # dvc.yaml's top-level plots read the curve without a stage for it
    shown = json.loads(run_dvc(root, "plots", "show", "--json", capture=True).stdout)
    assert len(shown["data"]["artifacts/curve/curve.csv"][0]["content"]["data"]["values"]) == 4
    assert shown["data"]["artifacts/curve/curve.png"]
    assert not [e for e in shown.get("errors", []) if "curve" in e["name"]]  # (the unrun evaluate stage's are missing)

    stored = sorted((layout.artifacts / "curve" / "points").glob("*/result.json"))
    assert len(stored) == 4
    for path in stored:  # each point trained on its own subset's rows, and its weights were not kept
        point = json.loads(path.read_text())
        assert json.loads((path.parent / "train_history.json").read_text())["train_examples"] == point["labels"]
        assert not (path.parent / "work").exists()
    stamps = [p.stat().st_mtime_ns for p in stored]
    capsys.readouterr()
    assert main(["--project", str(root), "curve", "--methods", "full,lora", "--sizes", "16,32", "--seeds", "7",
                 "--no-prepare"]) == 0  # the CLI, again: every point is stored
    printed = capsys.readouterr().out
    assert "4 points: 0 trained, 4 from earlier runs, 0 failed" in printed and "| lora |" in printed
    assert [p.stat().st_mtime_ns for p in stored] == stamps
    again = json.loads((layout.artifacts / "curve" / "curve.json").read_text())["parent_run_id"]
    cached = nested_runs(registry, again)
    assert len(cached) == 4 and all(r.data.tags["curve_cached"] == "true" for r in cached)
    assert {r.data.tags["curve_trained_in_run"] for r in cached} == {r.info.run_id for r in runs}
