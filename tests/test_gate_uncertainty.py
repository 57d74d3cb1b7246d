"""The gate judges "at most this much worse than the champion" on the paired bootstrap interval of the
difference over the same test rows (components/lifecycle/paired.py), not on a bare difference that row
sampling alone moves by about a point. Real parts throughout: the metrics and per-row outcomes come from
the functions score_onnx_dir uses (evaluate_frame, row_outcomes, sentence_outcomes, slice_metrics), given
constructed predictions; every random draw is from a seeded generator of the test's own."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from components.config import ExportParams, GateParams, iob2_tags, parse_params
from components.entities import entity_scores
from components.lifecycle.gate import decide
from components.lifecycle.model_card import render_model_card
from components.lifecycle.paired import (
    OUTCOMES,
    mcnemar_exact,
    metric_value,
    paired_bootstrap,
    rows_needed,
    without_outcomes,
)
from components.lifecycle.tracking import gate_interval_metrics, vs_champion_tag
from components.model.evaluate import evaluate_frame, evaluate_token_frame, row_outcomes, sentence_outcomes
from components.model.slices import slice_metrics, slice_rows
from tests.tiny import ner_records

LABELS = ["negative", "neutral", "positive"]
PARITY = {"agreement": 1.0, "accuracy_drop": 0.0}
EXPORT = ExportParams()
ROWS = 1306  # the test split the gate's defaults were chosen for


def served(frame: pd.DataFrame, predicted: list[str], labels: list[str] = LABELS, evaluate=None) -> dict:
    """A model's scores as score_onnx_dir returns them, from predicted labels instead of an ONNX session."""
    probabilities = np.eye(len(labels), dtype=np.float32)[[labels.index(label) for label in predicted]]
    metrics, predictions = evaluate_frame(frame, probabilities, labels)
    outcomes = row_outcomes(frame, predictions["predicted"].tolist(), labels)
    if evaluate is not None:
        metrics["slices"] = slice_metrics(frame, predictions["predicted"].tolist(), labels, evaluate)
        outcomes["slices"] = slice_rows(frame, evaluate)
    return {**metrics, OUTCOMES: outcomes}


def split_frame(rng: np.random.Generator, rows: int = ROWS) -> pd.DataFrame:
    texts = [f"review {i}" + (" ?" if i % 3 == 0 else "") for i in range(rows)]
    return pd.DataFrame({"id": [f"r{i}" for i in range(rows)], "text": texts,
                         "label": rng.choice(LABELS, size=rows).tolist(), "batch_id": ["a.csv@1"] * rows})


def champion_predictions(frame: pd.DataFrame, rng: np.random.Generator, accuracy: float = 0.9) -> list[str]:
    """About `accuracy` right; a wrong answer is another label."""
    predicted = frame["label"].tolist()
    for row in np.flatnonzero(rng.random(len(frame)) > accuracy):
        predicted[row] = LABELS[(LABELS.index(predicted[row]) + 1) % len(LABELS)]
    return predicted


def challenger_predictions(frame: pd.DataFrame, champion: list[str], rng: np.random.Generator, losses: int,
                           gains: int) -> list[str]:
    """The champion's answers with `losses` of its right rows made wrong and `gains` of its wrong rows made right."""
    actual = frame["label"].tolist()
    right = np.flatnonzero([p == a for p, a in zip(champion, actual)])
    wrong = np.flatnonzero([p != a for p, a in zip(champion, actual)])
    predicted = list(champion)
    for row in rng.choice(right, size=losses, replace=False):
        predicted[row] = LABELS[(LABELS.index(actual[row]) + 1) % len(LABELS)]
    for row in rng.choice(wrong, size=gains, replace=False):
        predicted[row] = actual[row]
    return predicted


def pair(seed: int, losses: int, gains: int, rows: int = ROWS, evaluate=None) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    frame = split_frame(rng, rows)
    champion = champion_predictions(frame, rng)
    challenger = challenger_predictions(frame, champion, rng, losses, gains)
    return served(frame, champion, evaluate=evaluate), served(frame, challenger, evaluate=evaluate)


def check(decision, name: str = "vs_champion"):
    return {c.name: c for c in decision.checks}[name]


# --- the two cases the default margin was chosen for ----------------------------------------------------

