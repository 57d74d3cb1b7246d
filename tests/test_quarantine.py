"""quarantine_rows with the real GX: bad rows are set aside with their reason, and no row is ever lost."""

from __future__ import annotations

import hashlib
import random

import pandas as pd
import pytest

from components.config import DataParams
from components.data.validation.quarantine import (
    QUARANTINE_COLUMNS,
    QuarantineResult,
    quarantine_rows,
)
from tests.tiny import sentiment_frame

PARAMS = DataParams(source="unused", labels=["positive", "negative"], min_chars=5, max_chars=200)
ROWS = 40
CONTROL_CHARACTERS = ["\x00", "\x07", "\x0b", "\x1b", "\x7f", "\x85", "\x9f"]


def text_id(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(" ".join(text.lower().split()).encode("utf-8")).hexdigest()[:16]


def dataset_frame(rows: int = ROWS) -> pd.DataFrame:
    """The pipeline's dataset frame, built from tiny's clean reviews; source_row = position + 2."""
    reviews = sentiment_frame(rows, seed=11)
    return pd.DataFrame({
        "id": reviews["review"].map(text_id).astype("str"),
        "text": reviews["review"].astype("str"),
        "label": reviews["sentiment"].astype("str"),
        "batch_id": pd.Series(["batch-2"] * rows, dtype="str"),
        "source_row": range(2, rows + 2),
    })


def set_texts(frame: pd.DataFrame, texts: dict[int, str | None]) -> None:
    for position, text in texts.items():
        frame.loc[position, "text"] = text
        frame.loc[position, "id"] = text_id(text)


def set_labels(frame: pd.DataFrame, labels: dict[int, str | None]) -> None:
    for position, label in labels.items():
        frame.loc[position, "label"] = label


def assert_nothing_lost(frame: pd.DataFrame, result: QuarantineResult) -> None:
    """Each input row is in exactly one output frame, unchanged, under its original index."""
    assert len(result.clean) + len(result.quarantined) == len(frame)
    assert list(result.clean.columns) == list(frame.columns)
    assert list(result.quarantined.columns) == list(frame.columns) + list(QUARANTINE_COLUMNS)
    assert set(result.clean["source_row"]).isdisjoint(result.quarantined["source_row"])
    rejoined = pd.concat([result.clean, result.quarantined[list(frame.columns)]]).sort_values("source_row")
    pd.testing.assert_frame_equal(rejoined, frame.sort_values("source_row"))


def test_a_clean_frame_loses_nothing_and_quarantines_nothing():
    frame = dataset_frame()
    result = quarantine_rows(frame, PARAMS)
    pd.testing.assert_frame_equal(result.clean, frame)
    assert result.quarantined.empty
    assert list(result.quarantined.columns) == list(frame.columns) + ["check", "expectation", "reason"]
    assert result.summary() == f"0 of {ROWS} rows quarantined, {ROWS} clean"


# check, GX expectation, breaker {position: value}, which column it sets, {source_row: reason}
CASES = [
    ("text_not_null", "expect_column_values_to_not_be_null", "text", {3: None},
     {5: "text is missing (null)"}),
    ("text_not_blank", "expect_column_values_to_not_match_regex", "text", {4: "      ", 9: "\u00a0\u3000\t \n\u2003"},
     {6: "text is only whitespace (6 characters)", 11: "text is only whitespace (6 characters)"}),
    ("text_length", "expect_column_value_lengths_to_be_between", "text", {5: "x" * 201, 7: "abcd"},
     {7: "text is 201 characters; data.max_chars is 200", 9: "text is 4 characters; data.min_chars is 5"}),
    ("text_decodable", "expect_column_values_to_not_match_regex", "text", {2: "caf\ufffd au lait \ufffd"},
     {4: "text contains the replacement character U+FFFD 2 time(s), first at character 4: bytes that were not "
         "valid in the source's encoding were replaced when it was decoded"}),
    ("text_no_control_characters", "expect_column_values_to_not_match_regex", "text",
     {6: "bell\x07 and escape\x1b"},
     {8: "text contains 2 control character(s), first U+0007 at character 5; only tab, newline and carriage "
         "return are allowed"}),
    ("label_not_null", "expect_column_values_to_not_be_null", "label", {8: None},
     {10: "label is missing (null)"}),
    ("label_in_labels", "expect_column_values_to_be_in_set", "label", {1: "neutral", 12: "Positive", 13: ""},
     {3: "label 'neutral' is not one of data.labels ['positive', 'negative']",
      14: "label 'Positive' is not one of data.labels ['positive', 'negative']",
      15: "label '' is not one of data.labels ['positive', 'negative']"}),
]


@pytest.mark.parametrize("check,expectation,column,breaks,reasons", CASES, ids=[c[0] for c in CASES])
def test_each_row_check_quarantines_exactly_the_rows_built_to_fail_it(check, expectation, column, breaks, reasons):
    frame = dataset_frame()
    (set_texts if column == "text" else set_labels)(frame, breaks)

    result = quarantine_rows(frame, PARAMS)

    assert_nothing_lost(frame, result)
    quarantined = result.quarantined.set_index("source_row")
    assert dict(quarantined["reason"]) == reasons
    assert set(quarantined["check"]) == {check}
    assert set(quarantined["expectation"]) == {expectation}
    assert result.counts_by_check() == {check: len(reasons)}


@pytest.mark.parametrize("character", CONTROL_CHARACTERS, ids=[f"U+{ord(c):04X}" for c in CONTROL_CHARACTERS])
def test_every_kind_of_control_character_is_quarantined(character):
    frame = dataset_frame(10)
    set_texts(frame, {4: f"a fine review{character} really"})
    result = quarantine_rows(frame, PARAMS)
    [reason] = result.quarantined["reason"]
    assert reason.startswith(f"text contains 1 control character(s), first U+{ord(character):04X} at character 14;")
    assert list(result.quarantined["check"]) == ["text_no_control_characters"]


def test_tab_newline_and_carriage_return_are_not_control_characters_here():
    frame = dataset_frame(10)
    set_texts(frame, {2: "line one\r\nline two\tand a tab"})
    assert quarantine_rows(frame, PARAMS).quarantined.empty


def test_the_reason_for_a_long_text_reads_plainly():
    frame = dataset_frame(5)
    set_texts(frame, {1: "y" * 12_004})
    result = quarantine_rows(frame, DataParams(source="unused", labels=["positive", "negative"], max_chars=5000))
    assert list(result.quarantined["reason"]) == ["text is 12,004 characters; data.max_chars is 5,000"]


def test_a_row_failing_several_checks_is_quarantined_once_under_its_first_check_with_every_reason():
    frame = dataset_frame(10)
    set_texts(frame, {3: "\x07" * 300})
    set_labels(frame, {3: "neutral"})

    result = quarantine_rows(frame, PARAMS)

    assert_nothing_lost(frame, result)
    [row] = result.quarantined.to_dict("records")
    assert row["check"] == "text_length"
    assert row["expectation"] == "expect_column_value_lengths_to_be_between"
    assert row["reason"] == (
        "text is 300 characters; data.max_chars is 200; "
        "text contains 300 control character(s), first U+0007 at character 1; only tab, newline and carriage "
        "return are allowed; "
        "label 'neutral' is not one of data.labels ['positive', 'negative']"
    )


def test_the_callers_index_is_kept_even_when_it_repeats():
    frame = dataset_frame(12)
    set_labels(frame, {2: "neutral", 7: None})
    frame.index = [5, 5, 5, 9, 9, 1, 1, 0, 0, 0, 3, 3]  # repeats, out of order: positions must not be confused
    before = frame.copy()

    result = quarantine_rows(frame, PARAMS)

    pd.testing.assert_frame_equal(frame, before)  # the caller's frame is left alone
    assert list(result.quarantined["source_row"]) == [4, 9]
    assert list(result.quarantined.index) == [5, 0]
    assert list(result.clean.index) == [5, 5, 9, 9, 1, 1, 0, 0, 3, 3]


def test_an_empty_frame_gives_two_empty_frames():
    frame = dataset_frame(1).iloc[:0]
    result = quarantine_rows(frame, PARAMS)
    assert result.rows == 0 and result.clean.empty and result.quarantined.empty
    assert list(result.quarantined.columns) == list(frame.columns) + list(QUARANTINE_COLUMNS)


def test_a_frame_without_a_label_column_is_refused_not_passed():
    with pytest.raises(ValueError, match=r"missing columns \['label'\]"):
        quarantine_rows(dataset_frame().drop(columns=["label"]), PARAMS)


# --- nothing lost, on randomized frames -----------------------------------------------------------

# Text and label makers, good and bad, picked at random per row. The oracle below says, in plain
# Python and independently of GX, whether a row must be quarantined.
TEXT_MAKERS = [
    lambda rng: " ".join(rng.choice(["good", "bad", "film", "été", "naïve"]) for _ in range(rng.randint(1, 9))),
    lambda rng: None,
    lambda rng: "",
    lambda rng: " " * rng.randint(1, 8),
    lambda rng: "x" * rng.randint(195, 205),
    lambda rng: "a" * rng.randint(1, 6),
    lambda rng: "bad\ufffdbytes",
    lambda rng: "ctl" + chr(rng.choice([0, 1, 8, 11, 12, 14, 31, 127, 128, 133, 159])) + "text",
    lambda rng: "ok\ttab\nnewline\rreturn",
    lambda rng: "\u00a0" * 6,  # Unicode whitespace only
]
LABEL_CHOICES = ["positive", "negative", "positive", "negative", None, "neutral", "", "POSITIVE"]


def must_quarantine(text: str | None, label: str | None) -> bool:
    if text is None or not text.strip() or not 5 <= len(text) <= 200 or "\ufffd" in text:
        return True
    if any(ord(c) < 32 and c not in "\t\n\r" or 127 <= ord(c) <= 159 for c in text):
        return True
    return label not in ("positive", "negative")


def random_frame(rng: random.Random) -> pd.DataFrame:
    rows = rng.choice([0, 1, 2, rng.randint(3, 250)])
    texts = [rng.choice(TEXT_MAKERS)(rng) for _ in range(rows)]
    return pd.DataFrame({
        "id": pd.Series([text_id(t) for t in texts], dtype="str"),
        "text": pd.Series(texts, dtype="str"),
        "label": pd.Series([rng.choice(LABEL_CHOICES) for _ in range(rows)], dtype="str"),
        "batch_id": pd.Series(["random"] * rows, dtype="str"),
        "source_row": range(2, rows + 2),
    }, index=[rng.randint(0, 5) for _ in range(rows)])


def test_no_row_is_ever_lost_and_each_lands_where_the_oracle_says():
    rng = random.Random(20240611)
    for _ in range(20):
        frame = random_frame(rng)
        result = quarantine_rows(frame, PARAMS)
        assert_nothing_lost(frame, result)
        expected = {row.source_row for row in frame.itertuples()
                    if must_quarantine(None if pd.isna(row.text) else row.text,
                                       None if pd.isna(row.label) else row.label)}
        assert set(result.quarantined["source_row"]) == expected
        assert result.quarantined["reason"].str.len().gt(0).all()
        assert sum(result.counts_by_check().values()) == len(result.quarantined)
