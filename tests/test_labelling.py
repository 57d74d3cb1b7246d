"""The labelling loop: logged texts that drove drift go out as a queue (CSV and a Label Studio import
with the served predictions as suggestions) and come back as a Label Studio export that `tunegate
ingest` takes as a batch, with labels only from a person's annotation."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pandas as pd
import pytest

from components.config import DataParams
from components.data.ingest import DataStore, ingest_batch, read_file_source
from components.monitoring.labelling import (
    LENGTH,
    LOW_CONFIDENCE,
    UNSEEN_WORDS,
    labelling_queue,
    write_labelling_queue,
)
from tests.label_studio import annotation as _annotation
from tests.label_studio import choice as _choice
from tests.tiny import ner_records, sentiment_frame

CLASSIFICATION = "sequence-classification"
NER = "token-classification"
LABELS = ["negative", "positive"]
# A Label Studio batch is small: one wrong label is a large share of it.
DATA = DataParams(source="base.csv", text_column="review", label_column="sentiment", labels=LABELS, min_rows=10,
                  max_quarantine_fraction=0.5)
NER_DATA = DataParams(source="base.jsonl", labels=["PER", "LOC", "ORG"], min_rows=10)


def reference() -> pd.DataFrame:
    return sentiment_frame(200, seed=3).rename(columns={"review": "text", "sentiment": "label"})


def log(rows: list[tuple[str, str, float | None]], version: str = "3") -> pd.DataFrame:
    return pd.DataFrame([{"time": f"2026-12-01T10:00:{i:02d}Z", "version": version, "text": text, "label": label,
                          "score": score} for i, (text, label, score) in enumerate(rows)])


TRAFFIC = [
    ("the film was great and its cast superb", "positive", 0.99),  # typical and sure: not picked
    ("quantum chromodynamics lecture notes were clumsy", "negative", 0.97),  # 5 of its 6 words unseen
    ("Quantum chromodynamics  lecture notes were clumsy", "negative", 0.91),  # the same text again
    ("the story was quite tedious really", "positive", 0.52),  # least confident
    ("the plot was really bland", "negative", 0.61),  # next least confident
    ("the " + "cast and story " * 30, "positive", 0.95),  # far longer than any training text
]


def test_queue_picks_atypical_and_least_confident_texts_once_each_capped_with_suggestions():
    queue = labelling_queue(log(TRAFFIC), reference(), task=CLASSIFICATION, size=10, low_confidence=0.7)
    by_text = queue.set_index("text")
    assert TRAFFIC[0][0] not in by_text.index  # typical, confident: not worth a person's time
    quantum = queue[queue["text"].str.casefold().str.startswith("quantum")]
    assert len(quantum) == 1 and quantum.iloc[0]["occurrences"] == 2  # normalised and case-folded: one question
    picked = quantum.iloc[0]
    assert picked["reason"] == UNSEEN_WORDS and picked["figure"] == pytest.approx(5 / 6, abs=1e-3)
    assert "5 of its 6 words" in picked["why"]
    assert picked["text"] == TRAFFIC[2][0]  # the latest logged copy, with its prediction
    assert (picked["suggestion"], picked["score"], picked["model_version"]) == ("negative", 0.91, "3")
    assert by_text.loc[TRAFFIC[3][0], "reason"] == LOW_CONFIDENCE and by_text.loc[TRAFFIC[3][0], "figure"] == 0.52
    assert by_text.loc[TRAFFIC[5][0], "reason"] == LENGTH and by_text.loc[TRAFFIC[5][0], "figure"] > 2
    assert len(queue) == 4 and queue["id"].is_unique
    assert "label" not in queue.columns  # a served answer is a suggestion, never a label

    # Capped; the most atypical and the least confident are taken in turn, strongest first.
    top = labelling_queue(log(TRAFFIC), reference(), task=CLASSIFICATION, size=2, low_confidence=0.7)
    assert list(top["reason"]) == [UNSEEN_WORDS, LOW_CONFIDENCE] and top.iloc[1]["score"] == 0.52
    # A text the champion was trained on is not asked again; nothing qualifies: an empty queue.
    known = log([(reference().iloc[0]["text"], "positive", 0.3), TRAFFIC[0]])
    assert labelling_queue(known, reference(), task=CLASSIFICATION, size=5, low_confidence=0.7).empty


def test_queue_files_import_into_label_studio_with_suggestions_prefilled(tmp_path):
    queue = labelling_queue(log(TRAFFIC), reference(), task=CLASSIFICATION, size=10, low_confidence=0.7)
    files = write_labelling_queue(queue, tmp_path / "queue", task=CLASSIFICATION, labels=LABELS, model_version="3",
                                  text_column="review", label_column="sentiment")
    assert files.rows == len(queue) == 4
    sheet = pd.read_csv(files.csv, keep_default_na=False)
    assert list(sheet.columns[:4]) == ["id", "review", "sentiment", "suggestion"]
    assert (sheet["sentiment"] == "").all() and set(sheet["suggestion"]) <= set(LABELS)

    tasks = json.loads(files.label_studio_json.read_text())
    assert len(tasks) == 4
    for task, (_, row) in zip(tasks, queue.iterrows()):
        assert task["data"] == {"text": row["text"], "tunegate_id": row["id"], "tunegate_reason": row["why"]}
        assert "annotations" not in task  # nothing arrives labelled: a person decides
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "tunegate suggestion (served version 3)"
        assert prediction["score"] == pytest.approx(row["score"])
        assert prediction["result"] == [{"from_name": "label", "to_name": "text", "type": "choices",
                                         "value": {"choices": [row["suggestion"]]}}]

    view = ET.fromstring(files.label_studio_config.read_text())
    text = view.find("Text")
    choices = view.find("Choices")
    assert (text.get("name"), text.get("value")) == ("text", "$text")
    assert (choices.get("name"), choices.get("toName"), choices.get("choice")) == ("label", "text", "single")
    assert [c.get("value") for c in choices.findall("Choice")] == LABELS


def _task(task_id: int, text: str, suggestion: str, annotations: list) -> dict:
    """A task as Label Studio's JSON export writes it: data, annotations, and the imported prediction."""
    return {"id": task_id, "data": {"text": text, "tunegate_id": f"id{task_id}"}, "annotations": annotations,
            "predictions": [{"id": task_id, "model_version": "tunegate suggestion (served version 3)", "score": 0.6,
                             "result": [_choice(suggestion)]}],
            "drafts": [], "meta": {}, "inner_id": task_id, "total_annotations": len(annotations),
            "cancelled_annotations": sum(a["was_cancelled"] for a in annotations)}


