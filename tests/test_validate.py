"""validate_dataset with the real GX: a clean frame passes, and each check fails on a frame built to break it."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pytest

from components.config import DataParams
from components.data.validation.batch import validate_batch
from components.data.validation.quarantine import quarantine_rows
from components.data.validation.report import (
    DataValidationError,
    ValidationReport,
    assert_valid,
)
from components.data.validation.suite import validate_dataset
from tests.tiny import sentiment_frame

PARAMS = DataParams(source="unused", labels=["positive", "negative"], min_rows=20, min_chars=5, max_chars=200,
                    max_duplicate_fraction=0.02)
ROWS = 60


def text_id(text: str) -> str:
    return hashlib.sha256(" ".join(text.lower().split()).encode("utf-8")).hexdigest()[:16]


def dataset_frame(rows: int = ROWS) -> pd.DataFrame:
    """The pipeline's dataset frame, built from tiny's clean reviews; source_row = index + 2."""
    reviews = sentiment_frame(rows, seed=7)
    return pd.DataFrame({
        "id": reviews["review"].map(text_id),
        "text": reviews["review"],
        "label": reviews["sentiment"],
        "batch_id": "batch-1",
        "source_row": range(2, rows + 2),
    })


def set_text(frame: pd.DataFrame, position: int, text: str | None) -> None:
    frame.loc[position, "text"] = text
    frame.loc[position, "id"] = None if text is None else text_id(text)


def copy_row(frame: pd.DataFrame, source: int, target: int, *, label: str | None = None) -> None:
    frame.loc[target, ["id", "text", "label"]] = frame.loc[source, ["id", "text", "label"]].to_numpy()
    if label is not None:
        frame.loc[target, "label"] = label


def other_label(label: str) -> str:
    return "negative" if label == "positive" else "positive"


@pytest.fixture(scope="module")
def clean_report() -> ValidationReport:
    return validate_dataset(dataset_frame(), PARAMS, source="clean.csv")


def test_clean_frame_passes(clean_report):
    assert clean_report.success
    assert clean_report.failures == []
    assert clean_report.rows == ROWS
    assert clean_report.checked == 10
    assert assert_valid(clean_report) is clean_report
    assert "passed" in clean_report.summary()


# Each case breaks one thing. rows_broken: source_row values the report must quote as examples.
def blank(frame):
    set_text(frame, 3, "   \t")
    set_text(frame, 8, "\u00a0\u3000")  # Unicode whitespace is blank too


def null_text(frame):
    set_text(frame, 4, None)


def lengths(frame):
    set_text(frame, 5, "x" * 201)
    set_text(frame, 9, "abcd")  # min_chars=5


def null_label(frame):
    frame.loc[6, "label"] = None


def unknown_label(frame):
    frame.loc[2, "label"] = "neutral"
    frame.loc[7, "label"] = "Positive"


def one_label_only(frame):
    frame["label"] = "positive"


def duplicates(frame):
    for target in (10, 11, 12):  # 3 of 60 rows = 5% > 2%
        copy_row(frame, 1, target)


def conflict(frame):
    copy_row(frame, 20, 21, label=other_label(frame.loc[20, "label"]))


CASES: list[tuple[str, Callable, str, str | None, int | None, list[int]]] = [
    # check, breaker, GX expectation, column, unexpected_count, example source_rows
    ("text_not_blank", blank, "expect_column_values_to_not_match_regex", "text", 2, [5, 10]),
    ("text_not_null", null_text, "expect_column_values_to_not_be_null", "text", 1, [6]),
    ("text_length", lengths, "expect_column_value_lengths_to_be_between", "text", 2, [7, 11]),
    ("label_not_null", null_label, "expect_column_values_to_not_be_null", "label", 1, [8]),
    ("label_in_labels", unknown_label, "expect_column_values_to_be_in_set", "label", 2, [4, 9]),
    ("all_labels_present", one_label_only, "expect_column_distinct_values_to_contain_set", "label", None, []),
    ("duplicate_texts", duplicates, "expect_column_values_to_be_in_set", "is_duplicate_text", 3, [12, 13, 14]),
    ("conflicting_labels", conflict, "expect_column_values_to_be_in_set", "has_conflicting_label", 2, [22, 23]),
]


@pytest.mark.parametrize("check,breaker,expectation,column,count,example_rows", CASES, ids=[c[0] for c in CASES])
def test_each_check_fails_on_a_frame_built_to_break_it(check, breaker, expectation, column, count, example_rows):
    frame = dataset_frame()
    breaker(frame)

    report = validate_dataset(frame, PARAMS, source="broken.csv")

    assert not report.success
    failure = {f.check: f for f in report.failures}[check]
    assert failure.expectation == expectation
    assert failure.column == column
    assert failure.unexpected_count == count
    assert [e["source_row"] for e in failure.examples] == example_rows
    if count is not None:
        assert failure.unexpected_percent == pytest.approx(100 * count / ROWS, rel=0.05)
    for example in failure.examples:
        assert example["batch_id"] == "batch-1"
        assert set(example) >= {"source_row", "batch_id", "id", "text", "label"}
    summary = report.summary()
    assert check in summary and expectation in summary
    for row in example_rows[:3]:
        assert f"row {row} " in summary


def test_the_callers_frame_is_left_alone():
    frame = dataset_frame()
    unknown_label(frame)
    frame.index = range(100, 100 + ROWS)  # a non-default index must not confuse the examples
    before = frame.copy()
    failure = {f.check: f for f in validate_dataset(frame, PARAMS, source="x").failures}["label_in_labels"]
    assert [e["source_row"] for e in failure.examples] == [4, 9]
    pd.testing.assert_frame_equal(frame, before)


def test_missing_required_column_fails_the_columns_check_only():
    frame = dataset_frame().drop(columns=["label"])
    report = validate_dataset(frame, PARAMS, source="nolabel.csv")
    failures = {f.check: f for f in report.failures}
    assert set(failures) == {"required_columns"}
    assert failures["required_columns"].expectation == "expect_table_columns_to_match_set"
    assert "['label']" in failures["required_columns"].observed


def test_too_few_rows():
    report = validate_dataset(dataset_frame(5), PARAMS, source="tiny.csv")
    failure = {f.check: f for f in report.failures}["min_rows"]
    assert failure.expectation == "expect_table_row_count_to_be_between"
    assert failure.observed == "5 rows"


def test_missing_label_is_named():
    frame = dataset_frame()
    frame["label"] = "positive"
    failure = {f.check: f for f in validate_dataset(frame, PARAMS, source="x").failures}["all_labels_present"]
    assert "negative" in failure.observed


def test_duplicates_within_the_allowed_fraction_pass():
    frame = dataset_frame()
    copy_row(frame, 1, 10)  # 1 of 60 rows = 1.7% <= 2%
    report = validate_dataset(frame, PARAMS, source="x")
    assert report.success, report.summary()


def test_duplicate_limit_is_inclusive_despite_float_rounding():
    # 1 - 0.18 == 0.8200000000000001 in floats, above 41/50 == 0.82: a naive "mostly" fails here.
    frame = dataset_frame(50)
    for target in range(1, 10):  # 9 of 50 rows = exactly 18%
        copy_row(frame, 0, target)
    params = PARAMS.model_copy(update={"max_duplicate_fraction": 0.18})
    report = validate_dataset(frame, params, source="x")
    assert report.success, report.summary()
    copy_row(frame, 0, 10)  # 10 of 50 = 20%
    assert not validate_dataset(frame, params, source="x").success


def test_duplicate_examples_point_at_the_first_occurrence():
    frame = dataset_frame()
    duplicates(frame)
    failure = {f.check: f for f in validate_dataset(frame, PARAMS, source="x").failures}["duplicate_texts"]
    assert {e["first_source_row"] for e in failure.examples} == {3}


def test_conflicting_label_examples_list_both_labels():
    frame = dataset_frame()
    conflict(frame)
    failure = {f.check: f for f in validate_dataset(frame, PARAMS, source="x").failures}["conflicting_labels"]
    assert failure.examples[0]["labels_for_this_text"] == ["negative", "positive"]


def test_example_text_is_truncated_to_200_chars():
    frame = dataset_frame()
    set_text(frame, 5, "y" * 5000)
    failure = {f.check: f for f in validate_dataset(frame, PARAMS, source="x").failures}["text_length"]
    assert len(failure.examples[0]["text"]) == 200


def test_assert_valid_raises_with_the_summary_and_the_report():
    frame = dataset_frame()
    unknown_label(frame)
    report = validate_dataset(frame, PARAMS, source="labels.csv")
    with pytest.raises(DataValidationError) as caught:
        assert_valid(report)
    assert caught.value.report is report
    assert str(caught.value) == report.summary()
    assert "labels.csv" in str(caught.value) and "row 4 label='neutral'" in str(caught.value)


def test_report_json_round_trips(tmp_path):
    frame = dataset_frame()
    unknown_label(frame)
    duplicates(frame)
    report = validate_dataset(frame, PARAMS, source="labels.csv")
    path = report.write(tmp_path / "validation" / "report.json")
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["success"] is False and raw["source"] == "labels.csv"
    required = {"expectation", "column", "description", "unexpected_count", "unexpected_percent", "examples"}
    assert required <= set(raw["failures"][0])
    assert ValidationReport.read(path) == report
    assert ValidationReport.model_validate(raw) == report


def test_importing_the_module_does_not_import_gx():
    code = "import sys, components.data.validation.suite, components.data.validation.quarantine, components.data.validation.batch, components.data.readers; sys.exit('great_expectations' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0


# --- validate_batch: may a quarantined batch join the existing data? --------------------------------

BATCH_PARAMS = DataParams(source="unused", labels=["positive", "negative"], min_chars=5, max_chars=200,
                          min_batch_rows=10, min_examples_per_label=3, max_quarantine_fraction=0.05)


def batch_frame(rows: int = 20, seed: int = 8, batch_id: str = "batch-2") -> pd.DataFrame:
    frame = dataset_frame(rows)
    reviews = sentiment_frame(rows, seed=seed)
    frame["text"], frame["label"] = reviews["review"] + " (new)", reviews["sentiment"]
    frame["id"], frame["batch_id"] = frame["text"].map(text_id), batch_id
    return frame


def batch_failures(report: ValidationReport) -> dict[str, Any]:
    return {f.check: f for f in report.failures}


def test_a_sound_batch_passes_every_batch_check():
    batch = batch_frame()
    report = validate_batch(batch, rows_in=20, quarantined=0, existing=dataset_frame(), data=BATCH_PARAMS)
    assert report.success, report.summary()
    assert report.checked == 4
    assert report.source == "batch batch-2" and report.rows == 20


def test_too_few_clean_rows_in_the_batch():
    report = validate_batch(batch_frame(9), rows_in=9, quarantined=0, existing=dataset_frame(), data=BATCH_PARAMS)
    failure = batch_failures(report)["min_batch_rows"]
    assert failure.expectation == "expect_table_row_count_to_be_between"
    assert failure.observed == "9 clean rows (9 input rows, 0 quarantined)"
    assert set(batch_failures(report)) == {"min_batch_rows"}


def test_a_label_with_too_few_examples_counts_existing_and_batch_together():
    existing = dataset_frame(10).assign(label="positive")
    batch = batch_frame(12).assign(label="positive")
    batch.loc[[0, 1], "label"] = "negative"  # 2 negatives in all, 3 needed
    report = validate_batch(batch, rows_in=12, quarantined=0, existing=existing, data=BATCH_PARAMS)
    failure = batch_failures(report)["min_examples_per_label"]
    assert failure.expectation == "expect_column_values_to_be_between"
    assert failure.observed == "label 'negative' has 2 example(s) (0 existing + 2 in the batch)"
    assert failure.examples == [{"label": "negative", "in_existing": 0, "in_batch": 2, "examples": 2}]
    assert "label 'negative' examples=2" in report.summary()

    existing.loc[0, "label"] = "negative"  # the third negative is in the existing data: enough
    report = validate_batch(batch, rows_in=12, quarantined=0, existing=existing, data=BATCH_PARAMS)
    assert report.success, report.summary()


def test_a_label_missing_everywhere_fails_even_without_existing_data():
    params = BATCH_PARAMS.model_copy(update={"labels": ["positive", "negative", "neutral"]})
    report = validate_batch(batch_frame(), rows_in=20, quarantined=0, existing=None, data=params)
    assert batch_failures(report)["min_examples_per_label"].observed == (
        "label 'neutral' has 0 example(s) (0 existing + 0 in the batch)")


def test_too_many_quarantined_rows_fail_the_batch_and_the_limit_is_inclusive():
    batch = batch_frame(95)
    at_limit = validate_batch(batch, rows_in=100, quarantined=5, existing=None, data=BATCH_PARAMS)  # 5% of 100
    assert at_limit.success, at_limit.summary()

    over = validate_batch(batch.iloc[:94], rows_in=100, quarantined=6, existing=None, data=BATCH_PARAMS)
    failure = batch_failures(over)["max_quarantine_fraction"]
    assert failure.expectation == "expect_column_values_to_be_between"
    assert failure.observed == "6 of 100 input rows quarantined (6.00%)"
    assert (failure.unexpected_count, failure.unexpected_percent) == (6, 6.0)


def test_conflicting_labels_within_the_batch():
    batch = batch_frame()
    copy_row(batch, 3, 4, label=other_label(batch.loc[3, "label"]))
    report = validate_batch(batch, rows_in=20, quarantined=0, existing=None, data=BATCH_PARAMS)
    failure = batch_failures(report)["conflicting_labels"]
    assert failure.expectation == "expect_column_values_to_be_in_set"
    assert [e["source_row"] for e in failure.examples] == [5, 6]
    assert failure.examples[0]["labels_for_this_text"] == ["negative", "positive"]


def test_conflicting_labels_between_the_batch_and_the_existing_data_flag_the_batch_rows_only():
    existing, batch = dataset_frame(), batch_frame()
    batch.loc[7, ["id", "text"]] = existing.loc[2, ["id", "text"]].to_numpy()
    batch.loc[7, "label"] = other_label(existing.loc[2, "label"])
    copy_row(existing, 10, 11, label=other_label(existing.loc[10, "label"]))  # old news: not this batch's fault

    report = validate_batch(batch, rows_in=20, quarantined=0, existing=existing, data=BATCH_PARAMS)

    failure = batch_failures(report)["conflicting_labels"]
    assert failure.unexpected_count == 1
    [example] = failure.examples
    assert example["source_row"] == 9 and example["batch_id"] == "batch-2"
    assert example["labels_for_this_text"] == ["negative", "positive"]
    assert "row 9 label=" in report.summary()


def test_the_same_text_with_the_same_label_again_is_no_conflict():
    existing, batch = dataset_frame(), batch_frame()
    batch.loc[7, ["id", "text", "label"]] = existing.loc[2, ["id", "text", "label"]].to_numpy()
    assert validate_batch(batch, rows_in=20, quarantined=0, existing=existing, data=BATCH_PARAMS).success


def test_rows_that_do_not_add_up_are_refused():
    with pytest.raises(ValueError, match="rows do not add up"):
        validate_batch(batch_frame(), rows_in=25, quarantined=3, existing=None, data=BATCH_PARAMS)


def test_quarantine_then_batch_checks_end_to_end():
    batch = batch_frame(40)
    set_text(batch, 1, "x" * 500)
    batch.loc[2, "label"] = "neutral"
    batch.loc[3, "label"] = None
    quarantine = quarantine_rows(batch, BATCH_PARAMS)
    assert list(quarantine.quarantined["source_row"]) == [3, 4, 5]

    report = validate_batch(quarantine.clean, rows_in=len(batch), quarantined=len(quarantine.quarantined),
                            existing=dataset_frame(), data=BATCH_PARAMS)

    assert set(batch_failures(report)) == {"max_quarantine_fraction"}  # 3 of 40 = 7.5% > 5%
    assert batch_failures(report)["max_quarantine_fraction"].observed == "3 of 40 input rows quarantined (7.50%)"
    loose = BATCH_PARAMS.model_copy(update={"max_quarantine_fraction": 0.1})
    assert validate_batch(quarantine.clean, rows_in=40, quarantined=3, existing=dataset_frame(), data=loose).success


def test_a_batch_whose_every_row_was_quarantined_fails_on_rows_and_quarantine():
    batch = batch_frame(10).assign(label="neutral")
    quarantine = quarantine_rows(batch, BATCH_PARAMS)
    assert quarantine.clean.empty
    report = validate_batch(quarantine.clean, rows_in=10, quarantined=10, existing=dataset_frame(), data=BATCH_PARAMS)
    assert set(batch_failures(report)) == {"min_batch_rows", "max_quarantine_fraction"}
    assert report.source == "batch" and report.rows == 0
