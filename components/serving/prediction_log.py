"""The service's sampled prediction log (JSON lines), and reading it back: monitoring compares live
traffic with the data the champion was trained on. Predicted labels stand in for the true ones, which
live traffic lacks."""

from __future__ import annotations

import json
import random
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd


def prediction_label(prediction: dict[str, Any]) -> str:
    """What a prediction is counted as: a classifier's label; for NER "entities" or "no_entities"."""
    if "label" in prediction:
        return str(prediction["label"])
    return "entities" if prediction.get("entities") else "no_entities"


def _tags_of_entities(text: str, entities: list[dict[str, Any]]) -> str:
    """The text's words' IOB2 tags implied by character-offset entities, space-joined: the shape of an
    NER split's `label` column, so logged traffic compares with training data."""
    from components.entities import split_words

    words = split_words(text)
    tags = ["O"] * len(words)
    for entity in entities:
        first, last = entity.get("start"), entity.get("end")
        if not isinstance(first, int) or not isinstance(last, int):
            continue  # a predictor without offsets: its entities cannot be placed on words
        inside = [i for i, (_, start, end) in enumerate(words) if start >= first and end <= last]
        for rank, index in enumerate(inside):
            tags[index] = f"{'B' if rank == 0 else 'I'}-{entity.get('type')}"
    return " ".join(tags)


def _log_fields(text: str, prediction: dict[str, Any]) -> dict[str, Any]:
    if "label" in prediction:
        return {"label": prediction["label"], "score": prediction.get("score")}
    # NER: label is the words' predicted tags (space-joined), score the entities' mean score.
    entities = prediction.get("entities", [])
    scores = [float(entity["score"]) for entity in entities if isinstance(entity.get("score"), (int, float))]
    return {"label": _tags_of_entities(text, entities), "score": sum(scores) / len(scores) if scores else None,
            "entities": [{key: entity.get(key) for key in ("type", "start", "end", "score")} for entity in entities]}


class PredictionLog:
    """Appends JSON lines {time, version, text, label, score} for a sample of requests (drift monitoring).
    NER lines have label = the predicted IOB2 tags of the text's words (space-joined, as in an NER
    split), score = the entities' mean score (null without entities) and entities (type, start, end, score).

    A log that cannot be written costs a warning and a counter, never a request.
    """

    def __init__(self, path: Path, sample_rate: float, *, seed: int | None = None) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def wants_request(self) -> bool:
        with self._lock:
            return self.sample_rate > 0 and self._random.random() < self.sample_rate

    def write(self, version: str | None, texts: list[str], predictions: list[dict[str, Any]]) -> None:
        stamp = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        lines = [json.dumps({"time": stamp, "version": version, "text": text, **_log_fields(text, p)},
                            ensure_ascii=False) for text, p in zip(texts, predictions)]
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:  # reopened per batch: survives log rotation
                handle.write("\n".join(lines) + "\n")


def read_prediction_log(path: Path, last: int | None = None) -> pd.DataFrame:
    """The logged predictions as a frame with `text` and `label` (the predicted label), `score`, and for
    NER `entities` (type, start, end, score)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no prediction log; set serve.prediction_log and serve some traffic first")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a crash mid-write; the rest are still good
    columns = ["time", "version", "text", "label", "score"]
    if any("entities" in record for record in records):  # NER: offsets and scores for the labelling queue
        columns.append("entities")
    frame = pd.DataFrame(records, columns=columns)
    return frame.tail(last).reset_index(drop=True) if last else frame