def test_a_label_studio_export_is_a_batch_labelled_only_by_people(tmp_path):
    store = DataStore(tmp_path / "data")
    base = sentiment_frame(60, seed=3)
    base.to_csv(tmp_path / "base.csv", index=False)
    ingest_batch(read_file_source(tmp_path / "base.csv", DATA), DATA, store, base=True)
    export = [
        _task(1, "quantum notes were great", "negative", [_annotation([_choice("Positive")])]),  # person overrules
        _task(2, "the story was quite tedious", "positive", []),  # nobody labelled it
        _task(3, "the plot was bland", "negative", [_annotation([_choice("negative")], cancelled=True)]),  # skipped
        _task(4, "a moving film", "negative", [  # changed their mind: the latest annotation stands
            _annotation([_choice("positive")], updated="2026-12-01T13:00:00Z"),
            _annotation([_choice("negative")], updated="2026-12-01T12:30:00Z")]),
        _task(5, "the cast was clumsy", "negative", [_annotation([_choice("negative")])]),  # accepted as suggested
    ]
    path = tmp_path / "project-1-at-2026-12-01.json"
    path.write_text(json.dumps(export))
    result = ingest_batch(read_file_source(path, DATA), DATA, store, base=False)
    batch = result.batch
    assert (batch.rows_read, batch.accepted, batch.quarantined) == (5, 3, 2)
    assert batch.batch_file == "batches/0001-project-1-at-2026-12-01.csv"
    rows = store.read([batch]).set_index("text")
    assert rows["label"].to_dict() == {"quantum notes were great": "positive", "a moving film": "positive",
                                       "the cast was clumsy": "negative"}
    assert list(rows["source_row"]) == [1, 4, 5]  # the task's place in the export

    rejected = pd.read_csv(store.data_dir / batch.quarantine_file, keep_default_na=False).set_index("source_row")
    assert set(rejected["check"]) == {"no_human_label"} and (rejected["label"] == "").all()
    assert rejected.loc[2, "text"] == "the story was quite tedious"
    assert rejected.loc[2, "reason"] == (f"{path.name} task 2 (id 2), field 'annotations': no annotation by a person "
                                         "(a prediction is only a suggestion, never a label)")
    assert "cancelled" in rejected.loc[3, "reason"] and "task 3 (id 3)" in rejected.loc[3, "reason"]

    # JSON-MIN (one flat record per annotation) reads the same way; an unknown label is quarantined as in a CSV.
    minimal = [{"text": "a charming film", "id": 7, "label": "positive", "annotator": "ann@example.org",
                "annotation_id": 9, "created_at": "2026-12-01T11:00:00Z", "updated_at": "2026-12-01T11:00:00Z",
                "lead_time": 3.0},
               {"text": "a dreadful film", "id": 8, "label": "meh", "annotator": "ann@example.org", "annotation_id": 10},
               {"text": "an unlabelled film", "id": 9}]
    (tmp_path / "min.json").write_text(json.dumps(minimal))
    again = ingest_batch(read_file_source(tmp_path / "min.json", DATA), DATA, store, base=False).batch
    assert (again.accepted, again.quarantined) == (1, 2)
    checks = pd.read_csv(store.data_dir / again.quarantine_file, keep_default_na=False).set_index("source_row")
    assert checks.loc[2, "check"] == "label_in_labels" and checks.loc[3, "check"] == "no_human_label"


