"""drift_report with a real (tiny) WordPiece tokenizer: quiet on a same-distribution batch, loud on shifts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from components.config import DriftParams, DriftThresholds
from components.data.drift import (
    DriftReport,
    drift_report,
    ks_statistic,
    label_shares,
    total_variation_distance,
)
from tests.tiny import sentiment_frame

PARAMS = DriftParams()  # label_shift 0.10/0.25, length_shift 0.15/0.30, oov_increase 0.01/0.05
# Cyrillic letters that look like Latin ones: same lengths, same labels, but letters the tiny
# tokenizer (trained on English reviews) never saw, so every such word becomes [UNK].
UNSEEN_LETTERS = str.maketrans("aceopxyABCEHKMOPTX", "асеорхуАВСЕНКМОРТХ")


@pytest.fixture(scope="module")
def tokenizer(tiny_base_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_base_model)


def reviews(rows: int, seed: int) -> pd.DataFrame:
    frame = sentiment_frame(rows, seed=seed).rename(columns={"review": "text", "sentiment": "label"})
    # The "#<row>" suffix would make a later batch's texts longer than the reference's; strip it.
    frame["text"] = frame["text"].str.replace(r" #\d+$", "", regex=True)
    return frame


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return reviews(3000, seed=1)


@pytest.fixture(scope="module")
def batch() -> pd.DataFrame:
    return reviews(400, seed=2)


def statuses(report: DriftReport) -> dict[str, str]:
    return {check.name: check.status for check in report.checks}


def by_name(report: DriftReport, name: str):
    return {check.name: check for check in report.checks}[name]


def with_positive_share(frame: pd.DataFrame, share: float) -> pd.DataFrame:
    """`frame`'s rows, re-picked so that `share` of them are positive (the rows themselves unchanged)."""
    positives, negatives = frame[frame["label"] == "positive"], frame[frame["label"] == "negative"]
    n = min(len(positives), len(negatives))
    count = round(share * n)
    return pd.concat([positives.iloc[:count], negatives.iloc[: n - count]], ignore_index=True)


def test_a_batch_from_the_same_distribution_is_ok(reference, batch, tokenizer):
    report = drift_report(reference, batch, tokenizer, PARAMS)
    assert report.status == "ok", report.summary()
    assert statuses(report) == {"label_shift": "ok", "length_shift": "ok", "oov_increase": "ok"}
    assert (report.reference_rows, report.batch_rows) == (3000, 400)
    assert by_name(report, "oov_increase").measures["reference_rate"] == 0.0


@pytest.mark.parametrize("share,status", [(0.65, "warn"), (0.9, "fail")])
def test_a_shifted_label_mix_warns_then_fails(reference, batch, tokenizer, share, status):
    shifted = with_positive_share(batch, share)
    report = drift_report(reference, shifted, tokenizer, PARAMS)
    check = by_name(report, "label_shift")
    expected = 0.5 * (label_shares(reference["label"]) - label_shares(shifted["label"])).abs().sum()
    assert check.value == pytest.approx(expected)
    assert check.status == status and report.status == status
    assert statuses(report)["oov_increase"] == "ok"
    positive = (shifted["label"] == "positive").mean()
    assert f"positive {label_shares(reference['label'])['positive']:.1%} -> {positive:.1%}" in check.detail


@pytest.mark.parametrize("longer_fraction,status", [(0.22, "warn"), (1.0, "fail")])
def test_much_longer_texts_warn_then_fail(reference, batch, tokenizer, longer_fraction, status):
    longer = batch.copy()
    rows = longer.index[: int(longer_fraction * len(longer))]
    longer.loc[rows, "text"] = (longer.loc[rows, "text"] + " ") * 3
    report = drift_report(reference, longer, tokenizer, PARAMS)
    check = by_name(report, "length_shift")
    assert check.status == status, check.detail
    assert statuses(report)["label_shift"] == "ok"
    if status == "fail":
        assert check.value > 0.99  # nearly every batch text is longer than every reference text
        assert check.measures["batch_median_chars"] > 2.5 * check.measures["reference_median_chars"]


@pytest.mark.parametrize("unseen_fraction,status", [(0.03, "warn"), (1.0, "fail")])
def test_texts_full_of_unseen_words_warn_then_fail(reference, batch, tokenizer, unseen_fraction, status):
    unseen = batch.copy()
    rows = unseen.index[: int(unseen_fraction * len(unseen))]
    unseen.loc[rows, "text"] = unseen.loc[rows, "text"].str.translate(UNSEEN_LETTERS)
    report = drift_report(reference, unseen, tokenizer, PARAMS)
    check = by_name(report, "oov_increase")
    assert check.status == status and report.status == status, check.detail
    assert check.value == pytest.approx(check.measures["batch_rate"] - check.measures["reference_rate"])
    assert check.measures["reference_rate"] == 0.0
    assert "[UNK] in the batch" in check.detail
    # Same lengths, same labels: only the vocabulary moved.
    assert statuses(report)["label_shift"] == "ok" and statuses(report)["length_shift"] == "ok"


