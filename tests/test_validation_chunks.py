"""The dataset suite a chunk at a time (components.data.validation.chunked): whatever the chunk size, the
report is validate_dataset's on the whole frame, to the byte; and the duplicate flags computed from hashes
are with_duplicate_flags'. Real GX throughout."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pytest

from components.config import DataParams
from components.data.ingest import BatchRecord, DataStore, RawSource, build_dataset
from components.data.validation import chunked
from components.data.validation.chunked import build_sample_data_docs, stored_chunks, validate_chunks
from components.data.validation.duplicates import (
    CONFLICT_FLAG,
    DUPLICATE_FLAG,
    flag_arrays,
    flag_inputs,
    with_duplicate_flags,
)
from components.data.validation.suite import validate_dataset
from tests.test_validate import PARAMS, copy_row, dataset_frame, other_label, set_text
from tests.tiny import ner_records

TOKEN = "token-classification"
CHUNK_SIZES = [1, 3, 7, None]  # None: the whole frame in one chunk
ROWS = 40


def slices(frame: pd.DataFrame, size: int | None) -> Callable[[], Iterator[pd.DataFrame]]:
    size = size or len(frame)
    return lambda: (frame.iloc[start:start + size] for start in range(0, len(frame), size))


def assert_same_report(frame: pd.DataFrame, data: DataParams, size: int | None, task: str = "sequence-classification"):
    whole = validate_dataset(frame, data, source="data", task=task)
    checked = validate_chunks(slices(frame, size), data, source="data", task=task)
    assert checked.report.model_dump_json() == whole.model_dump_json()
    return whole


# --- the flags from hashes ------------------------------------------------------------------------------


def random_frame(rng: np.random.Generator, rows: int) -> pd.DataFrame:
    """Few distinct keys and labels: repeats, conflicts, null keys and null labels, official rows."""
    return pd.DataFrame({
        "id": pd.Series(rng.choice(["a1", "b2", "c3", "d4", None], rows), dtype="str"),
        "text": pd.Series(rng.choice(["x y", "x", "y z", "z", None], rows), dtype="str"),
        "label": pd.Series(rng.choice(["p", "q", "r", None], rows, p=[0.5, 0.2, 0.1, 0.2]), dtype="str"),
        "split": rng.choice(["", "", "train", "test"], rows),
    })


@pytest.mark.parametrize("token_task", [False, True])
def test_flags_from_hashes_are_those_of_with_duplicate_flags(token_task):
    rng = np.random.default_rng(7)
    for _ in range(200):
        frame = random_frame(rng, int(rng.integers(0, 30)))
        if rng.random() < 0.2:
            frame = frame.drop(columns=["label"])
        want = with_duplicate_flags(frame, token_task)
        size = int(rng.integers(1, 8))  # hashed a chunk at a time, as the first pass does
        parts = [flag_inputs(frame.iloc[start:start + size], token_task)
                 for start in range(0, len(frame), size)] or [flag_inputs(frame, token_task)]
        keys, labels, official = ([part[i] for part in parts] for i in range(3))
        got = flag_arrays(np.concatenate(keys), np.concatenate(labels) if "label" in frame.columns else None,
                          np.concatenate(official))
        assert set(got) == {DUPLICATE_FLAG, CONFLICT_FLAG} & set(want.columns)
        for name, flags in got.items():
            assert flags.dtype == bool and flags.tolist() == want[name].tolist(), (name, frame)


def test_nan_labels_are_no_label_and_null_keys_are_one_key():
    frame = pd.DataFrame({"id": ["a", "a", "a", None, None, "b", "b"],
                          "label": ["p", None, "p", "p", "q", None, None]})
    keys, labels, official = flag_inputs(frame)
    flags = flag_arrays(keys, labels, official)
    assert flags[DUPLICATE_FLAG].tolist() == [False, True, True, False, True, False, True]
    assert flags[CONFLICT_FLAG].tolist() == [False, False, False, True, True, False, False]
    assert flags[CONFLICT_FLAG].tolist() == with_duplicate_flags(frame)[CONFLICT_FLAG].tolist()


# --- sequence data --------------------------------------------------------------------------------------


def clean(frame: pd.DataFrame) -> None:
    pass


def several(frame: pd.DataFrame) -> None:
    """Texts too short, blank and null (two nulls: a duplicate of a null text, quoted without context),
    unknown labels, too many repeats of a text first seen in the first chunk, and labels that disagree
    across chunks."""
    set_text(frame, 2, "abcd")
    set_text(frame, 29, "   ")
    set_text(frame, 11, None)
    set_text(frame, 35, None)
    frame.loc[[4, 31], "label"] = ["neutral", "Positive"]
    for target in (9, 17, 38):
        copy_row(frame, 1, target)
    copy_row(frame, 5, 26, label=other_label(frame.loc[5, "label"]))
    copy_row(frame, 5, 33)
    frame.loc[20, "label"] = None


def one_label_and_too_few_rows(frame: pd.DataFrame) -> None:
    frame.drop(index=range(15, ROWS), inplace=True)
    frame["label"] = "positive"


def no_label_column(frame: pd.DataFrame) -> None:
    frame.drop(columns=["label"], inplace=True)
    set_text(frame, 6, "x" * 300)


CASES = {"clean": clean, "several": several, "one_label_and_too_few_rows": one_label_and_too_few_rows,
         "no_label_column": no_label_column}


@pytest.mark.parametrize("size", CHUNK_SIZES)
@pytest.mark.parametrize("case", list(CASES))
def test_the_chunked_report_is_the_whole_frame_report(case, size):
    frame = dataset_frame(ROWS)
    CASES[case](frame)
    report = assert_same_report(frame, PARAMS, size)
    assert report.success == (case == "clean")


def test_the_several_case_fails_every_row_check_with_context_from_other_chunks():
    frame = dataset_frame(ROWS)
    several(frame)
    report = assert_same_report(frame, PARAMS, 3)
    failures = {f.check: f for f in report.failures}
    assert set(failures) == {"text_not_null", "text_not_blank", "text_length", "label_not_null", "label_in_labels",
                             "duplicate_texts", "conflicting_labels"}
    duplicates = failures["duplicate_texts"].examples
    assert [e["source_row"] for e in duplicates] == [11, 19, 28, 35, 37]
    assert [e.get("first_source_row") for e in duplicates] == [3, 3, 7, 7, None]  # 37: the second null text
    assert failures["conflicting_labels"].examples[0]["labels_for_this_text"] == ["negative", "positive"]


@pytest.mark.parametrize("size", [3, 7])
def test_the_duplicate_limit_is_judged_on_all_rows_as_gx_judges_it(size):
    # 9 of 50 rows repeat an earlier text: exactly 18% passes; a tenth fails. Each chunk alone says otherwise.
    params = PARAMS.model_copy(update={"max_duplicate_fraction": 0.18})
    frame = dataset_frame(50)
    for target in range(41, 50):
        copy_row(frame, 0, target)
    assert assert_same_report(frame, params, size).success
    copy_row(frame, 0, 40)
    assert not assert_same_report(frame, params, size).success


# --- token data -----------------------------------------------------------------------------------------

TOKEN_DATA = DataParams(source="unused", labels=["PER", "ORG", "LOC"], min_rows=10, min_chars=1,
                        max_duplicate_fraction=0.05)


def token_frame(rows: int = 30) -> pd.DataFrame:
    records = ner_records(rows, seed=3)
    split = ["train"] * 4 + [""] * (rows - 4)
    raw = pd.DataFrame({"tokens": [r["tokens"] for r in records], "tags": [r["tags"] for r in records],
                        "source_row": range(1, rows + 1), "split": split})
    built, _ = build_dataset(RawSource(raw, "ner@1", "ner"), TOKEN_DATA, task=TOKEN)
    return built.drop(columns=["tokens", "tags"])


def broken_tokens(frame: pd.DataFrame) -> None:
    """Tags that do not match the tokens, an I- tag after O, an official sentence repeated outside the split
    (a duplicate and, with another label, a conflict), and official repeats that count for nothing."""
    frame.loc[3, "label"] = "O " + frame.loc[3, "label"]
    frame.loc[22, "label"] = "I-PER " + " ".join(frame.loc[22, "label"].split(" ")[1:])
    frame.loc[[12, 25], ["text", "label"]] = frame.loc[[0, 0], ["text", "label"]].to_numpy()
    frame.loc[27, ["text", "label"]] = [frame.loc[1, "text"], "O" + " O" * (len(frame.loc[1, "text"].split()) - 1)]
    frame.loc[2, ["text", "label"]] = frame.loc[1, ["text", "label"]].to_numpy()  # official: never flagged


@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_token_data_chunked_equals_whole(size):
    with_misc = TOKEN_DATA.model_copy(update={"labels": ["PER", "ORG", "LOC", "MISC"]})
    assert assert_same_report(token_frame(), TOKEN_DATA, size, task=TOKEN).success
    frame = token_frame()
    broken_tokens(frame)
    report = assert_same_report(frame, with_misc, size, task=TOKEN)
    assert {f.check for f in report.failures} == {"tokens_match_tags", "iob2_consistent", "duplicate_texts",
                                                  "conflicting_labels", "entity_type_present[MISC]"}


# --- the stored dataset ---------------------------------------------------------------------------------


def write_store(data_dir: Path, frames: list[pd.DataFrame]) -> DataStore:
    """A dataset of these batch files, as ingest writes them (a batch may lack a column others have)."""
    store = DataStore(data_dir)
    (data_dir / "batches").mkdir(parents=True)
    records = []
    for number, frame in enumerate(frames):
        name = f"batches/{number:04d}-part.csv"
        frame.to_csv(data_dir / name, index=False, lineterminator="\n")
        records.append(BatchRecord(batch_id=f"part@{number}", source="test", ingested_at=None, base=number == 0,
                                   rows_read=len(frame), accepted=len(frame), quarantined=0, duplicates=0,
                                   batch_file=name, quarantine_file=f"quarantine/{number:04d}-part.csv",
                                   report_dir=f"reports/{number:04d}-part"))
    store.write_manifest(records)
    return store


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_stored_chunks_read_what_the_store_reads(tmp_path, size):
    frame = dataset_frame(ROWS)
    several(frame)
    first, second = frame.iloc[:17].assign(region="north"), frame.iloc[17:].assign(split="")
    store = write_store(tmp_path / "data", [first, frame.iloc[:0], second])  # an empty batch file between
    whole = store.read()
    chunks = stored_chunks(store.data_dir, rows=size)
    lengths = [len(chunk) for chunk in chunks()]
    assert max(lengths) == min(size, 23) and sum(lengths) == ROWS
    assert pd.concat(list(chunks()), ignore_index=True).equals(whole)
    checked = validate_chunks(chunks, PARAMS, source="data")
    assert checked.report.model_dump_json() == validate_dataset(whole, PARAMS, source="data").model_dump_json()


def test_no_dataset_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dataset"):
        stored_chunks(tmp_path / "data")


def test_data_docs_of_the_first_chunk_say_so(tmp_path):
    frame = dataset_frame(ROWS)
    frame.loc[30, "label"] = "neutral"
    store = write_store(tmp_path / "data", [frame])
    chunks = stored_chunks(store.data_dir, rows=25)
    checked = validate_chunks(chunks, PARAMS, source="data/x")
    index = build_sample_data_docs(chunks, checked, PARAMS, tmp_path / "docs", source="data/x")
    pages = " ".join(html.unescape(p.read_text(encoding="utf-8")) for p in (tmp_path / "docs").rglob("*.html"))
    assert index.is_file()
    assert "tunegate's dataset checks on data/x (40 rows; Data Docs rendered on the first 25 rows, " \
           "the report covers all rows)" in pages
    assert not checked.report.success  # row 30 is past the pages' rows, not past the report's


# --- the stage, in a real project -----------------------------------------------------------------------


def page_notes(docs: Path) -> str:
    pages = " ".join(p.read_text(encoding="utf-8") for p in docs.rglob("*.html"))
    return re.sub(r"\s+", " ", html.unescape(pages))


def test_the_validate_stage_writes_the_report_of_the_whole_frame(tmp_path, monkeypatch):
    from components import stages
    from components.config import load_params
    from components.data.ingest import ingest_batch, read_configured_source, read_dataset
    from components.layout import ProjectLayout
    from tests.project import make_project

    root = make_project(tmp_path / "project", tmp_path / "no-model", rows=300)
    layout, settings = ProjectLayout(root), load_params(root / "params.yaml")
    ingest_batch(read_configured_source(settings.data, root), settings.data, DataStore(layout.data_dir), base=True)
    whole = validate_dataset(read_dataset(layout.data_dir), settings.data, source=str(layout.data_dir))
    expected = whole.write(tmp_path / "whole.json").read_bytes()

    stages.validate(layout, settings)  # the dataset fits in one chunk: today's report, to the byte
    assert layout.validation_report.read_bytes() == expected
    assert "Data Docs rendered on the first" not in page_notes(layout.validation_docs)

    monkeypatch.setattr(chunked, "CHUNK_ROWS", 97)
    stages.validate(layout, settings)
    assert layout.validation_report.read_bytes() == expected
    rows = json.loads(expected)["rows"]
    assert f"({rows:,} rows; Data Docs rendered on the first 97 rows, the report covers all rows)" in \
        page_notes(layout.validation_docs)
