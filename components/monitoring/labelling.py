"""The labelling queue: logged live texts a person should label next, written for Label Studio.

Live traffic has no labels; retraining on the same labelled data changes nothing. When drift warns or
fails, the texts worth a person's time are the ones that drove it:

- atypical texts, measured by the share of their words never seen in the reference (the champion's
  training texts). Chosen over char-n-gram TF-IDF distances because a person reads it at once ("7 of
  its 9 words never occur in the training data"), it costs one set lookup per word, and it is the
  word-level reading of the drift report's OOV check. Texts whose length in characters lies outside
  the reference's 1st-99th percentile range are atypical too (the length-shift check's reading);
- the least confident answers: score below `low_confidence`, lowest first.

The served prediction travels with each text as a `suggestion` (a Label Studio *prediction*, which the
tool shows pre-filled and marks as a model's), never as a label: the way back (components/data/readers/
label_studio.py) reads only the annotations a person submitted.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd
from pydantic import BaseModel

from components.config import TOKEN_CLASSIFICATION, Task

# The Label Studio control and object names; the export reader looks for results from this control.
LABEL_CONTROL = "label"
TEXT_OBJECT = "text"
# Reasons a text was picked, with their figure's meaning (the CSV's `reason` and `figure` columns).
UNSEEN_WORDS = "unseen_words"  # figure: share of the text's words absent from the reference
LENGTH = "length"  # figure: the text's length in characters / the edge of the reference's 1-99% range
LOW_CONFIDENCE = "low_confidence"  # figure: the served score
QUEUE_COLUMNS = ["id", "text", "suggestion", "score", "model_version", "reason", "figure", "why", "occurrences"]


class LabellingQueueFiles(BaseModel):
    csv: Path
    label_studio_json: Path
    rows: int
    label_studio_config: Path | None = None


# A word: a run of letters and digits. Case-folded: "Refund" and "refund" are one word for "has the
# model seen it"; punctuation is not a word a person would count.
WORD = re.compile(r"[^\W_]+")


def _words(text: str) -> list[str]:
    return WORD.findall(text.casefold())


def _norm(text: str) -> str:
    from components.data.dataset import normalize_text

    return normalize_text(text)


def _entities_from_tags(text: str, tags: str) -> list[dict[str, Any]]:
    """Entities (type, start, end) of a logged NER line that has only its words' tags."""
    from components.entities import spans_from_tags, split_words

    words = split_words(text)
    tag_list = tags.split(" ") if isinstance(tags, str) and tags else []
    if len(tag_list) != len(words):
        return []
    return [{"type": span.kind, "start": words[span.start][1], "end": words[span.end - 1][2], "score": None}
            for span in spans_from_tags(tag_list)]


def _suggestion(row: pd.Series, token_task: bool) -> Any:
    if not token_task:
        return None if pd.isna(row.get("label")) else str(row.get("label"))
    entities = row.get("entities")
    if not isinstance(entities, list):
        entities = _entities_from_tags(str(row.get("text", "")), row.get("label"))
    text = str(row["text"])
    return [{"type": e.get("type"), "start": e.get("start"), "end": e.get("end"),
             "text": text[e["start"]:e["end"]] if isinstance(e.get("start"), int) and isinstance(e.get("end"), int)
             else None, "score": e.get("score")} for e in entities]


def labelling_queue(traffic: pd.DataFrame, reference: pd.DataFrame, *, task: Task, size: int,
                    low_confidence: float, min_unseen_share: float = 0.3) -> pd.DataFrame:
    """The logged texts (prediction-log frame: time, version, text, label, score[, entities]) to label
    next: the most atypical against `reference` (the champion's training rows: text, label) and the least
    confident, de-duplicated, at most `size`, with the served prediction as a marked suggestion.

    A text qualifies when at least `min_unseen_share` of its words are unseen in the reference, when its
    length lies outside the reference's 1st-99th percentile range, or when its score is below
    `low_confidence` (a missing score, as NER without entities logs, is not low confidence). The two
    lists, most atypical first and least confident first, are taken in turn so that neither crowds out
    the other. Texts already in the reference, or repeated in the log (same text after normalisation),
    appear once; the latest logged prediction is the suggestion and `occurrences` counts the copies.

    Columns: id (hash of the normalised text, the id the row gets in the dataset), text, suggestion
    (classification: the served label; NER: the entities with type, start, end, text, score), score,
    model_version, reason (unseen_words, length, low_confidence), figure (the reason's number), why (a
    sentence), occurrences.
    """
    from components.data.dataset import text_ids

    if size < 0:
        raise ValueError(f"size must be 0 or more, got {size}")
    token_task = task == TOKEN_CLASSIFICATION
    empty = pd.DataFrame({column: pd.Series(dtype=object) for column in QUEUE_COLUMNS})
    if traffic.empty or size == 0 or "text" not in traffic.columns:
        return empty
    reference_texts = reference["text"].dropna().astype(str) if "text" in reference.columns else pd.Series(dtype=str)
    logged = _unlabelled_texts(traffic, reference_texts)
    if logged.empty:
        return empty

    scores = pd.to_numeric(logged["score"], errors="coerce") if "score" in logged.columns else pd.Series(
        np.nan, index=logged.index)
    unsure = sorted(((float(s), index) for index, s in scores.items() if not pd.isna(s) and s < low_confidence))
    confidence_picks = [(index, LOW_CONFIDENCE, s, f"served with score {s:.2f}, below {low_confidence:.2f}")
                        for s, index in unsure]
    chosen = _take_in_turn(_atypical_picks(logged, reference_texts, min_unseen_share), confidence_picks, size)
    if not chosen:
        return empty
    rows = []
    for index, reason, figure, why in chosen:
        row = logged.loc[index]
        version = row.get("version")
        score = scores.loc[index]
        rows.append({
            "text": row["text"], "norm": row["norm"], "suggestion": _suggestion(row, token_task),
            "score": None if pd.isna(score) else float(score),
            "model_version": None if version is None or pd.isna(version) else str(version),
            "reason": reason, "figure": round(float(figure), 4), "why": why, "occurrences": int(row["occurrences"]),
        })
    queue = pd.DataFrame(rows)
    queue.insert(0, "id", text_ids(queue.pop("norm")))
    return queue[QUEUE_COLUMNS].reset_index(drop=True)