def test_a_json_file_that_is_not_a_label_studio_export_is_refused_with_the_reason(tmp_path):
    from components.data.readers import IngestError

    (tmp_path / "records.json").write_text(json.dumps({"text": "a film", "label": "positive"}))
    with pytest.raises(IngestError, match=r"Label Studio export, a JSON list of tasks.*\(\.jsonl\)"):
        read_file_source(tmp_path / "records.json", DATA)
    (tmp_path / "tasks.json").write_text(json.dumps([{"data": {"body": "a film"}, "annotations": []}]))
    with pytest.raises(IngestError, match=r"row 1, field 'data': task has no text"):
        read_file_source(tmp_path / "tasks.json", DATA)


def _ner_traffic() -> pd.DataFrame:
    # As the service logs NER: the words' predicted tags, the entities' mean score and the entities.
    rows = [
        {"text": "Mary visited Zanzibar today", "label": "B-PER O B-LOC O", "score": 0.41,
         "entities": [{"type": "PER", "start": 0, "end": 4, "score": 0.5},
                      {"type": "LOC", "start": 13, "end": 21, "score": 0.32}]},
        {"text": "Mary visited Paris today", "label": "B-PER O B-LOC O", "score": 0.99,
         "entities": [{"type": "PER", "start": 0, "end": 4, "score": 0.99},
                      {"type": "LOC", "start": 13, "end": 18, "score": 0.99}]},
        {"text": "Xylophonists from Quetzaltenango picnicked", "label": "O O B-ORG O", "score": 0.9, "entities": None},
    ]
    return pd.DataFrame([{"time": "t", "version": "5", **row} for row in rows])