@pytest.mark.parametrize("metric", ["macro_f1", "accuracy"])
def test_a_challenger_one_point_worse_is_refused_by_the_default_gate(metric):
    champion, challenger = pair(seed=1, losses=13, gains=0)  # 13 of 1306 rows: a point
    gate = GateParams(compare_metric=metric)
    assert gate.max_regression == 0.01 and gate.regression_rule == "interval"
    decision = decide(challenger, PARITY, champion, "3", gate, EXPORT)
    vs = check(decision)
    assert not decision.passed and not vs.passed
    interval = vs.interval
    assert interval["difference"] == pytest.approx(champion[metric] - challenger[metric])
    assert 0.009 < interval["difference"] < 0.011 and interval["low"] > 0 and interval["high"] > 0.013
    assert vs.value == interval["high"] and vs.threshold == 0.01
    assert f"{metric} {challenger[metric]:.4f} vs champion v3 {champion[metric]:.4f} on the same 1306 test rows: " \
           f"champion − challenger {interval['difference']:+.4f}, 95% interval [{interval['low']:+.4f}, " \
           f"{interval['high']:+.4f}] (2000 paired resamples); allowed upper end <= 0.0100" in decision.summary()
    if metric == "accuracy":
        assert (interval["champion_only_right"], interval["challenger_only_right"]) == (13, 0)
        assert interval["mcnemar_p"] == pytest.approx(2 * 0.5 ** 13)
        assert "McNemar: 13 rows right only for the champion, 0 only for the challenger, exact p 0.000244" in vs.detail
    # The bare difference is inside the same margin: the old rule would have let it through.
    assert check(decide(challenger, PARITY, champion, "3", GateParams(compare_metric=metric, regression_rule="point"),
                        EXPORT)).passed


@pytest.mark.parametrize("metric", ["macro_f1", "accuracy"])
def test_a_challenger_that_differs_only_by_noise_is_accepted_by_the_default_gate(metric):
    champion, challenger = pair(seed=2, losses=18, gains=18)  # 36 rows of 1306 answered differently, half each way
    decision = decide(challenger, PARITY, champion, "3", GateParams(compare_metric=metric), EXPORT)
    vs = check(decision)
    assert decision.passed and vs.passed, vs.detail
    assert vs.interval["low"] < 0 < vs.interval["high"] <= 0.01
    assert vs.interval["rows_needed"] is None and "would be needed" not in vs.detail
    # The old default margin refuses even this tie: the interval is about +-0.009 wide.
    assert not check(decide(challenger, PARITY, champion, "3", GateParams(compare_metric=metric, max_regression=0.005),
                            EXPORT)).passed


def test_the_interval_covers_the_true_difference_95_times_in_100():
    """1,000 simulated paired test splits of 1,306 rows, each row right only for the champion with probability
    3%, only for the challenger with 2% (5% discordant, as between two retrained models): the true accuracy
    difference is 0.01. (With fewer discordant rows the percentile interval covers a little less: about 93.8%
    at 2% and 1%, by a simulation of 4,000 splits.)"""
    rng = np.random.default_rng(7)
    datasets, rows, true_difference = 1000, ROWS, 0.01
    ids = [str(i) for i in range(rows)]
    covered = 0
    for _ in range(datasets):
        draw = rng.random(rows)
        champion_right = draw >= 0.02  # below 0.02 only the challenger is right, from 0.02 to 0.05 only the champion
        challenger_right = (draw < 0.02) | (draw >= 0.05)
        both_wrong = rng.random(rows) < 0.05
        champion_right &= ~both_wrong
        challenger_right &= ~both_wrong

        def outcomes(right: np.ndarray) -> dict:
            return {"unit": "row", "ids": ids, "labels": ["a", "b"], "actual": np.zeros(rows, dtype=int),
                    "predicted": (~right).astype(int)}

        result = paired_bootstrap(outcomes(champion_right), outcomes(challenger_right), "accuracy",
                                  seed=int(rng.integers(2 ** 31)))
        covered += result.low <= true_difference <= result.high
    assert abs(covered / datasets - 0.95) <= 0.02, covered / datasets