def test_unknown_words_the_reference_already_had_are_not_drift(reference, batch, tokenizer):
    def with_unseen_words(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        rows = frame.index[::10]  # every tenth text
        frame.loc[rows, "text"] = frame.loc[rows, "text"].str.translate(UNSEEN_LETTERS)
        return frame

    check = by_name(drift_report(with_unseen_words(reference), with_unseen_words(batch), tokenizer, PARAMS),
                    "oov_increase")
    assert check.measures["batch_rate"] > PARAMS.oov_increase.fail  # high, but no higher than before
    assert check.status == "ok", check.detail
    assert f"vs {check.measures['reference_rate']:.2%} in the reference" in check.detail


def test_the_reference_is_subsampled_with_a_seed(tokenizer):
    big = pd.concat([reviews(2000, seed=3)] * 100, ignore_index=True)  # 200,000 rows
    params = DriftParams(oov_sample_texts=500, seed=5)
    first = drift_report(big, reviews(300, seed=4), tokenizer, params)
    second = drift_report(big, reviews(300, seed=4), tokenizer, params)
    assert first == second
    assert "500 of 200,000 reference texts" in by_name(first, "oov_increase").detail
    assert by_name(first, "oov_increase").measures["reference_pieces"] < 20_000


def test_ks_statistic_on_known_samples():
    assert ks_statistic(np.array([1, 2, 3]), np.array([3, 2, 1])) == 0.0
    assert ks_statistic(np.array([1, 2, 3, 4]), np.array([3, 4, 5, 6])) == 0.5
    assert ks_statistic(np.array([1, 1, 1]), np.array([9, 9])) == 1.0
    assert ks_statistic(np.array([5, 5, 5, 5]), np.array([5, 5, 6, 6])) == 0.5  # ties


def test_total_variation_distance_on_known_mixes():
    half = pd.Series({"a": 0.5, "b": 0.5})
    assert total_variation_distance(half, half) == 0.0
    assert total_variation_distance(half, pd.Series({"a": 0.8, "b": 0.2})) == pytest.approx(0.3)
    assert total_variation_distance(half, pd.Series({"c": 1.0})) == 1.0  # no label in common


def test_thresholds_are_inclusive_and_ordered():
    from components.data.drift import judge

    thresholds = DriftThresholds(warn=0.1, fail=0.2)
    assert [judge(v, thresholds) for v in (0.1, 0.1001, 0.2, 0.2001)] == ["ok", "warn", "warn", "fail"]
    with pytest.raises(ValueError, match="warn"):
        DriftThresholds(warn=0.3, fail=0.2)


def test_disabled_drift_skips_every_check(reference, batch, tokenizer):
    shifted = with_positive_share(batch, 1.0)
    report = drift_report(reference, shifted, tokenizer, DriftParams(enabled=False))
    assert report.status == "ok"
    assert set(statuses(report).values()) == {"skipped"}
    assert "disabled" in report.summary()


def test_an_empty_batch_is_skipped_not_crashed(reference, tokenizer):
    report = drift_report(reference, reference.iloc[:0], tokenizer, PARAMS)
    assert report.status == "ok" and set(statuses(report).values()) == {"skipped"}
    assert all("the batch has no" in check.detail for check in report.checks)


def test_report_summary_and_json_round_trip(reference, batch, tokenizer, tmp_path):
    report = drift_report(reference, with_positive_share(batch, 0.9), tokenizer, PARAMS)
    summary = report.summary()
    assert summary.startswith("Drift of ") and "fail" in summary.splitlines()[0]
    assert "- label_shift: fail (" in summary and "total variation distance" in summary
    path = report.write(tmp_path / "drift" / "report.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["status"] == "fail" and {c["name"] for c in raw["checks"]} == {"label_shift", "length_shift",
                                                                             "oov_increase"}
    assert set(raw["checks"][0]) >= {"name", "value", "warn", "fail", "status", "detail"}
    assert DriftReport.read(path) == report


def test_drift_params_sit_in_params_and_refuse_bad_thresholds():
    from components.config import ConfigError, parse_params

    raw = {"data": {"source": "x", "labels": ["a", "b"]}, "model": {"base_model": "x"}}
    assert parse_params(raw, env={}).drift == DriftParams()
    tuned = parse_params({**raw, "drift": {"label_shift": {"warn": 0.2, "fail": 0.4}}}, env={})
    assert tuned.drift.label_shift == DriftThresholds(warn=0.2, fail=0.4)
    with pytest.raises(ConfigError, match="drift.length_shift.fail"):
        parse_params({**raw, "drift": {"length_shift": {"warn": 0.1, "fail": 1.5}}}, env={})


def test_importing_the_module_imports_neither_gx_nor_transformers():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, components.data.drift; "
            "sys.exit(any(m in sys.modules for m in ('great_expectations', 'transformers', 'scipy')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0