def _unlabelled_texts(traffic: pd.DataFrame, reference_texts: pd.Series) -> pd.DataFrame:
    """The logged rows with a text, one per text (the latest, with `occurrences` counting its copies), less
    the texts the reference already has; columns `norm` and `key` added."""
    logged = traffic[traffic["text"].map(lambda t: isinstance(t, str) and bool(t.strip()))].copy()
    logged["norm"] = logged["text"].map(_norm)
    # One question per text a person would call the same: normalised (the dataset's identity) and case-folded.
    logged["key"] = logged["norm"].str.casefold()
    occurrences = logged.groupby("key")["key"].transform("size")
    logged = logged.assign(occurrences=occurrences).drop_duplicates("key", keep="last")
    # Dataset texts are stored normalised already (ingest's normalize_text): case-folding is enough.
    known = set(reference_texts.str.casefold().tolist())
    return logged[[key not in known for key in logged["key"].tolist()]]  # already labelled: nothing to ask


def _atypical_picks(logged: pd.DataFrame, reference_texts: pd.Series,
                    min_unseen_share: float) -> list[tuple[Any, str, float, str]]:
    """(index, reason, figure, why) of the texts with unseen words or an unusual length: unseen words first
    (a vocabulary the model never learnt), then the length outliers, each strongest first."""
    # One regular-expression pass over all the reference text: about a second per million short texts.
    vocabulary = set(WORD.findall("\n".join(reference_texts).casefold()))
    words = logged["text"].map(_words)
    unseen = words.map(lambda ws: sum(w not in vocabulary for w in ws))
    share = (unseen / words.map(len).clip(lower=1)).astype(float)
    lengths = logged["text"].str.len().astype(float)
    if len(reference_texts):
        low_edge, high_edge = np.percentile(reference_texts.str.len().to_numpy(dtype=float), [1, 99])
    else:
        low_edge, high_edge = 0.0, math.inf
    # Distance outside the range, as a ratio a person reads: 3.0 = three times the longest usual length.
    length_ratio = np.where(lengths > high_edge, lengths / max(high_edge, 1.0),
                            np.where(lengths < low_edge, low_edge / lengths.clip(lower=1.0), 0.0))

    atypical = []
    for index, word_share, ratio, n_unseen, ws, length in zip(logged.index, share, length_ratio, unseen, words,
                                                              lengths):
        side = "longer than" if length > high_edge else "shorter than"
        length_why = (f"{int(length)} characters, {side} the training texts' usual "
                      f"{low_edge:.0f}-{high_edge:.0f} (1st-99th percentile)")
        if vocabulary and word_share >= min_unseen_share:
            why = f"{n_unseen} of its {len(ws)} words never occur in the champion's training texts"
            atypical.append((word_share, 1, index, UNSEEN_WORDS, float(word_share),
                             why + (f"; {length_why}" if ratio > 0 else "")))
        elif ratio > 0:
            atypical.append((float(ratio), 0, index, LENGTH, float(ratio), length_why))
    atypical.sort(key=lambda item: (-item[1], -item[0]))
    return [(index, reason, figure, why) for _, _, index, reason, figure, why in atypical]


def _take_in_turn(atypical_picks: list, confidence_picks: list, size: int) -> list[tuple[Any, str, float, str]]:
    """At most `size` texts, from the two lists in turn, each text once; a text picked for one reason and
    qualifying for the other says both in `why`."""
    whys: dict[Any, list[str]] = {}
    for index, _, _, why in atypical_picks + confidence_picks:
        whys.setdefault(index, []).append(why)
    chosen: list[tuple[Any, str, float, str]] = []
    taken: set[Any] = set()
    for index, reason, figure, _ in _alternate(atypical_picks, confidence_picks):
        if index in taken:
            continue
        taken.add(index)
        chosen.append((index, reason, figure, "; ".join(whys[index])))
        if len(chosen) == size:
            break
    return chosen


