"""Monitor: drift of live traffic, read from the service's sampled prediction log, against the data
the champion was trained on. Predicted labels stand in for the true ones, which live traffic lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def read_prediction_log(path: Path, last: int | None = None) -> pd.DataFrame:
    """The logged predictions as a frame with `text` and `label` (the predicted label)."""
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
    frame = pd.DataFrame(records, columns=["time", "version", "text", "label", "score"])
    return frame.tail(last).reset_index(drop=True) if last else frame
