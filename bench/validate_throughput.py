"""Time validate_dataset and quarantine_rows on 1,000,000 synthetic rows; prints rows/s and peak RSS. Not a test.

    .venv/bin/python bench/validate_throughput.py [--rows N]

validate_dataset: a clean frame (the common case), then the same frame with 1% of rows broken in
each of several ways (the failure path also collects example rows). quarantine_rows: the same two
frames, then the worst case, every row failing three checks (GX lists 3M row indices). Then validate_batch
of the clean rows against the whole frame as the existing data. The bar: 1,000,000 rows quarantined
in under 60 s with peak RSS under 4 GB.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components.config import DataParams  # noqa: E402
from components.data.validation.batch import validate_batch
from components.data.validation.quarantine import quarantine_rows
from components.data.validation.suite import validate_dataset  # noqa: E402

WORDS = np.array("the film movie story acting was a plot cast and with its really quite great awful".split())


def synthetic_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """Short distinct reviews, two balanced labels, shaped like the pipeline's dataset frame."""
    rng = np.random.default_rng(seed)
    picks = WORDS[rng.integers(0, len(WORDS), size=(rows, 6))]
    text = pd.Series([" ".join(p) for p in picks], dtype="str") + " #" + pd.Series(np.arange(rows)).astype("str")
    ids = pd.util.hash_pandas_object(text, index=False).map("{:016x}".format).astype("str")
    return pd.DataFrame({
        "id": ids,
        "text": text,
        "label": pd.Series(np.where(rng.random(rows) < 0.5, "positive", "negative"), dtype="str"),
        "batch_id": pd.Series(["bench"] * rows, dtype="str"),
        "source_row": np.arange(2, rows + 2, dtype="int64"),
    })


def broken_copy(frame: pd.DataFrame, fraction: float = 0.01, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    broken = frame.copy()
    n = len(frame)
    hit = lambda: rng.choice(n, size=max(1, int(n * fraction)), replace=False)  # noqa: E731
    broken.loc[hit(), "label"] = "neutral"
    broken.loc[hit(), "label"] = None
    broken.loc[hit(), "text"] = "   "
    broken.loc[hit(), "text"] = "x" * 6000  # longer than data.max_chars
    rows = hit()
    broken.loc[rows, "text"] = broken.loc[rows, "text"] + " caf\ufffd"  # a bad decode
    rows = hit()
    broken.loc[rows, "text"] = broken.loc[rows, "text"] + " \x1b[0m"  # a terminal escape
    rows = hit()
    broken.loc[rows, ["id", "text"]] = broken.loc[rows - 1, ["id", "text"]].to_numpy()  # duplicates, some conflicting
    return broken


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    params = DataParams(source="bench", labels=["positive", "negative"], min_chars=1, max_chars=5000,
                        max_duplicate_fraction=0.005)  # the limits its synthetic texts were measured with

    started = time.perf_counter()
    frame = synthetic_frame(args.rows)
    print(f"built {len(frame):,} rows in {time.perf_counter() - started:.1f} s; peak RSS {peak_rss_mb():,.0f} MB")

    started = time.perf_counter()
    import great_expectations  # noqa: F401  # timed apart: a one-off cost per process

    print(f"import great_expectations: {time.perf_counter() - started:.1f} s")

    broken = broken_copy(frame)
    for name, data in (("clean", frame), ("1% broken", broken)):
        started = time.perf_counter()
        report = validate_dataset(data, params, source=f"bench:{name}")
        seconds = time.perf_counter() - started
        failed = ", ".join(f.check for f in report.failures) or "none"
        print(f"validate_dataset {name}: {len(data):,} rows in {seconds:.2f} s = {len(data) / seconds:,.0f} rows/s; "
              f"success={report.success}; failed checks: {failed}; peak RSS {peak_rss_mb():,.0f} MB")

    # The worst case: every row fails three checks, so GX lists 3M row indices and every row gets a
    # three-part reason.
    all_bad = frame.assign(text="caf\ufffd \x07" + frame["text"], label=None)
    for name, data in (("clean", frame), ("1% broken per kind", broken), ("every row bad, 3 checks", all_bad)):
        started = time.perf_counter()
        result = quarantine_rows(data, params)
        seconds = time.perf_counter() - started
        assert result.rows == len(data)
        print(f"quarantine_rows {name}: {len(data):,} rows in {seconds:.2f} s = {len(data) / seconds:,.0f} rows/s; "
              f"{result.summary()}; peak RSS {peak_rss_mb():,.0f} MB")
        del result

    result = quarantine_rows(broken, params)
    started = time.perf_counter()
    report = validate_batch(result.clean, rows_in=len(broken), quarantined=len(result.quarantined), existing=frame,
                            data=params)
    seconds = time.perf_counter() - started
    failed = ", ".join(f.check for f in report.failures) or "none"
    print(f"validate_batch: {len(result.clean):,} clean rows against {len(frame):,} existing in {seconds:.2f} s; "
          f"failed checks: {failed}; peak RSS {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