def test_mcnemar_exact_against_hand_computed_p_values():
    def test(champion_only: int, challenger_only: int, both_right: int = 50):
        champion = [True] * champion_only + [False] * challenger_only + [True] * both_right
        challenger = [False] * champion_only + [True] * challenger_only + [True] * both_right
        return mcnemar_exact(np.array(champion), np.array(challenger))

    assert test(0, 13).p_value == pytest.approx(2 * 0.5 ** 13)
    assert (test(0, 13).champion_only_right, test(0, 13).challenger_only_right) == (0, 13)
    assert test(3, 1).p_value == pytest.approx(2 * (1 + 4) / 2 ** 4)  # P(X <= 1), X ~ binomial(4, 1/2), doubled
    assert test(5, 5).p_value == 1.0 and test(0, 0).p_value == 1.0


# --- NER: entity F1 from per-sentence counts ------------------------------------------------------------

KINDS = ["PER", "LOC", "ORG"]


def ner_frame(sentences: int = 400, seed: int = 3) -> pd.DataFrame:
    records = ner_records(sentences, seed=seed)
    return pd.DataFrame({"id": [f"s{i}" for i in range(sentences)], "text": [" ".join(r["tokens"]) for r in records],
                         "label": [" ".join(r["tags"]) for r in records], "batch_id": ["a"] * sentences})


def ner_predictions(frame: pd.DataFrame, seed: int) -> list[list[str]]:
    """The gold tags with some replaced at random: stray I- tags, MISC spans outside the entity types, missed
    and invented entities."""
    rng = np.random.default_rng(seed)
    choices = iob2_tags(KINDS) + ["B-MISC"]
    return [[str(rng.choice(choices)) if rng.random() < 0.08 else tag for tag in tags.split(" ")]
            for tags in frame["label"]]


def test_ner_figures_from_sentence_counts_are_the_entity_scores_figures():
    frame = ner_frame()
    predicted, other = ner_predictions(frame, seed=1), ner_predictions(frame, seed=2)
    metrics, _ = evaluate_token_frame(frame, predicted, KINDS)
    outcomes, other_outcomes = sentence_outcomes(frame, predicted, KINDS), sentence_outcomes(frame, other, KINDS)
    for metric in ("entity_f1", "macro_f1", "accuracy"):
        assert metric_value(outcomes, metric) == pytest.approx(metrics[metric], abs=1e-12), metric
    # The bootstrap's point values are the same figures, for both models.
    comparison = paired_bootstrap(outcomes, other_outcomes, "entity_f1", seed=0)
    assert comparison.champion == pytest.approx(metrics["entity_f1"], abs=1e-12)
    gold = [tags.split(" ") for tags in frame["label"]]
    assert comparison.challenger == pytest.approx(entity_scores(gold, other, KINDS)["entity_f1"], abs=1e-12)
    assert comparison.difference != 0 and comparison.low <= comparison.difference <= comparison.high
    assert comparison.mcnemar_p is None and comparison.n == len(frame)
    json.dumps(outcomes)  # cached by Prefect as JSON


def test_slice_figures_from_outcomes_are_slice_metrics_figures():
    evaluate = parse_params({"data": {"source": "x.csv", "labels": LABELS}, "model": {"base_model": "org/m"},
                             "evaluate": {"slices": [{"name": "questions", "regex": r"\?$"},
                                                     {"name": "rare", "column": "label", "values": ["neutral"]}],
                                          "min_slice_rows": 30}}, env={}).evaluate
    champion, _ = pair(seed=5, losses=0, gains=0, evaluate=evaluate)
    for name, entry in champion["slices"].items():
        rows = champion[OUTCOMES]["slices"][name]
        assert len(rows) == entry["rows"]
        for metric in ("accuracy", "macro_f1"):  # macro-F1 over the labels present in the slice
            assert metric_value(champion[OUTCOMES], metric, rows, present_only=True) == pytest.approx(entry[metric])
    # NER: entity F1 of the sentences a slice selects.
    frame = ner_frame(sentences=200)
    predicted = ner_predictions(frame, seed=5)
    short = parse_params({"data": {"source": "x.csv", "labels": KINDS}, "model": {"base_model": "org/m"},
                          "evaluate": {"slices": [{"name": "short", "max_chars": 30}], "min_slice_rows": 5}},
                         env={}).evaluate
    entry = slice_metrics(frame, predicted, KINDS, short, token_task=True)["short"]
    rows = slice_rows(frame, short)["short"]
    assert 0 < len(rows) == entry["rows"] < len(frame)
    for metric in ("entity_f1", "macro_f1", "accuracy"):
        assert metric_value(sentence_outcomes(frame, predicted, KINDS), metric, rows) == pytest.approx(entry[metric])


