"""Token-classification (NER) data through the data layer: CoNLL and JSONL readers, the built-in
CoNLL-2003 with its official split, quarantine of bad sentences with their reasons, batch checks per
entity type, and drift on entity-type shares and sentence lengths. Real GX throughout."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from components.config import DataParams, DriftParams
from components.data.ingest import (
    DATASET_COLUMNS,
    DataStore,
    RawSource,
    build_dataset,
    ingest_batch,
    read_configured_source,
    read_file_source,
)
from components.data.readers import IngestError, read_labelled_file, read_token_file
from components.data.validation.batch import validate_batch
from components.data.validation.data_docs import build_data_docs
from components.data.validation.quarantine import quarantine_rows
from components.data.validation.report import DataValidationError
from components.data.validation.suite import validate_dataset
from tests.tiny import ner_records

TOKEN = "token-classification"
TYPES = ["PER", "ORG", "LOC"]
DATA = DataParams(source="ner.jsonl", labels=TYPES, label_map={"PERSON": "PER"}, min_rows=5,
                  max_quarantine_fraction=0.3)

CONLL_TEXT = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
. . O O


Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O
BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O"""


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# --- readers ------------------------------------------------------------------------------------


def test_conll_reader_skips_docstart_and_blank_lines(tmp_path):
    path = tmp_path / "part.conll"
    path.write_text(CONLL_TEXT, encoding="utf-8")
    frame = read_token_file(path, DATA)
    assert frame["tokens"].tolist() == [["EU", "rejects", "German", "."], ["Peter", "Blackburn"],
                                        ["BRUSSELS", "1996-08-22"]]
    assert frame["tags"].tolist() == [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER"], ["B-LOC", "O"]]
    assert frame["source_row"].tolist() == [3, 9, 13]  # the line of each sentence's first token

    # Two columns (token and tag) and CRLF line ends read the same; .txt and .iob are CoNLL too.
    two = tmp_path / "two.txt"
    two.write_bytes(b"Mary B-PER\r\nsaid O\r\n\r\nhi O\r\n")
    frame = read_token_file(two, DATA)
    assert frame["tokens"].tolist() == [["Mary", "said"], ["hi"]] and frame["source_row"].tolist() == [1, 4]


def test_conll_reader_names_file_and_line_of_a_malformed_line(tmp_path):
    path = tmp_path / "bad.conll"
    path.write_text("EU B-ORG\nrejects O\n\nlonely\nword O\n", encoding="utf-8")
    with pytest.raises(IngestError) as caught:
        read_token_file(path, DATA)
    error = caught.value
    assert (error.path, error.row, error.field) == (path, 4, "tag")
    assert str(path) in str(error) and "row 4" in str(error) and "'lonely'" in str(error)

    empty = tmp_path / "docstart.conll"
    empty.write_text("-DOCSTART- -X- O\n\n\n", encoding="utf-8")
    with pytest.raises(IngestError, match="no sentences"):
        read_token_file(empty, DATA)
    with pytest.raises(IngestError, match="token-classification"):
        read_labelled_file(path, DATA)  # a sequence-classification reader points at the task


def test_jsonl_token_reader_and_its_errors(tmp_path):
    records = ner_records(5, seed=1)
    data = DATA.model_copy(update={"tokens_column": "words", "tags_column": "ner"})
    path = write_jsonl(tmp_path / "ner.jsonl", [{"words": r["tokens"], "ner": [t + " " for t in r["tags"]]}
                                                for r in records])
    frame = read_token_file(path, data)
    assert frame["tokens"].tolist() == [r["tokens"] for r in records]
    assert frame["tags"].tolist() == [r["tags"] for r in records]  # tags stripped
    assert frame["source_row"].tolist() == [1, 2, 3, 4, 5]

    cases = [
        ({"tokens": "Mary said", "tags": ["B-PER", "O"]}, "tokens", "tokens must be a JSON array of strings"),
        ({"tokens": ["Mary", 7], "tags": ["B-PER", "O"]}, "tokens", "token 2 (of 2) must be a string, got a number"),
        ({"tokens": ["Mary"], "tags": [None]}, "tags", "tag 1 (of 1) must be a string, got null"),
        ({"tokens": ["Mary"]}, "tags", "record has no 'tags' field"),
    ]
    for bad, field, message in cases:
        path = write_jsonl(tmp_path / "bad.jsonl", records[:2] + [bad])
        with pytest.raises(IngestError) as caught:
            read_token_file(path, DATA)
        assert (caught.value.row, caught.value.field) == (3, field)
        assert message in str(caught.value) and str(path) in str(caught.value)


# --- the built-in CoNLL-2003 ---------------------------------------------------------------------


def test_builtin_conll2003_keeps_the_official_split(tmp_path):
    data = DataParams(source="builtin:conll2003", labels=["PER", "ORG", "LOC", "MISC"],
                      min_chars=1)  # as examples/ner/params.yaml: one-word sentences are sentences
    raw = read_configured_source(data, tmp_path, task=TOKEN)
    assert raw.frame["split"].value_counts().to_dict() == {"train": 14041, "validation": 3250, "test": 3453}
    store = DataStore(tmp_path / "data")
    result = ingest_batch(raw, data, store, base=True, task=TOKEN)
    b = result.batch
    assert b.rows_read == b.accepted + b.quarantined + b.duplicates == 20744
    assert (b.quarantined, b.duplicates) == (0, 0)
    dataset = store.read()
    assert list(dataset.columns) == DATASET_COLUMNS + ["split"]
    # Repeated sentences stay, once per occurrence: the official test set is the whole test set.
    assert dataset["split"].value_counts().to_dict() == {"train": 14041, "validation": 3250, "test": 3453}
    assert dataset["id"].is_unique and dataset["text"].duplicated().sum() > 0
    assert dataset.loc[dataset["split"] == "test", "text"].duplicated().sum() > 0
    assert dataset["text"].str.split(" ").str.len().sum() == 203621 + 51362 + 46435
    assert (dataset["text"].str.split(" ").str.len() == dataset["label"].str.split(" ").str.len()).all()
    first = dataset.iloc[0]
    assert (first["text"], first["label"], first["source_row"]) == (
        "EU rejects German call to boycott British lamb .", "B-ORG O B-MISC O O O B-MISC O O", 3)
    assert result.label_counts == {"LOC": 10645, "MISC": 5062, "ORG": 9323, "PER": 10059}  # entities per type
    assert validate_dataset(dataset, data, source="conll", task=TOKEN).success

    again = ingest_batch(read_configured_source(data, tmp_path, task=TOKEN), data, store, base=True, task=TOKEN)
    assert again.already_present and again.dataset_rows == 20744

    with pytest.raises(Exception, match="token-classification"):
        read_configured_source(data, tmp_path)  # the default task cannot use it


# --- quarantine and batch checks -----------------------------------------------------------------


def bad_records() -> list[dict]:
    return [
        {"tokens": [], "tags": []},  # line 41: empty sentence
        {"tokens": ["Mary", "said"], "tags": ["B-PER"]},  # 42: count mismatch
        {"tokens": ["Mary", "met", "Bob"], "tags": ["B-PER", "O", "B-FOO"]},  # 43: unknown tag at word 3
        {"tokens": ["in", "Paris", "today"], "tags": ["O", "I-LOC", "O"]},  # 44: I- after O at word 2
        {"tokens": ["New York", "rocks"], "tags": ["B-LOC", "O"]},  # 45: whitespace in token 1
        {"tokens": ["Mary", "sa\x07id"], "tags": ["B-PER", "O"]},  # 46: control character
        {"tokens": ["Ann", "Lee"], "tags": ["B-PERSON", "I-PERSON"]},  # 47: label_map PERSON -> PER: fine
    ]


def test_each_bad_sentence_is_quarantined_with_its_reason(tmp_path):
    store = DataStore(tmp_path / "data")
    path = write_jsonl(tmp_path / "ner.jsonl", ner_records(40, seed=2) + bad_records())
    result = ingest_batch(read_file_source(path, DATA, task=TOKEN), DATA, store, base=True, task=TOKEN)
    b = result.batch
    assert b.rows_read == b.accepted + b.quarantined + b.duplicates == 47
    assert b.quarantined == 6
    quarantined = pd.read_csv(store.data_dir / b.quarantine_file, keep_default_na=False).set_index("source_row")
    assert {"check", "expectation", "reason", "text", "label"} <= set(quarantined.columns)
    assert "tokens" not in quarantined.columns
    expected = {
        41: ("sentence_not_empty", "no tokens"),
        42: ("tokens_match_tags", "2 token(s) but 1 tag(s)"),
        43: ("tags_in_tag_set", "tag 'B-FOO' at word 3"),
        44: ("iob2_consistent", "tag 'I-LOC' at word 2 follows 'O'"),
        45: ("token_characters", "token 'New York' at word 1 contains whitespace (U+0020 at character 4)"),
        46: ("token_characters", "contains a control character (U+0007 at character 3)"),
    }
    for row, (check, words) in expected.items():
        assert quarantined.loc[row, "check"] == check, (row, quarantined.loc[row].to_dict())
        assert words in quarantined.loc[row, "reason"]
        assert quarantined.loc[row, "expectation"] == "expect_column_values_to_be_null"
    dataset = store.read()
    assert "split" not in dataset.columns  # no official split: no column
    mapped = dataset.set_index("source_row").loc[47]
    assert (mapped["text"], mapped["label"]) == ("Ann Lee", "B-PER I-PER")

    # A second batch: repeated sentences are counted as duplicates, not added again.
    again = write_jsonl(tmp_path / "more.jsonl", ner_records(40, seed=2)[:10] + ner_records(15, seed=3))
    second = ingest_batch(read_file_source(again, DATA, task=TOKEN), DATA, store, base=False, task=TOKEN)
    b2 = second.batch
    assert b2.rows_read == b2.accepted + b2.quarantined + b2.duplicates == 25
    assert b2.duplicates >= 10 and second.dataset_rows == len(store.read())


def test_iob2_and_tag_checks_on_stored_rows(tmp_path):
    # The dataset's own form (no token lists): text and label split on single spaces.
    rows = pd.DataFrame({
        "id": ["a", "b", "c", "d"],
        "text": ["Mary met Bob", "Ann Lee spoke", "in New York", "x y"],
        "label": ["B-PER O B-PER", "I-PER I-PER O", "O B-LOC I-PER", "O O O"],
        "source_row": [1, 2, 3, 4],
    })
    checked = quarantine_rows(rows, DATA, task=TOKEN)
    assert checked.clean["id"].tolist() == ["a"]
    reasons = checked.quarantined.set_index("id")
    assert reasons.loc["b", "check"] == "iob2_consistent"
    assert "tag 'I-PER' at word 1 starts the sentence" in reasons.loc["b", "reason"]
    assert reasons.loc["c", "check"] == "iob2_consistent" and "'I-PER' at word 3 follows 'B-LOC'" in reasons.loc["c", "reason"]
    assert reasons.loc["d", "check"] == "tokens_match_tags"
    assert checked.counts_by_check() == {"tokens_match_tags": 1, "iob2_consistent": 2}


def test_dataset_suite_and_data_docs_on_token_data(tmp_path):
    records = ner_records(60, seed=5)
    rows, _ = build_dataset(RawSource(pd.DataFrame({"tokens": [r["tokens"] for r in records],
                                                    "tags": [r["tags"] for r in records],
                                                    "source_row": range(1, 61)}), "b", "test"),
                            DATA, task=TOKEN)
    stored = rows.drop(columns=["tokens", "tags"])
    assert validate_dataset(stored, DATA, source="ok", task=TOKEN).success

    with_misc = DATA.model_copy(update={"labels": TYPES + ["MISC"]})
    broken = stored.copy()
    broken.loc[0, "label"] = "O " + broken.loc[0, "label"]  # one tag too many
    report = validate_dataset(broken, with_misc, source="broken", task=TOKEN)
    failed = {f.check: f for f in report.failures}
    assert set(failed) == {"tokens_match_tags", "entity_type_present[MISC]"}
    assert failed["tokens_match_tags"].examples[0]["reason"].startswith("sentence has")
    assert "MISC" in failed["entity_type_present[MISC]"].observed
    assert "tokens_match_tags" in report.summary()

    index = build_data_docs(broken, with_misc, tmp_path / "docs", source="broken", task=TOKEN)
    pages = "".join(p.read_text(errors="ignore") for p in (tmp_path / "docs").rglob("*.html"))
    assert index.is_file() and "iob2_consistent" in pages and "entity_type_present[MISC]" in pages


def test_batch_checks_count_entities_per_type_and_conflicts_with_official_rows(tmp_path):
    only_people = [{"tokens": ["Mary", "spoke", str(i)], "tags": ["B-PER", "O", "O"]} for i in range(20)]
    store = DataStore(tmp_path / "data")
    path = write_jsonl(tmp_path / "people.jsonl", only_people)
    data = DATA.model_copy(update={"min_examples_per_label": 2})
    with pytest.raises(DataValidationError) as caught:
        ingest_batch(read_file_source(path, data, task=TOKEN), data, store, base=True, task=TOKEN)
    failure = {f.check: f for f in caught.value.report.failures}["min_examples_per_label"]
    assert "entity type 'ORG' has 0 entities" in failure.observed and "'PER'" not in failure.observed
    assert not store.batches()  # a failing batch adds nothing

    # An official split keeps its repeats and conflicts; a later batch may not contradict it.
    official = pd.DataFrame({
        "tokens": [["Mary", "spoke"], ["Mary", "spoke"], ["Paris"], ["Paris"]] + [r["tokens"] for r in ner_records(20)],
        "tags": [["B-PER", "O"], ["B-PER", "O"], ["B-LOC"], ["B-ORG"]] + [r["tags"] for r in ner_records(20)],
        "source_row": range(1, 25),
        "split": ["test", "test", "train", "test"] + ["train"] * 20,
    })
    base = ingest_batch(RawSource(official, "official@1", "official"), DATA, store, base=True, task=TOKEN)
    assert (base.batch.accepted, base.batch.duplicates) == (24, 0)
    assert validate_dataset(store.read(), DATA, source="official", task=TOKEN).success

    same = write_jsonl(tmp_path / "same.jsonl", [{"tokens": ["Mary", "spoke"], "tags": ["B-PER", "O"]}]
                       + ner_records(5, seed=9))
    added = ingest_batch(read_file_source(same, DATA, task=TOKEN), DATA, store, base=False, task=TOKEN)
    assert added.batch.duplicates >= 1  # the official sentence is known, though its id is not the text's hash
    assert set(store.read()["split"]) == {"test", "train", ""}

    clash = write_jsonl(tmp_path / "clash.jsonl", [{"tokens": ["Mary", "spoke"], "tags": ["B-ORG", "O"]}]
                        + ner_records(5, seed=10))
    clashed = ingest_batch(read_file_source(clash, DATA, task=TOKEN), DATA, store, base=False, task=TOKEN)
    assert (clashed.batch.quarantined, clashed.batch.accepted) == (1, 5)  # the contradiction alone is set aside
    set_aside = pd.read_csv(store.data_dir / clashed.batch.quarantine_file, keep_default_na=False)
    assert set_aside["check"].tolist() == ["conflicting_labels"]
    assert "labels ['B-ORG O', 'B-PER O']" in set_aside["reason"].iloc[0]
    assert store.read().query("text == 'Mary spoke'")["label"].tolist() == ["B-PER O"] * 2  # the official rows, as they were


def test_validate_batch_accounts_for_every_row():
    rows, _ = build_dataset(RawSource(pd.DataFrame({"tokens": [["a"]], "tags": [["O"]], "source_row": [1]}), "b", "t"),
                            DATA, task=TOKEN)
    with pytest.raises(ValueError, match="do not add up"):
        validate_batch(rows, rows_in=2, quarantined=0, existing=None, data=DATA, task=TOKEN)


# --- drift ----------------------------------------------------------------------------------------


def test_drift_on_entity_types_and_sentence_lengths(tiny_base_model):
    from transformers import AutoTokenizer

    from components.data.drift import drift_report

    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    params = DriftParams(oov_sample_texts=100)

    def frame(records):
        return pd.DataFrame({"text": [" ".join(r["tokens"]) for r in records],
                             "label": [" ".join(r["tags"]) for r in records]})

    reference = frame(ner_records(300, seed=1))
    similar = drift_report(reference, frame(ner_records(300, seed=2)), tokenizer, params, task=TOKEN)
    assert similar.checks[0].status == "ok" and similar.checks[1].status == "ok"
    assert "entity-type shares" in similar.checks[0].detail and "tokens" in similar.checks[1].detail

    # Only people, in long sentences: the entity mix and the lengths shift, whatever the label strings.
    long_people = [{"tokens": ["the"] * 30 + ["Mary"], "tags": ["O"] * 30 + ["B-PER"]} for _ in range(100)]
    shifted = drift_report(reference, frame(long_people), tokenizer, params, task=TOKEN)
    by_name = {c.name: c for c in shifted.checks}
    assert by_name["label_shift"].status == "fail" and by_name["label_shift"].measures["batch_share[PER]"] == 1.0
    assert by_name["length_shift"].status == "fail" and by_name["length_shift"].measures["batch_median_tokens"] == 31
    assert by_name["oov_increase"].value is not None
    assert shifted.status == "fail"

    no_entities = pd.DataFrame({"text": ["just words"], "label": ["O O"]})
    skipped = drift_report(reference, no_entities, tokenizer, params, task=TOKEN)
    assert skipped.checks[0].status == "skipped" and "no entities" in skipped.checks[0].detail


def test_sequence_data_gains_no_split_column_and_keeps_its_fingerprint(tmp_path):
    from components.data.ingest import rules_fingerprint
    from tests.tiny import sentiment_frame

    data = DataParams(source="s.csv", text_column="review", label_column="sentiment", labels=["negative", "positive"])
    import hashlib

    # Every data field counts, the token fields and keep_columns included.
    assert rules_fingerprint(data) == hashlib.sha256(data.model_dump_json().encode()).hexdigest()[:12]
    assert rules_fingerprint(data.model_copy(update={"tokens_column": "words"})) != rules_fingerprint(data)
    assert rules_fingerprint(data.model_copy(update={"keep_columns": ["source"]})) != rules_fingerprint(data)
    path = tmp_path / "s.csv"
    sentiment_frame(30).to_csv(path, index=False)
    store = DataStore(tmp_path / "data")
    ingest_batch(read_file_source(path, data), data, store, base=True)
    assert list(store.read().columns) == DATASET_COLUMNS
    assert (store.data_dir / store.batches()[0].batch_file).read_text().startswith("id,text,label,batch_id,source_row\n")