def test_ner_queue_suggests_entities_and_the_export_comes_back_as_word_tags(tmp_path):
    reference = pd.DataFrame([{"text": " ".join(r["tokens"]), "label": " ".join(r["tags"])}
                              for r in ner_records(80, seed=1)])
    queue = labelling_queue(_ner_traffic(), reference, task=NER, size=5, low_confidence=0.6).set_index("text")
    assert "Mary visited Paris today" not in queue.index
    unsure = queue.loc["Mary visited Zanzibar today"]
    assert unsure["reason"] == LOW_CONFIDENCE
    assert unsure["suggestion"] == [{"type": "PER", "start": 0, "end": 4, "text": "Mary", "score": 0.5},
                                    {"type": "LOC", "start": 13, "end": 21, "text": "Zanzibar", "score": 0.32}]
    odd = queue.loc["Xylophonists from Quetzaltenango picnicked"]
    assert odd["reason"] == UNSEEN_WORDS  # "from" is a training word; the other three are not
    assert odd["suggestion"][0]["text"] == "Quetzaltenango"  # entities rebuilt from the logged tags

    files = write_labelling_queue(queue.reset_index(), tmp_path / "q", task=NER, labels=["PER", "LOC", "ORG"],
                                  model_version="5")
    task = next(t for t in json.loads(files.label_studio_json.read_text())
                if t["data"]["text"] == "Mary visited Zanzibar today")
    assert task["predictions"][0]["result"][1] == {
        "from_name": "label", "to_name": "text", "type": "labels", "score": 0.32,
        "value": {"start": 13, "end": 21, "text": "Zanzibar", "labels": ["LOC"]}}
    view = ET.fromstring(files.label_studio_config.read_text())
    assert [label.get("value") for label in view.find("Labels").findall("Label")] == ["PER", "LOC", "ORG"]
    assert json.loads(pd.read_csv(files.csv).set_index("text").loc["Mary visited Zanzibar today", "suggestion"])[0][
        "type"] == "PER"

    def span(start, end, text, label):
        return {"from_name": "label", "to_name": "text", "type": "labels",
                "value": {"start": start, "end": end, "text": text, "labels": [label]}}

    export = [
        # The person kept Mary, turned Zanzibar into an ORG and selected "Zanzi" only: the word is taken whole.
        _ner_task(1, "Mary visited Zanzibar today", [_annotation([span(0, 4, "Mary", "PER"),
                                                                  span(13, 18, "Zanzi", "ORG")])]),
        _ner_task(2, "Ali Khan met Acme Corp .", [_annotation([span(0, 8, "Ali Khan", "per"),
                                                               span(13, 22, "Acme Corp", "ORG")])]),
        _ner_task(3, "nobody looked at this", []),
        _ner_task(4, "people met today .", [_annotation([])]),  # submitted with no entity: all O
    ]
    (tmp_path / "ner-export.json").write_text(json.dumps(export))
    store = DataStore(tmp_path / "data")
    base = tmp_path / "base.jsonl"
    base.write_text("".join(json.dumps(r) + "\n" for r in ner_records(40, seed=2)))
    ingest_batch(read_file_source(base, NER_DATA, task=NER), NER_DATA, store, base=True, task=NER)
    batch = ingest_batch(read_file_source(tmp_path / "ner-export.json", NER_DATA, task=NER), NER_DATA, store,
                         base=False, task=NER).batch
    assert (batch.accepted, batch.quarantined) == (3, 1)
    rows = store.read([batch]).set_index("text")["label"].to_dict()
    assert rows == {"Mary visited Zanzibar today": "B-PER O B-ORG O", "Ali Khan met Acme Corp .": "B-PER I-PER O B-ORG I-ORG O",
                    "people met today .": "O O O O"}
    rejected = pd.read_csv(store.data_dir / batch.quarantine_file, keep_default_na=False)
    assert list(rejected["check"]) == ["no_human_label"] and list(rejected["source_row"]) == [3]


def _ner_task(task_id: int, text: str, annotations: list) -> dict:
    return {"id": task_id, "data": {"text": text}, "annotations": annotations,
            "predictions": [{"result": [{"from_name": "label", "to_name": "text", "type": "labels",
                                         "value": {"start": 0, "end": 3, "text": text[:3], "labels": ["LOC"]}}]}]}
