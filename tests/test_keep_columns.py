"""data.keep_columns: a column of the user's data (source, language...) travels from the file through
ingest into the split CSVs, so that evaluate.slices can select on it; nothing else moves."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from components.config import ConfigError, DataParams, SplitParams, parse_params
from components.data.ingest import DataStore, ingest_batch, read_file_source, rules_fingerprint
from components.data.preprocess import assign_splits
from components.data.readers import IngestError, read_labelled_file
from components.data.validation.suite import validate_dataset
from components.model.slices import slice_metrics
from tests.tiny import sentiment_frame

LABELS = ["negative", "positive"]
KEEP = DataParams(source="base.csv", text_column="review", label_column="sentiment", labels=LABELS, min_rows=10,
                  max_chars=200, max_quarantine_fraction=0.3, keep_columns=["source"])
PLAIN = KEEP.model_copy(update={"keep_columns": []})
BASE = {"data": {"source": "x.csv", "labels": LABELS}, "model": {"base_model": "org/model"}}


def with_source(rows: int = 200, seed: int = 3) -> pd.DataFrame:
    frame = sentiment_frame(rows, seed=seed)
    frame["source"] = ["web" if i % 3 else "print" for i in range(len(frame))]
    frame["language"] = "en"
    frame.loc[5, "review"] = "   "  # quarantined: blank text
    return frame


def test_a_kept_column_reaches_the_splits_and_a_slice_measures_it(tmp_path):
    frame = with_source()
    path = tmp_path / "base.csv"
    frame.to_csv(path, index=False)
    kept_store, plain_store = DataStore(tmp_path / "kept"), DataStore(tmp_path / "plain")
    kept = ingest_batch(read_file_source(path, KEEP), KEEP, kept_store, base=True).batch
    plain = ingest_batch(read_file_source(path, PLAIN), PLAIN, plain_store, base=True).batch
    batch = pd.read_csv(kept_store.data_dir / kept.batch_file, dtype=str, keep_default_na=False)
    assert list(batch.columns) == ["id", "text", "label", "batch_id", "source_row", "source"]
    assert "language" not in batch.columns  # only the columns asked for
    quarantined = pd.read_csv(kept_store.data_dir / kept.quarantine_file, dtype=str, keep_default_na=False)
    assert quarantined.loc[0, "source"] == frame.loc[5, "source"] and quarantined.loc[0, "check"] == "text_not_blank"
    # The plain project's files are as before the option existed; the ids are the same either way.
    plain_batch = pd.read_csv(plain_store.data_dir / plain.batch_file, dtype=str, keep_default_na=False)
    assert list(plain_batch.columns) == ["id", "text", "label", "batch_id", "source_row"]
    assert batch["id"].tolist() == plain_batch["id"].tolist()
    # Keeping a column is a rule of its own: a dataset checked without it is checked again.
    assert rules_fingerprint(PLAIN) == hashlib.sha256(PLAIN.model_dump_json().encode()).hexdigest()[:12]
    assert rules_fingerprint(PLAIN) != rules_fingerprint(KEEP)

    dataset = kept_store.read()
    assert validate_dataset(dataset, KEEP, source="kept").success  # the GX suite accepts the extra column
    splits = assign_splits(dataset, SplitParams(test_fraction=0.3), KEEP.keep_columns)
    plain_splits = assign_splits(plain_store.read(), SplitParams(test_fraction=0.3))
    for name, split in splits.items():  # the same rows in the same splits, one column more
        assert split.drop(columns=["source"]).equals(plain_splits[name]), name
    test_csv = tmp_path / "test.csv"
    splits["test"].to_csv(test_csv, index=False, lineterminator="\n")
    test = pd.read_csv(test_csv, dtype=str, keep_default_na=False)  # as evaluation and the gate read it
    assert set(test["source"]) == {"web", "print"}

    evaluate = parse_params({**BASE, "data": {**BASE["data"], "keep_columns": ["source"]},
                             "evaluate": {"slices": [{"name": "web", "column": "source", "values": ["web"]}],
                                          "min_slice_rows": 5}}, env={}).evaluate
    predicted = ["positive"] * len(test)
    report = slice_metrics(test, predicted, LABELS, evaluate)["web"]
    web = test[test["source"] == "web"]
    assert report["rows"] == len(web) and report["selects"] == "source in web"
    assert report["accuracy"] == pytest.approx((web["label"] == "positive").mean())


def test_an_older_batch_without_the_column_reads_as_empty(tmp_path):
    store = DataStore(tmp_path / "data")
    sentiment_frame(120, seed=3).to_csv(tmp_path / "old.csv", index=False)
    ingest_batch(read_file_source(tmp_path / "old.csv", PLAIN), PLAIN, store, base=True)
    with_source(60, seed=9).to_csv(tmp_path / "new.csv", index=False)
    ingest_batch(read_file_source(tmp_path / "new.csv", KEEP), KEEP, store, base=False)
    dataset = store.read()
    assert set(dataset["source"].iloc[:100]) == {""} and set(dataset["source"].iloc[-50:]) <= {"web", "print"}
    assert "source" in assign_splits(dataset.drop(columns=["source"]), SplitParams(), ["source"])["test"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_every_reader_carries_kept_columns_as_text_and_names_a_missing_one(tmp_path, suffix):
    frame = pd.DataFrame({"review": ["good", "bad", "fine"], "sentiment": ["positive", "negative", "positive"],
                          "source": ["web", None, "print"], "year": [2021, 2022, 2023]})
    path = tmp_path / f"rows{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    read = read_labelled_file(path, KEEP.model_copy(update={"keep_columns": ["source", "year"]}))
    assert read["source"].tolist() == ["web", "", "print"] and read["year"].tolist() == ["2021", "2022", "2023"]
    with pytest.raises(IngestError, match=r"no column 'language' \(named in data.keep_columns\); columns found: "
                                          r"\['review', 'sentiment', 'source', 'year'\]") as error:
        read_labelled_file(path, KEEP.model_copy(update={"keep_columns": ["language"]}))
    assert str(path) in str(error.value)


@pytest.mark.parametrize(("data", "evaluate", "message"), [
    ({}, [{"name": "web", "column": "source", "values": ["web"]}],
     r"slice 'web': column 'source' is not in the test split, which holds label, batch_id, id \(.*add it to data"),
    ({"keep_columns": ["language"]}, [{"name": "web", "column": "source", "values": ["web"]}],
     r"which holds label, batch_id, id, language \("),
    ({"keep_columns": ["source", "source"]}, [], r"data.keep_columns: source appear\(s\) more than once"),
    ({"keep_columns": ["text"]}, [], r"data.keep_columns: text is the text or label column"),
    ({"keep_columns": ["batch_id"]}, [], r"data.keep_columns: batch_id is a column tunegate writes itself"),
    ({"keep_columns": ["a b"]}, [], r"data.keep_columns.0"),
])
def test_params_refuse_a_slice_on_a_column_not_kept_and_bad_kept_columns(data, evaluate, message):
    with pytest.raises(ConfigError, match=message):
        parse_params({**BASE, "data": {**BASE["data"], **data}, "evaluate": {"slices": evaluate}}, env={})


def test_a_json_lines_record_without_the_kept_field_reads_as_empty(tmp_path):
    path = tmp_path / "rows.jsonl"
    records = [{"review": "good", "sentiment": "positive", "source": "web"},
               {"review": "bad", "sentiment": "negative"}]  # no source field: ""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert read_labelled_file(path, KEEP)["source"].tolist() == ["web", ""]
