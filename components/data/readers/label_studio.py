"""Label Studio exports: the labelled queue coming back (components/monitoring/labelling.py sends it out).

A `.json` file is read as a Label Studio export, in either of its JSON forms:

- "JSON" (the full export): a list of tasks, each with `data` (the text under "text", or under
  data.text_column) and `annotations` (each with `result`, `was_cancelled`, `created_at`/`updated_at`);
- "JSON-MIN": a list of flat records, one per annotation: the task's data fields, the control's name
  ("label") holding the choice (or the spans for NER), plus id, annotator, annotation_id.

The label comes only from an annotation a person submitted: cancelled (skipped) annotations are
ignored, the most recently updated one wins when there are several, and the task's `predictions` (the
served model's suggestions) are never read. A task without such an annotation, or whose annotation
cannot be turned into one label (no choice, several choices, overlapping spans of different types), is
kept with its reason in the `rejected` column: ingest quarantines it, naming file, task and field.
Classification takes the `choices` result; token classification turns the `labels` spans (character
offsets) into IOB2 tags of the words components.entities.split_words makes of the text, the same words
the served tagger and the prediction log use. Labels are raw: ingest maps and checks them like any
other source's.

Label Studio's CSV/TSV exports of a classification project are plain tables whose columns are the
task's data keys and the control's name ("text", "label"): the CSV reader reads them when data.text_column
and data.label_column are "text" and "label". Other export formats (CoNLL, spaCy...) are not read here.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from components.config import DataParams
from components.data.readers.common import IngestError, text_label_frame

# The column a reader fills with why a row it could read must not be trained on ("" when it may).
REJECTED_COLUMN = "rejected"
# The name labelling.py gives the control; results from other controls (a comment box...) are ignored.
LABEL_CONTROL = "label"
# JSON-MIN's bookkeeping fields: never the text or the label.
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
JSON_MIN_META = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "tunegate_id",
                 "tunegate_reason"}


def read_label_studio(path: Path, utf8: bytes, data: DataParams, *, token_task: bool) -> pd.DataFrame:
    """The export as a frame: text, label, source_row (the task's 1-based position in the list) and
    rejected; for token classification tokens, tags, source_row and rejected."""
    try:
        tasks = json.loads(utf8)
    except json.JSONDecodeError as error:
        raise IngestError(path, f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno} "
                                "(a .json file is read as a Label Studio export)") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise IngestError(path, "a .json file is read as a Label Studio export, a JSON list of tasks; this one is "
                                f"{type(tasks).__name__}. Plain records go in JSON Lines (.jsonl), one object a line")
    if not tasks:
        raise IngestError(path, "the Label Studio export holds no tasks")
    full = any("data" in t or "annotations" in t for t in tasks)
    rows = [(_full_task if full else _min_record)(path, number, task, data, token_task)
            for number, task in enumerate(tasks, start=1)]
    texts = [r[0] for r in rows]
    labels = [r[1] for r in rows]
    rejected = [r[2] for r in rows]
    positions = list(range(1, len(rows) + 1))
    if token_task:
        from components.entities import split_words

        frame = pd.DataFrame({
            "tokens": pd.Series([[w for w, _, _ in split_words(t)] for t in texts], dtype=object),
            "tags": pd.Series([label if isinstance(label, list) else [] for label in labels], dtype=object),
        })
        frame["source_row"] = pd.Series(np.asarray(positions, dtype="int64"))
    else:
        frame = text_label_frame(texts, [label if isinstance(label, str) else "" for label in labels], positions)
    frame[REJECTED_COLUMN] = pd.Series(rejected, dtype="str")
    return frame


def _where(path: Path, number: int, task: dict[str, Any], field: str) -> str:
    task_id = task.get("id")
    return f"{path.name} task {number}" + (f" (id {task_id})" if task_id is not None else "") + f", field {field!r}"


def _task_text(path: Path, number: int, record: dict[str, Any], data: DataParams) -> str:
    for key in ("text", data.text_column):
        if isinstance(record.get(key), str):
            return record[key]
    raise IngestError(path, f"task has no text: expected a string under 'text' or {data.text_column!r} "
                            f"(data.text_column); fields: {sorted(record)}", row=number, field="data")


def _full_task(path: Path, number: int, task: dict[str, Any], data: DataParams,
               token_task: bool) -> tuple[str, Any, str]:
    if not isinstance(task.get("data"), dict):
        raise IngestError(path, "task has no 'data' object (is this a Label Studio JSON export?)", row=number,
                          field="data")
    text = _task_text(path, number, task["data"], data)
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        raise IngestError(path, "'annotations' must be a list", row=number, field="annotations")
    submitted = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    where = _where(path, number, task, "annotations")
    if not submitted:
        why = ("every annotation was cancelled (skipped by the annotator)" if annotations
               else "no annotation by a person (a prediction is only a suggestion, never a label)")
        return text, None, f"{where}: {why}"
    # The latest decision stands: a person who changed their mind updated or re-submitted it.
    latest = max(enumerate(submitted), key=lambda pair: (_when(pair[1]), pair[0]))[1]
    results = [r for r in latest.get("result") or [] if isinstance(r, dict)]
    ours = [r for r in results if r.get("from_name") == LABEL_CONTROL] or results
    if token_task:
        spans = [dict(r.get("value") or {}) for r in ours if r.get("type") == "labels"]
        return (text, *_tags(text, spans, where))
    choices = [c for r in ours if r.get("type") == "choices" for c in (r.get("value") or {}).get("choices", [])]
    return (text, *_choice(choices, where))


def _min_record(path: Path, number: int, record: dict[str, Any], data: DataParams,
                token_task: bool) -> tuple[str, Any, str]:
    text = _task_text(path, number, record, data)
    where = _where(path, number, record, LABEL_CONTROL)
    if LABEL_CONTROL not in record:
        return text, None, f"{where}: no annotation by a person (JSON-MIN record without a {LABEL_CONTROL!r} field)"
    value = record[LABEL_CONTROL]
    if token_task:
        spans = value if isinstance(value, list) else []
        return (text, *_tags(text, [s for s in spans if isinstance(s, dict)], where))
    if isinstance(value, dict):  # several choices allowed: {"choices": [...]}
        value = value.get("choices", [])
    return (text, *_choice(value if isinstance(value, list) else [value], where))


def _when(annotation: dict[str, Any]) -> datetime:
    for key in ("updated_at", "created_at"):
        stamp = annotation.get(key)
        if isinstance(stamp, str):
            try:
                moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            except ValueError:
                continue
            return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)  # Label Studio writes UTC
    return EPOCH  # no time: list order decides


def _choice(choices: list[Any], where: str) -> tuple[Any, str]:
    if len(choices) == 1 and isinstance(choices[0], (str, int, float)) and not isinstance(choices[0], bool):
        return str(choices[0]).strip(), ""
    if not choices:
        return None, f"{where}: the annotation has no choice"
    return None, f"{where}: the annotation has {len(choices)} choices {choices}; one label per text"


def _tags(text: str, spans: list[dict[str, Any]], where: str) -> tuple[Any, str]:
    """IOB2 tags of the text's words from character spans: a word belongs to a span it overlaps (a
    span that cuts a word takes the whole word, as a person dragging a selection meant)."""
    from components.entities import split_words

    words = split_words(text)
    kinds: list[str | None] = [None] * len(words)
    first: list[bool] = [False] * len(words)
    for span in sorted(spans, key=lambda s: (s.get("start", 0) if isinstance(s.get("start"), int) else 0)):
        start, end, labels = span.get("start"), span.get("end"), span.get("labels") or []
        if not isinstance(start, int) or not isinstance(end, int) or len(labels) != 1:
            return None, f"{where}: span {json.dumps(span)[:80]} needs integer start/end and exactly one label"
        covered = [i for i, (_, w_start, w_end) in enumerate(words) if w_start < end and w_end > start]
        if not covered:
            return None, f"{where}: span {start}-{end} {text[start:end]!r} covers no word of the text"
        for rank, index in enumerate(covered):
            if kinds[index] is not None:
                return None, (f"{where}: spans overlap on the word {words[index][0]!r} "
                              f"({kinds[index]} and {labels[0]}); one entity per word")
            kinds[index], first[index] = str(labels[0]).strip(), rank == 0
    return [("B-" if first[i] else "I-") + kind if kind else "O" for i, kind in enumerate(kinds)], ""