def _alternate(first: list, second: list) -> list:
    merged = []
    for index in range(max(len(first), len(second))):
        merged.extend(items[index] for items in (first, second) if index < len(items))
    return merged


def _prediction(row: pd.Series, token_task: bool, model_version: str | None) -> dict[str, Any]:
    """The served answer as a Label Studio prediction: shown pre-filled, marked as the model's."""
    version = row.get("model_version") or model_version
    suggestion = row["suggestion"]
    if token_task:
        result = [{"from_name": LABEL_CONTROL, "to_name": TEXT_OBJECT, "type": "labels",
                   "value": {"start": e["start"], "end": e["end"], "text": e.get("text"), "labels": [e["type"]]},
                   **({"score": e["score"]} if e.get("score") is not None else {})}
                  for e in (suggestion or []) if isinstance(e.get("start"), int) and isinstance(e.get("end"), int)]
    else:
        result = [] if suggestion is None else [{"from_name": LABEL_CONTROL, "to_name": TEXT_OBJECT,
                                                 "type": "choices", "value": {"choices": [suggestion]}}]
    prediction: dict[str, Any] = {"model_version": f"tunegate suggestion (served version {version})", "result": result}
    if row.get("score") is not None and not pd.isna(row.get("score")):
        prediction["score"] = float(row["score"])
    return prediction


def label_studio_tasks(queue: pd.DataFrame, *, task: Task, model_version: str | None) -> list[dict[str, Any]]:
    """Label Studio import tasks: the text (and why it was picked) as data, the suggestion as a prediction."""
    token_task = task == TOKEN_CLASSIFICATION
    return [{
        "data": {"text": row["text"], "tunegate_id": row["id"], "tunegate_reason": row["why"]},
        "predictions": [_prediction(row, token_task, model_version)],
    } for _, row in queue.iterrows()]


def label_studio_config(labels: list[str], *, task: Task) -> str:
    """The labelling interface (Label Studio XML): one choice among data.labels, or entity spans of
    the types in data.labels for token classification."""
    if task == TOKEN_CLASSIFICATION:
        items = "\n".join(f"    <Label value={quoteattr(label)}/>" for label in labels)
        control = f'  <Labels name="{LABEL_CONTROL}" toName="{TEXT_OBJECT}">\n{items}\n  </Labels>\n'
        body = control + f'  <Text name="{TEXT_OBJECT}" value="$text"/>\n'
    else:
        items = "\n".join(f"    <Choice value={quoteattr(label)}/>" for label in labels)
        body = (f'  <Text name="{TEXT_OBJECT}" value="$text"/>\n'
                f'  <Choices name="{LABEL_CONTROL}" toName="{TEXT_OBJECT}" choice="single" showInline="true">\n'
                f"{items}\n  </Choices>\n")
    # Why tunegate asks about this text (a plain Text object: nothing is labelled on it).
    why = '  <Header value="Why this text was picked" size="6"/>\n  <Text name="why" value="$tunegate_reason"/>\n'
    return "<View>\n" + body + why + "</View>\n"


def write_labelling_queue(queue: pd.DataFrame, directory: Path, *, task: Task, labels: list[str],
                          model_version: str | None, text_column: str = "text",
                          label_column: str = "label") -> LabellingQueueFiles:
    """Write the queue as CSV and as a Label Studio import (JSON tasks with predictions).

    Files in `directory`: labelling-queue.csv (the queue, with an empty `label_column` a person may
    fill in: `tunegate ingest` reads it like any CSV and quarantines the rows left empty),
    labelling-queue.label-studio.json (the tasks to import) and label-studio-config.xml (the labelling
    interface to paste into the project's settings).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    token_task = task == TOKEN_CLASSIFICATION
    sheet = queue.copy()
    if token_task:  # a CSV cell holds text: the entities as JSON
        sheet["suggestion"] = sheet["suggestion"].map(lambda s: json.dumps(s, ensure_ascii=False))
    sheet = sheet.rename(columns={"text": text_column})
    sheet.insert(2, label_column, "")
    csv_path = directory / "labelling-queue.csv"
    sheet.to_csv(csv_path, index=False, lineterminator="\n")
    json_path = directory / "labelling-queue.label-studio.json"
    tasks = label_studio_tasks(queue, task=task, model_version=model_version)
    json_path.write_text(json.dumps(tasks, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    config_path = directory / "label-studio-config.xml"
    config_path.write_text(label_studio_config(labels, task=task), encoding="utf-8")
    return LabellingQueueFiles(csv=csv_path, label_studio_json=json_path, rows=len(queue),
                               label_studio_config=config_path)
