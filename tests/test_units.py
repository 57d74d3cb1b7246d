"""Fast checks of the pieces the flow relies on: config errors, split stability, gate decisions."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from components.config import (
    ConfigError,
    ExportParams,
    GateParams,
    SplitParams,
    parse_params,
)
from components.config.params_file import set_param
from components.data.ingest import RawSource, build_dataset
from components.data.preprocess import assign_splits, split_of
from components.lifecycle.gate import decide
from components.model.modeling import resolve_model_source
from tests.tiny import sentiment_frame

BASE = {"data": {"source": "x.csv", "labels": ["negative", "positive"]}, "model": {"base_model": "org/model"}}


def test_misspelt_key_is_an_error_that_names_it():
    with pytest.raises(ConfigError, match=r"train\.epohcs"):
        parse_params({**BASE, "train": {"epohcs": 3}}, env={})


def test_label_map_to_unknown_label_is_refused():
    with pytest.raises(ConfigError, match="neutral"):
        parse_params({**BASE, "data": {**BASE["data"], "label_map": {"meh": "neutral"}}}, env={})


def test_runtime_settings_come_from_the_environment_but_ml_settings_do_not():
    params = parse_params(BASE, env={"TUNEGATE_SERVE__PORT": "9123"})
    assert params.serve.port == 9123
    with pytest.raises(ConfigError, match="params.yaml"):
        parse_params(BASE, env={"TUNEGATE_TRAIN__EPOCHS": "9"})


def test_set_param_keeps_comments_and_writes_floats_every_yaml_reader_reads_as_floats(tmp_path):
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text("# top\ndata: {source: x.csv, labels: [negative, positive]}  # data\n"
                    "model: {base_model: org/model}\ntrain:\n  learning_rate: 1.0e-04  # lr\n")
    assert set_param(path, "train.learning_rate", 5e-05) == 1e-04
    set_param(path, "sweep.space", {"train.learning_rate": [2e-05, 1e-4, 0.5]})
    text = path.read_text()
    assert "# top" in text and "# data" in text and "# lr" in text
    loaded = yaml.safe_load(text)  # PyYAML (YAML 1.1), as DVC reads params: "5e-05" would be a string
    assert loaded["train"]["learning_rate"] == 5e-05
    assert loaded["sweep"]["space"]["train.learning_rate"] == [2e-05, 1e-4, 0.5]


def test_word_shapes_need_a_token_task():
    with pytest.raises(ConfigError, match="model.word_shapes"):
        parse_params({**BASE, "model": {**BASE["model"], "word_shapes": True}}, env={})


def test_missing_local_base_model_fails_with_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_model_source(str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match="config.json"):
        resolve_model_source(str(tmp_path))  # a directory, but not a model
    assert resolve_model_source("org/name") == "org/name"  # a hub id is left to transformers


def dataset(rows: pd.DataFrame, data_params) -> pd.DataFrame:
    raw = RawSource(rows.rename(columns={"review": "text", "sentiment": "label"}).assign(source_row=range(2, len(rows) + 2)),
                    batch_id="b1", description="test")
    return build_dataset(raw, data_params)[0]


def test_split_of_an_example_never_changes_when_data_is_added():
    params = parse_params(BASE, env={})
    old = dataset(sentiment_frame(500, seed=1), params.data)
    grown = pd.concat([old, dataset(sentiment_frame(500, seed=2), params.data)], ignore_index=True)
    before = {row.id: name for name, frame in assign_splits(old, params.split).items() for row in frame.itertuples()}
    after = {row.id: name for name, frame in assign_splits(grown, params.split).items() for row in frame.itertuples()}
    assert all(after[i] == split for i, split in before.items())
    shares = pd.Series(list(after.values())).value_counts(normalize=True)
    assert 0.05 < shares["test"] < 0.15 and 0.05 < shares["validation"] < 0.15


def test_duplicates_share_a_split_so_test_rows_are_never_trained_on():
    split = SplitParams()
    ids = [f"{i:016x}" for i in range(300)]
    frame = pd.DataFrame({"id": ids + ids[:50], "text": ids + ids[:50], "label": ["a"] * 350})
    splits = assign_splits(frame, split)
    assert sum(len(f) for f in splits.values()) == 300
    assert {split_of(i, split) for i in splits["test"]["id"]} == {"test"}


def metrics(accuracy: float, macro_f1: float) -> dict:
    return {"accuracy": accuracy, "macro_f1": macro_f1, "n": 100}


PARITY = {"agreement": 1.0, "accuracy_drop": 0.0}


def test_gate_without_champion_judges_thresholds_only():
    decision = decide(metrics(0.9, 0.9), PARITY, None, None, GateParams(min_accuracy=0.8), ExportParams())
    assert decision.passed
    assert any("no champion yet" in r for r in decision.reasons)
    assert not decide(metrics(0.7, 0.9), PARITY, None, None, GateParams(min_accuracy=0.8), ExportParams()).passed


def test_gate_refuses_a_challenger_worse_than_the_champion_beyond_the_margin():
    gate = GateParams(max_regression=0.01)
    slightly_worse = decide(metrics(0.9, 0.895), PARITY, metrics(0.9, 0.9), "3", gate, ExportParams())
    much_worse = decide(metrics(0.9, 0.85), PARITY, metrics(0.9, 0.9), "3", gate, ExportParams())
    assert slightly_worse.passed
    assert not much_worse.passed
    assert [c.name for c in much_worse.checks if not c.passed] == ["vs_champion"]
    assert "champion v3" in much_worse.summary()


def test_gate_refuses_a_quantized_model_that_disagrees_with_pytorch():
    decision = decide(metrics(0.9, 0.9), {"agreement": 0.97, "accuracy_drop": 0.02}, None, None,
                      GateParams(), ExportParams(min_agreement=0.99, max_accuracy_drop=0.01))
    assert {c.name for c in decision.checks if not c.passed} == {"export_agreement", "export_accuracy_drop"}


def test_only_transient_failures_are_retried():
    from prefect.states import Failed

    from components.data.readers import IngestError
    from flows.retrain import transient_only

    def failed(error: Exception):
        return Failed(data=error)

    assert transient_only(None, None, failed(OSError("database is locked")))
    assert not transient_only(None, None, failed(IngestError(Path("x.csv"), "no text column")))
    assert not transient_only(None, None, failed(ConfigError("model.base_model: missing")))