# --- how the gate uses it -------------------------------------------------------------------------------

def test_rows_needed_when_the_split_is_too_small_to_show_a_tie():
    champion, challenger = pair(seed=8, losses=6, gains=6, rows=200)
    vs = check(decide(challenger, PARITY, champion, "3", GateParams(compare_metric="accuracy"), EXPORT))
    interval = vs.interval
    half_width = (interval["high"] - interval["low"]) / 2
    assert not vs.passed and half_width > 0.01
    assert interval["rows_needed"] == math.ceil(200 * (half_width / 0.01) ** 2) > 1000
    assert f"even a tie could not be shown within it on 200 rows: about {interval['rows_needed']} would be needed" \
        in vs.detail
    # A clearly better challenger passes on the same small split: no more rows needed to say so.
    champion, better = pair(seed=8, losses=0, gains=15, rows=200)
    passed = check(decide(better, PARITY, champion, "3", GateParams(compare_metric="accuracy"), EXPORT))
    assert passed.passed and passed.interval["rows_needed"] is not None and "would be needed" not in passed.detail
    assert rows_needed(1306, 0.02, 0.01) == 5224 and rows_needed(1306, 0.009, 0.01) is None
    assert rows_needed(1306, 0.02, 0.0) is None  # no margin: no number of rows reaches it


def test_the_point_rule_when_chosen_behaves_as_before():
    champion, challenger = pair(seed=1, losses=13, gains=0)
    gate = GateParams(regression_rule="point", compare_metric="accuracy", max_regression=0.005)
    vs = check(decide(challenger, PARITY, champion, "3", gate, EXPORT))
    difference = challenger["accuracy"] - champion["accuracy"]
    assert not vs.passed and vs.interval is None
    assert (vs.value, vs.threshold) == (pytest.approx(difference), -0.005)
    assert vs.detail == (f"accuracy {challenger['accuracy']:.4f} vs champion v3 {champion['accuracy']:.4f} on the same "
                         f"1306 test rows ({difference:+.4f}; allowed >= -0.0050)")
    # The same verdict and words as for scores that carry no outcomes at all.
    bare = check(decide(without_outcomes(challenger), PARITY, without_outcomes(champion), "3", gate, EXPORT))
    assert bare.model_dump() == vs.model_dump()


def test_scores_without_outcomes_fall_back_to_the_point_rule_and_say_so():
    champion, challenger = pair(seed=1, losses=13, gains=0)
    vs = check(decide(challenger, PARITY, without_outcomes(champion), "3", GateParams(), EXPORT))
    assert vs.passed and vs.interval is None  # -0.0099 >= -0.0100
    assert vs.detail.endswith("judged by the point rule: the champion's scores carry no per-row outcomes (scored "
                              "before they were recorded), so there is no interval")


def test_outcomes_of_other_rows_are_a_failed_check_not_a_silent_misalignment():
    champion, challenger = pair(seed=2, losses=0, gains=0)  # the same answers: any pairing would pass
    shuffled = dict(champion[OUTCOMES])
    order = np.random.default_rng(0).permutation(ROWS)
    shuffled.update({key: [champion[OUTCOMES][key][i] for i in order] for key in ("ids", "actual", "predicted")})
    vs = check(decide(challenger, PARITY, {**champion, OUTCOMES: shuffled}, "3", GateParams(), EXPORT))
    assert not vs.passed and "cannot be compared row by row: the champion's outcomes are of the same rows in another " \
                             "order" in vs.detail
    fewer = {**champion[OUTCOMES], "ids": champion[OUTCOMES]["ids"][:-1]}
    vs = check(decide(challenger, PARITY, {**champion, OUTCOMES: fewer}, "3", GateParams(), EXPORT))
    assert not vs.passed and "the challenger was scored on 1306 rows, the champion on 1305" in vs.detail


