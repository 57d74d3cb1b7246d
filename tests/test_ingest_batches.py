"""Batches in, nothing lost: every row read is accepted, quarantined with its reason, or counted as
a duplicate; bad batches add nothing; drift from the champion's data stops a batch."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from components.config import DataParams, DriftParams, SplitParams
from components.data.ingest import (
    DataStore,
    DriftFailure,
    ingest_batch,
    read_file_source,
)
from components.data.preprocess import assign_splits
from components.data.validation.report import DataValidationError
from tests.tiny import sentiment_frame

DATA = DataParams(source="base.csv", text_column="review", label_column="sentiment", labels=["negative", "positive"],
                  label_map={"pos": "positive", "neg": "negative"}, exclude_labels=["plot"], max_chars=200,
                  min_rows=10, max_quarantine_fraction=0.3)


def write(path, frame: pd.DataFrame):
    frame.to_csv(path, index=False)
    return path


def base_frame() -> pd.DataFrame:
    good = sentiment_frame(200, seed=3)
    bad = pd.DataFrame({"review": ["   ", "x" * 500, "fine words\x07 here", "a perfectly fine review", "story of a man"],
                        "sentiment": ["positive", "negative", "positive", "meh", "plot"]})
    return pd.concat([good, bad], ignore_index=True)


def quarantine(store: DataStore, record) -> pd.DataFrame:
    return pd.read_csv(store.data_dir / record.quarantine_file, keep_default_na=False)


def test_every_row_read_is_accepted_quarantined_or_a_known_duplicate(tmp_path):
    store = DataStore(tmp_path / "data")
    first = ingest_batch(read_file_source(write(tmp_path / "base.csv", base_frame()), DATA), DATA, store, base=True)
    b = first.batch
    assert (b.rows_read, b.accepted, b.quarantined, b.duplicates) == (205, 200, 5, 0)
    reasons = quarantine(store, b).set_index("source_row")
    assert reasons.loc[202, "check"] == "text_not_blank"
    assert reasons.loc[203, "check"] == "text_length" and "500 characters" in reasons.loc[203, "reason"]
    assert reasons.loc[204, "check"] == "text_no_control_characters"
    assert reasons.loc[205, "check"] == "label_in_labels" and "meh" in reasons.loc[205, "reason"]
    assert reasons.loc[206, "check"] == "excluded_label"

    second_rows = pd.concat([sentiment_frame(200, seed=3).head(30), sentiment_frame(50, seed=4),
                             pd.DataFrame({"review": [""], "sentiment": ["positive"]})], ignore_index=True)
    second = ingest_batch(read_file_source(write(tmp_path / "more.csv", second_rows), DATA), DATA, store, base=False)
    b2 = second.batch
    assert b2.rows_read == b2.accepted + b2.quarantined + b2.duplicates == 81
    assert (b2.duplicates, b2.quarantined) == (30, 1)
    assert b2.ingested_at is not None and b.ingested_at is None
    assert second.dataset_rows == b.accepted + b2.accepted == len(store.read())
    assert list(store.read()["batch_id"].unique()) == [b.batch_id, b2.batch_id]

    again = ingest_batch(read_file_source(tmp_path / "more.csv", DATA), DATA, store, base=False)
    assert again.already_present and again.dataset_rows == second.dataset_rows


def test_old_rows_keep_their_split_when_a_batch_is_added(tmp_path):
    store = DataStore(tmp_path / "data")
    ingest_batch(read_file_source(write(tmp_path / "base.csv", base_frame()), DATA), DATA, store, base=True)
    before = {r.id: s for s, f in assign_splits(store.read(), SplitParams()).items() for r in f.itertuples()}
    ingest_batch(read_file_source(write(tmp_path / "more.csv", sentiment_frame(300, seed=9)), DATA), DATA, store,
                 base=False)
    after = {r.id: s for s, f in assign_splits(store.read(), SplitParams()).items() for r in f.itertuples()}
    assert len(after) > len(before)
    assert all(after[i] == s for i, s in before.items())


def test_a_batch_that_fails_a_batch_check_adds_nothing_and_says_why(tmp_path):
    store = DataStore(tmp_path / "data")
    ingest_batch(read_file_source(write(tmp_path / "base.csv", base_frame()), DATA), DATA, store, base=True)
    manifest = store.manifest_path.read_text()
    # Every row contradicts the dataset's label for its text: all are quarantined, which is too many.
    flipped = sentiment_frame(200, seed=3).head(5).assign(
        sentiment=lambda f: f["sentiment"].map({"positive": "negative", "negative": "positive"}))
    with pytest.raises(DataValidationError, match="max_quarantine_fraction") as caught:
        ingest_batch(read_file_source(write(tmp_path / "flipped.csv", flipped), DATA), DATA, store, base=False)
    failed = {f.check: f for f in caught.value.report.failures}
    assert "5 of 5 input rows quarantined" in failed["max_quarantine_fraction"].observed
    assert store.manifest_path.read_text() == manifest
    assert not list((store.data_dir / "batches").glob("0001-*"))
    report = json.loads(next((store.data_dir / "reports").glob("0001-*/validation.json")).read_text())
    assert report["success"] is False


def test_one_rule_for_repeats_within_a_batch_and_across_batches(tmp_path):
    store = DataStore(tmp_path / "data")
    base = ingest_batch(read_file_source(write(tmp_path / "base.csv", base_frame()), DATA), DATA, store, base=True)
    known = sentiment_frame(200, seed=3).head(2)  # texts the dataset has, with their labels
    fresh = sentiment_frame(100, seed=11)
    fresh = fresh[~fresh["review"].isin(sentiment_frame(200, seed=3)["review"])].head(60)
    again = fresh.head(3)  # the same text and label twice in this batch
    disputed = pd.DataFrame({"review": ["a film I cannot decide about"] * 2, "sentiment": ["positive", "negative"]})
    contradicts = sentiment_frame(200, seed=3).iloc[2:3].assign(sentiment=lambda f: f["sentiment"].map({"positive": "negative",
                                                                               "negative": "positive"}))
    batch = pd.concat([fresh, again, known, disputed, contradicts], ignore_index=True)
    result = ingest_batch(read_file_source(write(tmp_path / "mixed.csv", batch), DATA), DATA, store, base=False)

    b = result.batch
    assert b.rows_read == b.accepted + b.quarantined + b.duplicates == len(batch)
    assert (b.accepted, b.duplicates, b.quarantined) == (len(fresh), 3 + 2, 3)
    assert b.batch_file == "batches/0001-mixed.csv"  # not mixed.csv.csv
    rows = quarantine(store, b)
    assert set(rows["check"]) == {"conflicting_labels"}
    assert sorted(rows["source_row"]) == [len(fresh) + 3 + 2 + k for k in (2, 3, 4)]  # header is line 1
    disputed_reason = rows.loc[rows["text"] == "a film I cannot decide about", "reason"].iloc[0]
    assert "labels ['negative', 'positive']" in disputed_reason and "row " in disputed_reason
    assert "in the dataset already" in rows["reason"].iloc[-1]
    dataset = store.read()
    assert dataset["id"].is_unique  # nothing added twice, and the dataset's own copy kept its label
    kept = dataset[dataset["text"] == contradicts["review"].iloc[0]]
    assert kept["label"].tolist() != contradicts["sentiment"].tolist() and kept["batch_id"].iloc[0] == base.batch.batch_id


def test_invisible_format_characters_do_not_make_a_new_text(tmp_path):
    store = DataStore(tmp_path / "data")
    ingest_batch(read_file_source(write(tmp_path / "base.csv", base_frame()), DATA), DATA, store, base=True)
    known = sentiment_frame(200, seed=3).head(3)
    hidden = known.assign(review=["\u200b" + known["review"].iloc[0], known["review"].iloc[1] + "\ufeff",
                                  known["review"].iloc[2].replace(" ", " \u200e", 1)])
    fresh = sentiment_frame(100, seed=11)
    fresh = fresh[~fresh["review"].isin(sentiment_frame(200, seed=3)["review"])].head(30)
    result = ingest_batch(read_file_source(write(tmp_path / "hidden.csv", pd.concat([fresh, hidden])), DATA), DATA,
                          store, base=False)
    assert (result.batch.accepted, result.batch.duplicates, result.batch.quarantined) == (len(fresh), 3, 0)
    assert not store.read()["text"].str.contains("[\u200b\ufeff\u200e]").any()


def test_a_batch_that_drifts_from_the_reference_is_stopped(tmp_path, tiny_base_model):
    from transformers import AutoTokenizer

    store = DataStore(tmp_path / "data")
    ingest_batch(read_file_source(write(tmp_path / "base.csv", base_frame()), DATA), DATA, store, base=True)
    skewed = sentiment_frame(400, seed=5)
    skewed = skewed[skewed["sentiment"] == "positive"]
    with pytest.raises(DriftFailure, match="label"):
        ingest_batch(read_file_source(write(tmp_path / "skewed.csv", skewed), DATA), DATA, store, base=False,
                     drift=DriftParams(), reference=store.read(),
                     tokenizer_factory=lambda: AutoTokenizer.from_pretrained(tiny_base_model))
    assert len(store.batches()) == 1
    drift = json.loads(next((store.data_dir / "reports").glob("0001-*/drift.json")).read_text())
    assert drift["status"] == "fail"

    similar = ingest_batch(read_file_source(write(tmp_path / "similar.csv", sentiment_frame(300, seed=6)), DATA),
                           DATA, store, base=False, drift=DriftParams(), reference=store.read(),
                           tokenizer_factory=lambda: AutoTokenizer.from_pretrained(tiny_base_model))
    assert similar.batch.drift_status == "ok"


def test_a_new_data_source_replaces_the_base_batch_and_keeps_added_batches(tmp_path):
    store = DataStore(tmp_path / "data")
    ingest_batch(read_file_source(write(tmp_path / "base.csv", base_frame()), DATA), DATA, store, base=True)
    ingest_batch(read_file_source(write(tmp_path / "more.csv", sentiment_frame(60, seed=8)), DATA), DATA, store,
                 base=False)
    ingest_batch(read_file_source(write(tmp_path / "base2.csv", sentiment_frame(150, seed=11)), DATA), DATA, store,
                 base=True)
    names = [b.batch_id.split("@")[0] for b in store.batches()]
    assert names == ["base2.csv", "more.csv"]
    assert len(list((store.data_dir / "batches").glob("*.csv"))) == 2


def test_the_base_batch_is_checked_again_when_the_rules_change(tmp_path):
    store = DataStore(tmp_path / "data")
    source = write(tmp_path / "base.csv", base_frame())
    first = ingest_batch(read_file_source(source, DATA), DATA, store, base=True)
    assert ingest_batch(read_file_source(source, DATA), DATA, store, base=True).already_present
    stricter = DATA.model_copy(update={"max_chars": 40, "max_quarantine_fraction": 0.9})
    again = ingest_batch(read_file_source(source, stricter), stricter, store, base=True)
    assert not again.already_present
    assert again.batch.quarantined > first.batch.quarantined
    assert len(store.read()) == again.batch.accepted
    assert len(store.batches()) == 1


def test_labels_with_spaces_or_another_case_are_the_configured_labels(tmp_path):
    rows = sentiment_frame(120, seed=12)
    rows["sentiment"] = [f" {label.upper()} " if i % 2 else f"{label.title()}  " for i, label in enumerate(rows["sentiment"])]
    store = DataStore(tmp_path / "data")
    result = ingest_batch(read_file_source(write(tmp_path / "cased.csv", rows), DATA), DATA, store, base=True)
    assert (result.batch.accepted, result.batch.quarantined) == (120, 0)
    assert set(store.read()["label"]) == {"negative", "positive"}


def test_a_batch_of_one_class_when_the_dataset_needs_two_is_refused(tmp_path):
    one_class = sentiment_frame(200, seed=13)
    one_class = one_class[one_class["sentiment"] == "positive"]
    with pytest.raises(DataValidationError, match="negative"):
        ingest_batch(read_file_source(write(tmp_path / "one.csv", one_class), DATA), DATA, DataStore(tmp_path / "data"),
                     base=True)
