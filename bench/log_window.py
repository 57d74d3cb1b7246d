"""Reading a window of the partitioned prediction log vs reading all of it (not a test).

Writes ROWS logged predictions through PredictionLog, as two replicas over HOURS hourly partitions (texts of
review-like lengths), then times, side by side in one run: the newest hour (monitor.window 1h), the whole
partitioned log, and the same rows as one JSON-lines file read the way the single-file log is read. Prints
rows, seconds and files opened for each, and the ratios.

    .venv/bin/python bench/log_window.py [--rows 1000000] [--hours 24] [--dir /tmp/somewhere]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

START = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)  # 24 hours from here cross a date boundary too
WORDS = ("the service was quick and friendly but the food arrived cold after a long wait we would not "
         "come back again great value for money staff helpful room clean noisy street breakfast average "
         "delivery late package damaged refund easy support answered battery lasts screen bright").split()
BATCH = 64  # texts per write: one micro-batch's sampled requests


class Clock:
    def __init__(self) -> None:
        self.moment = START

    def __call__(self) -> datetime:
        return self.moment


def review_texts(count: int, seed: int) -> list[str]:
    """Review-like texts: log-normal lengths around 40 words (~200 characters), a long tail to ~400 words."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=min(400, max(3, int(rng.lognormvariate(3.6, 0.6))))))
            for _ in range(count)]


def write_log(root: Path, rows: int, hours: int) -> float:
    """Two replicas, rows spread evenly over the hours; returns the seconds taken."""
    from components.serving.prediction_log import PredictionLog

    clock = Clock()
    writers = [PredictionLog(root, 1.0, replica=name, now=clock) for name in ("replica-a", "replica-b")]
    texts = review_texts(5000, seed=1)
    batches = rows // BATCH
    started = time.perf_counter()
    for number in range(batches):
        clock.moment = START + timedelta(hours=hours) * number / batches
        chunk = [texts[(number * BATCH + i) % len(texts)] for i in range(BATCH)]
        answers = [{"label": "positive" if i % 3 else "negative", "score": 0.5 + (i % 50) / 100} for i in range(BATCH)]
        writers[number % 2].write("7", chunk, answers)
    return time.perf_counter() - started


def as_one_file(root: Path, target: Path) -> None:
    """The same rows in the single-file layout (its reader skips the extra replica field)."""
    with target.open("wb") as out:
        for part in sorted(root.rglob("*.jsonl")):
            with part.open("rb") as handle:
                shutil.copyfileobj(handle, out)


def timed(label: str, read) -> tuple[float, int, int]:
    started = time.perf_counter()
    frame = read()
    seconds = time.perf_counter() - started
    files = frame.attrs.get("files_read")
    print(f"  {label:<34} {len(frame):>9,} rows  {seconds:7.3f} s  {files:>3} file(s) opened")
    return seconds, len(frame), files


def main() -> int:
    from components.serving.prediction_log import read_prediction_log

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="log-window-", dir=args.dir))
    try:
        root = work / "predictions"
        seconds = write_log(root, args.rows, args.hours)
        size = sum(path.stat().st_size for path in root.rglob("*.jsonl"))
        print(f"wrote {args.rows:,} rows, {size / 1e6:,.0f} MB, {len(list(root.rglob('*.jsonl')))} files "
              f"({args.hours} hours x 2 replicas) in {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s)")
        as_one_file(root, work / "predictions.jsonl")
        end = START + timedelta(hours=args.hours)
        print("reads (pandas frame out):")
        window = timed("partitioned, window 1h", lambda: read_prediction_log(root, window=timedelta(hours=1),
                                                                            now=lambda: end))
        whole = timed("partitioned, whole log", lambda: read_prediction_log(root))
        single = timed("single file, whole log (as before)", lambda: read_prediction_log(work / "predictions.jsonl"))
        print(f"whole / 1h window: {whole[0] / window[0]:.1f}x the time, {whole[2] / window[2]:.0f}x the files, "
              f"{whole[1] / window[1]:.0f}x the rows")
        print(f"single file / partitioned, whole log: {single[0] / whole[0]:.1f}x the time")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