def test_slice_and_forgetting_checks_use_the_interval_too():
    evaluate = parse_params({"data": {"source": "x.csv", "labels": LABELS}, "model": {"base_model": "org/m"},
                             "evaluate": {"slices": [{"name": "questions", "regex": r"\?$"}], "min_slice_rows": 30}},
                            env={}).evaluate
    champion, challenger = pair(seed=9, losses=12, gains=12, evaluate=evaluate)
    gate = GateParams(max_slice_regression=0.05)
    decision = decide(challenger, PARITY, champion, "3", gate, EXPORT, earlier_rows=(challenger, champion))
    questions, forgetting = check(decision, "slice_vs_champion_questions"), check(decision, "no_forgetting")
    entry = challenger["slices"]["questions"]
    assert questions.interval["n"] == entry["rows"]
    assert questions.interval["challenger"] == pytest.approx(entry["macro_f1"])
    assert questions.detail.startswith(f"slice questions (text matches /\\?$/): macro_f1 {entry['macro_f1']:.4f} vs "
                                       f"champion v3 {champion['slices']['questions']['macro_f1']:.4f} on the same "
                                       f"{entry['rows']} rows: champion − challenger ")
    assert forgetting.interval is not None and "allowed upper end <= 0.0100" in forgetting.detail
    # A slice whose rows differ between the two outcomes is a fault.
    moved = {**champion[OUTCOMES], "slices": {"questions": champion[OUTCOMES]["slices"]["questions"][1:]}}
    faulty = check(decide(challenger, PARITY, {**champion, OUTCOMES: moved}, "3", gate, EXPORT),
                   "slice_vs_champion_questions")
    assert not faulty.passed and "the slice selects other rows" in faulty.detail


def test_the_report_mlflow_metrics_and_the_model_card_show_the_interval():
    champion, challenger = pair(seed=1, losses=13, gains=0)
    decision = decide(challenger, PARITY, champion, "3", GateParams(compare_metric="accuracy"), EXPORT)
    dumped = json.loads(json.dumps(decision.model_dump()))  # the report as tracking.log_gate writes it
    interval = check(decision).interval
    metrics = gate_interval_metrics(dumped)
    assert metrics == {"gate_vs_champion_diff": interval["difference"], "gate_vs_champion_low": interval["low"],
                       "gate_vs_champion_high": interval["high"], "gate_vs_champion_mcnemar_p": interval["mcnemar_p"]}
    verdict = {"decision": dumped, "summary": decision.summary(), "passed": decision.passed,
               "challenger_metrics": without_outcomes(challenger)}
    tags = {"task": "sequence-classification", **vs_champion_tag(verdict)}
    assert len(json.dumps(tags["vs_champion"])) < 500  # a tag: no per-row data
    card = render_model_card("m", json.loads(json.dumps(tags)), {}, decision.summary())
    assert (f"Against champion v3 on the same 1306 test rows: accuracy champion − challenger "
            f"{interval['difference']:+.4f}, 95% interval [{interval['low']:+.4f}, {interval['high']:+.4f}] "
            "(2000 paired resamples, McNemar exact p 0.000244)") in card
    assert "actual" not in card and OUTCOMES not in verdict["challenger_metrics"]
    assert render_model_card("m", {"task": "sequence-classification"}, {}, "gate passed").count("Against champion") == 0


def test_outcomes_survive_the_json_cache_and_the_bootstrap_runs_on_many_distinct_sentences():
    champion, challenger = pair(seed=2, losses=18, gains=18)
    cached = json.loads(json.dumps(champion))  # score_registered_version's result, read back from the cache
    first = check(decide(challenger, PARITY, champion, "3", GateParams(), EXPORT))
    again = check(decide(challenger, PARITY, cached, "3", GateParams(), EXPORT))
    assert first.model_dump() == again.model_dump()  # seeded: the same verdict every time
    paired_bootstrap(champion[OUTCOMES], challenger[OUTCOMES], "macro_f1", resamples=2000)
    frame = ner_frame(sentences=ROWS)  # many distinct sentences' counts: drawn sentence by sentence
    predicted, other = ner_predictions(frame, seed=1), ner_predictions(frame, seed=2)
    result = paired_bootstrap(sentence_outcomes(frame, predicted, KINDS), sentence_outcomes(frame, other, KINDS),
                              "macro_f1")
    assert result.n == ROWS and result.low <= result.high
