"""Slices (evaluate.slices): their definitions are validated, their figures computed from constructed
predictions, and the gate refuses a challenger that is better overall but worse on one slice."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from components.config import ConfigError, ExportParams, GateParams, parse_params
from components.config.evaluate import EvaluateParams
from components.lifecycle.gate import decide
from components.lifecycle.model_card import render_model_card
from components.lifecycle.tracking import slice_metrics_of
from components.model.slices import slice_metrics, write_slices

BASE = {"data": {"source": "x.csv", "labels": ["negative", "positive"]}, "model": {"base_model": "org/model"}}
PARITY = {"agreement": 1.0, "accuracy_drop": 0.0, "precision": "int8"}
EXPORT = ExportParams(precision="int8")


def settings(*slices: dict, min_rows: int = 2) -> EvaluateParams:
    return parse_params({**BASE, "evaluate": {"slices": list(slices), "min_slice_rows": min_rows}}, env={}).evaluate


@pytest.mark.parametrize(("slices", "message"), [
    ([{"name": "nothing"}], r"slice 'nothing' must have exactly one kind.*found none"),
    ([{"name": "both", "regex": "x", "max_chars": 5}], r"slice 'both' must have exactly one kind.*regex and length"),
    ([{"name": "three", "column": "label", "values": ["a"], "regex": "x", "min_chars": 1}], r"slice 'three'"),
    ([{"name": "bad", "regex": "(unclosed"}], r"slice 'bad': regex '\(unclosed' does not compile"),
    ([{"name": "q", "regex": "x"}, {"name": "q", "max_chars": 9}], r"slice name\(s\) q appear more than once"),
    ([{"name": "lang", "column": "language", "values": ["de"]}], r"slice 'lang': column 'language' is not in the test"),
    ([{"name": "half", "column": "label"}], r"slice 'half': `column` and `values` go together"),
    ([{"name": "band", "min_chars": 50, "max_chars": 10}], r"slice 'band': min_chars 50 is above max_chars 10"),
    ([{"name": "has space", "regex": "x"}], r"evaluate\.slices\.0\.name"),
])
def test_a_slice_needs_exactly_one_valid_kind_and_its_own_name(slices, message):
    with pytest.raises(ConfigError, match=message):
        settings(*slices)


def test_slice_kinds_are_parsed_once():
    parsed = settings({"name": "questions", "regex": r"\?$"}, {"name": "one_batch", "column": "batch_id",
                                                                 "values": "new.csv"}, {"name": "short", "max_chars": 9})
    assert [s.kind for s in parsed.slices] == ["regex", "column", "length"]
    assert parsed.slices[0].pattern.search("why?") and parsed.slices[1].values == ["new.csv"]
    assert parsed.slices[2].describe() == "<= 9 characters"


TEST = pd.DataFrame({
    "id": ["1", "2", "3", "4", "5", "6"],
    "text": ["is it good?", "great fun", "why so dull?", "a long and tedious evening", "bad", "fine?"],
    "label": ["positive", "positive", "negative", "negative", "negative", "positive"],
    "batch_id": ["a.csv@111", "a.csv@111", "b.csv@222", "b.csv@222", "b.csv@222", "a.csv@111"],
})
#            wrong here:      ^row 0                               ^row 3
PREDICTED = ["negative", "positive", "negative", "positive", "negative", "positive"]


def test_per_slice_figures_on_constructed_predictions():
    report = slice_metrics(TEST, PREDICTED, ["negative", "positive"], settings(
        {"name": "questions", "regex": r"\?$"},
        {"name": "batch_b", "column": "batch_id", "values": ["b.csv"]},  # by file name
        {"name": "batch_a_full_id", "column": "batch_id", "values": ["a.csv@111"]},
        {"name": "short", "max_chars": 10},
        {"name": "long", "min_chars": 20},
        {"name": "none", "regex": "zzz"},
        min_rows=2))
    # questions: rows 0, 2, 5: row 0 wrong; macro-F1 over negative (P 1/2, R 1: 2/3) and positive (P 1, R 1/2: 2/3)
    assert report["questions"]["rows"] == 3 and report["questions"]["accuracy"] == pytest.approx(2 / 3)
    assert report["questions"]["macro_f1"] == pytest.approx(2 / 3)
    assert report["questions"]["judged"] is True and report["questions"]["kind"] == "regex"
    # batch b: rows 2, 3, 4, all negative; row 3 predicted positive. Macro-F1 over the labels present in the
    # slice (negative: P 1, R 2/3 -> 0.8; positive: predicted once, never gold -> 0).
    assert report["batch_b"]["rows"] == 3 and report["batch_b"]["accuracy"] == pytest.approx(2 / 3)
    assert report["batch_b"]["macro_f1"] == pytest.approx(0.4)
    assert report["batch_a_full_id"]["rows"] == 3 and report["batch_a_full_id"]["accuracy"] == pytest.approx(2 / 3)
    # short (<= 10 characters): "great fun", "bad", "fine?": all right
    assert (report["short"]["rows"], report["short"]["accuracy"], report["short"]["macro_f1"]) == (3, 1.0, 1.0)
    # long: one row only: its figure is reported, not judged
    assert report["long"]["rows"] == 1 and report["long"]["judged"] is False and report["long"]["accuracy"] == 0.0
    assert report["none"] == {"kind": "regex", "selects": "text matches /zzz/", "rows": 0, "min_rows": 2,
                              "judged": False}
    metrics = slice_metrics_of({"slices": report}, prefix="int8_")
    assert metrics["int8_slice_short_rows"] == 3 and metrics["int8_slice_long_judged"] == 0.0
    assert metrics["int8_slice_questions_macro_f1"] == pytest.approx(2 / 3)
    assert "int8_slice_none_accuracy" not in metrics


def test_ner_slices_score_entities_per_sentence():
    test = pd.DataFrame({"id": ["1", "2", "3"], "text": ["Ada lives in Paris", "Bob ran", "Paris is big"],
                         "label": ["B-PER O O B-LOC", "B-PER O", "B-LOC O O"], "batch_id": ["x"] * 3})
    predicted = ["B-PER O O B-LOC", "O O", "B-LOC O O"]  # misses Bob
    report = slice_metrics(test, predicted, ["PER", "LOC"], settings({"name": "paris", "regex": "Paris"},
                                                                    {"name": "short", "max_chars": 8}), token_task=True)
    assert report["paris"]["rows"] == 2 and report["paris"]["entity_f1"] == 1.0
    assert report["short"]["rows"] == 1 and report["short"]["entity_f1"] == 0.0 and report["short"]["judged"] is False


def test_a_column_slice_on_rows_without_that_column_names_the_slice():
    with pytest.raises(ValueError, match="slice 'b': the test rows have no column 'batch_id'"):
        slice_metrics(TEST.drop(columns=["batch_id"]), PREDICTED, ["negative", "positive"],
                      settings({"name": "b", "column": "batch_id", "values": ["b.csv"]}))


def served(macro_f1: float, slices: dict[str, float], rows: int = 40, min_rows: int = 30) -> dict:
    return {"accuracy": macro_f1, "macro_f1": macro_f1, "n": 200, "slices": {
        name: {"kind": "regex", "selects": f"text matches /{name}/", "rows": rows, "min_rows": min_rows,
               "judged": rows >= min_rows, "accuracy": value, "macro_f1": value} for name, value in slices.items()}}


def test_the_gate_refuses_a_challenger_better_overall_but_worse_on_one_slice():
    gate = GateParams(max_regression=0.01, max_slice_regression=0.02)
    champion = served(0.85, {"questions": 0.90, "short": 0.80})
    challenger = served(0.88, {"questions": 0.80, "short": 0.85})  # +0.03 overall, -0.10 on questions
    decision = decide(challenger, PARITY, champion, "3", gate, EXPORT)
    assert not decision.passed
    checks = {c.name: c for c in decision.checks}
    assert checks["vs_champion"].passed
    assert not checks["slice_vs_champion_questions"].passed and checks["slice_vs_champion_short"].passed
    assert ("FAIL slice_vs_champion_questions: slice questions (text matches /questions/): macro_f1 0.8000 vs "
            "champion v3 0.9000 on the same 40 rows (-0.1000; allowed >= -0.0200)") in decision.summary()
    # The same challenger passes when its slice holds up.
    assert decide(served(0.88, {"questions": 0.89, "short": 0.85}), PARITY, champion, "3", gate, EXPORT).passed


def test_min_slice_metric_and_a_slice_too_small_to_judge():
    gate = GateParams(min_slice_metric=0.75)
    small = served(0.9, {"rare": 0.10}, rows=5)["slices"]
    challenger = served(0.9, {"questions": 0.70, "short": 0.80})
    challenger["slices"].update(small)
    decision = decide(challenger, PARITY, None, None, gate, EXPORT)
    checks = {c.name: c for c in decision.checks}
    assert not decision.passed
    assert not checks["min_slice_metric_questions"].passed and checks["min_slice_metric_short"].passed
    assert checks["slice_rare"].passed and "min_slice_metric_rare" not in checks
    assert "PASS slice_rare: slice rare (text matches /rare/): not judged (5 rows < min_slice_rows 30)" \
        in decision.summary()
    # Without slice settings the figures are listed, not gated; settings without slices fail with a reason.
    listed = decide(challenger, PARITY, None, None, GateParams(), EXPORT)
    assert listed.passed and "not gated" in {c.name: c for c in listed.checks}["slice_questions"].detail
    unsliced = decide(served(0.9, {}), PARITY, None, None, gate, EXPORT)
    assert not unsliced.passed and "evaluate.slices is empty" in unsliced.summary()


def test_the_slices_file_and_the_model_card_table(tmp_path):
    report = slice_metrics(TEST, PREDICTED, ["negative", "positive"], settings(
        {"name": "questions", "regex": r"\?$"}, {"name": "long", "min_chars": 20}, min_rows=2))
    write_slices(report, tmp_path / "slices.json")
    assert json.loads((tmp_path / "slices.json").read_text())["slices"]["questions"]["rows"] == 3
    card = render_model_card("m", {"task": "sequence-classification", "slices": json.dumps(report)}, {}, "gate passed")
    assert "## Slices" in card
    assert "| questions | text matches /\\?$/ | 3 | 0.6667 | 0.6667 | yes |" in card
    assert "| long | >= 20 characters | 1 | 0.0000 | 0.0000 | no (< 2 rows) |" in card
