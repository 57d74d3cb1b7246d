"""Batch scoring: label a whole file with a served model, outside the HTTP service.

The input (CSV, TSV, JSON Lines or Parquet, with a text column) is read in chunks, never whole; each
chunk is scored and appended to the output (CSV or JSON Lines): the id column, then `label`, `score`
and one `score_<class>` column per class (a classifier), or `entities` (NER: a JSON list of text,
type, start, end, score). A row without text or with bytes that are not UTF-8 is not scored: it goes
to `<output>.rejected.csv` with its record number (1 = the first data row) and the reason.

After every chunk a progress file `<output>.progress.json` records how many input records are done and
how long the output and rejected files are then. Started again on the same input, model and output,
scoring truncates both files to that point (dropping whatever a crash left half-written) and goes on
after the last finished chunk, so that every row is scored exactly once.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

REPLACEMENT_CHARACTER = "\ufffd"  # what reading with errors="replace" puts where bytes were not UTF-8
INPUT_KINDS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
OUTPUT_KINDS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
FINGERPRINT_BYTES = 1 << 20
UNREADABLE = "__tunegate_unreadable__"  # the column that carries why a JSON line could not be read


# Maps the stream of chunks' texts to their predictions, one list per chunk, in the same order.
ChunkScorer = Callable[[Iterable[list[str]]], Iterable[list[dict]]]


class BatchScoringError(ValueError):
    """The input or output cannot be used as given; the message says what to change."""


@dataclass
class Progress:
    input_fingerprint: str
    model_version: str
    records_done: int = 0
    scored: int = 0
    rejected: int = 0
    output_bytes: int = 0
    rejected_bytes: int = 0


@dataclass(frozen=True)
class ScoringSummary:
    records: int
    scored: int
    rejected: int
    resumed_at: int  # records that an earlier, interrupted run had already done
    output: Path
    rejected_file: Path


@dataclass(frozen=True)
class Chunk:
    first_record: int  # record number (1-based) of the chunk's first row
    ids: list[Any]
    texts: list[Any]  # str, or None / a non-string where the row has no usable text
    problems: list[str | None]  # why a row could not even be read (a JSON line that is not JSON), else None


def _kind(path: Path, kinds: dict[str, str], role: str) -> str:
    kind = kinds.get(path.suffix.lower())
    if kind is None:
        raise BatchScoringError(f"{path}: unsupported {role} type {path.suffix or '(no suffix)'!r}; "
                                f"supported: {', '.join(sorted(kinds))}")
    return kind


def input_fingerprint(path: Path) -> str:
    """Size and the hash of the first MiB: enough to notice a different or rewritten input on resume."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        digest.update(handle.read(FINGERPRINT_BYTES))
    return f"{path.stat().st_size}:{digest.hexdigest()[:16]}"


def read_chunks(path: Path, text_column: str, id_column: str | None, chunk_rows: int,
                skip_records: int = 0) -> Iterator[Chunk]:
    """The input's rows in chunks of `chunk_rows`, after the first `skip_records`."""
    kind = _kind(path, INPUT_KINDS, "input")
    reader = {"csv": _delimited_frames, "tsv": _delimited_frames, "jsonl": _jsonl_frames,
              "parquet": _parquet_frames}[kind]
    first = 1
    for frame in reader(path, kind, chunk_rows):
        end = first + len(frame)
        if end - 1 > skip_records:
            if text_column not in frame.columns and UNREADABLE in frame.columns:
                frame = frame.assign(**{text_column: None})  # a chunk of unreadable lines only
            if text_column not in frame.columns:
                raise BatchScoringError(f"{path}: no column {text_column!r} (found {list(frame.columns)}); "
                                        "name the text column with --text-column")
            if id_column is not None and id_column not in frame.columns:
                raise BatchScoringError(f"{path}: no id column {id_column!r} (found {list(frame.columns)})")
            start = max(0, skip_records - first + 1)
            frame = frame.iloc[start:]
            ids = frame[id_column].tolist() if id_column else list(range(first + start, end))
            texts = [None if isinstance(t, float) and t != t else t for t in frame[text_column].tolist()]
            problems = ([v if isinstance(v, str) else None for v in frame[UNREADABLE].tolist()]
                        if UNREADABLE in frame.columns else [None] * len(texts))
            yield Chunk(first + start, ids, texts, problems)
        first = end


def _delimited_frames(path: Path, kind: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    # Bytes that are not UTF-8 become U+FFFD, so that the row can be named and set aside, not the file.
    frames = pd.read_csv(path, sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False,
                         na_values=[], chunksize=chunk_rows, encoding="utf-8", encoding_errors="replace")
    try:
        yield from frames
    except pd.errors.ParserError as error:
        raise BatchScoringError(f"{path}: cannot be read as {kind.upper()}: {error}") from None


def _jsonl_frames(path: Path, kind: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    records: list[dict] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                record = {UNREADABLE: f"line {number} is not JSON ({error.msg})"}
            records.append(record if isinstance(record, dict) else {UNREADABLE: f"line {number} is not an object"})
            if len(records) == chunk_rows:
                yield pd.DataFrame.from_records(records)
                records = []
    if records:
        yield pd.DataFrame.from_records(records)


def _parquet_frames(path: Path, kind: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=chunk_rows):
        yield batch.to_pandas()


def rejection_reason(text: Any) -> str | None:
    if text is None or (isinstance(text, str) and not text.strip()):
        return "no text"
    if not isinstance(text, str):
        return f"text is {type(text).__name__}, not a string"
    if REPLACEMENT_CHARACTER in text:
        return f"bytes that are not UTF-8 at character {text.index(REPLACEMENT_CHARACTER) + 1}"
    return None


class _Output:
    """The output and rejected files, appended to per chunk; their sizes are the resume points."""

    def __init__(self, path: Path, rejected: Path, labels: list[str] | None) -> None:
        self.path, self.rejected, self.kind = path, rejected, _kind(path, OUTPUT_KINDS, "output")
        self.labels = labels  # None: token classification

    def truncate_to(self, progress: Progress) -> None:
        for path, size in ((self.path, progress.output_bytes), (self.rejected, progress.rejected_bytes)):
            if path.exists():
                with path.open("r+b") as handle:
                    handle.truncate(size)

    def _columns(self) -> list[str]:
        if self.labels is None:
            return ["id", "entities"]
        return ["id", "label", "score"] + [f"score_{label}" for label in self.labels]

    def _row(self, identifier: Any, prediction: dict) -> dict:
        if self.labels is None:
            entities = prediction["entities"]
            return {"id": identifier, "entities": entities if self.kind == "jsonl" else json.dumps(entities)}
        if self.kind == "jsonl":
            return {"id": identifier, "label": prediction["label"], "score": prediction["score"],
                    "scores": prediction["scores"]}
        return {"id": identifier, "label": prediction["label"], "score": prediction["score"],
                **{f"score_{label}": prediction["scores"][label] for label in self.labels}}

    def write(self, ids: list[Any], predictions: list[dict], rejected: list[tuple[int, Any, str]]) -> None:
        rows = [self._row(i, p) for i, p in zip(ids, predictions)]
        _append(self.path, self.kind, rows, self._columns())
        _append(self.rejected, "csv", [{"record": r, "id": i, "reason": why} for r, i, why in rejected],
                ["record", "id", "reason"])

    def sizes(self) -> tuple[int, int]:
        return tuple(path.stat().st_size if path.exists() else 0 for path in (self.path, self.rejected))


def _append(path: Path, kind: str, rows: list[dict], columns: list[str]) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", encoding="utf-8", newline="") as handle:
        if kind == "jsonl":
            handle.writelines(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows)
        else:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerows(rows)
        handle.flush()
        os.fsync(handle.fileno())  # on disk before the progress file says so


def _write_progress(path: Path, progress: Progress) -> None:
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(asdict(progress), indent=2) + "\n")
    scratch.replace(path)  # atomic: a crash leaves the previous progress, never half of this one


def score_file(predictor: Any, model_version: str, input_path: Path, output_path: Path, *,
               text_column: str = "text", id_column: str | None = None, chunk_rows: int = 10_000,
               batch_size: int = 64, on_chunk: Callable[[int], None] | None = None,
               scorer: ChunkScorer | None = None) -> ScoringSummary:
    """Score `input_path` into `output_path` with `predictor` (an OnnxTextClassifier or OnnxTokenTagger),
    resuming an interrupted run of the same input and model.

    on_chunk(records_done) runs after each chunk is safely written. scorer: where the predictions are
    made (default: `predictor` in this process; a DaskChunkScorer spreads the chunks over a cluster);
    `predictor` then only tells the task and labels.
    """
    from tqdm.auto import tqdm

    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise BatchScoringError(f"{input_path}: no such file")
    progress_path = output_path.with_name(output_path.name + ".progress.json")
    rejected_path = output_path.with_name(output_path.name + ".rejected.csv")
    labels = None if getattr(predictor, "task", "") == "token-classification" else list(predictor.labels)
    output = _Output(output_path, rejected_path, labels)
    fingerprint = input_fingerprint(input_path)
    progress = Progress(fingerprint, str(model_version))
    if progress_path.is_file():
        earlier = Progress(**json.loads(progress_path.read_text()))
        if (earlier.input_fingerprint, earlier.model_version) != (fingerprint, str(model_version)):
            raise BatchScoringError(
                f"{output_path} holds an unfinished run on another input or model version "
                f"(v{earlier.model_version}); remove it and {progress_path.name}, or choose another output")
        progress = earlier
        output.truncate_to(progress)
    elif output_path.exists() and output_path.stat().st_size:
        raise BatchScoringError(f"{output_path} exists and was not written by an unfinished run; "
                                "choose another output or remove it")
    else:
        output.truncate_to(progress)  # an empty rejected file left by nothing: start clean
    resumed_at = progress.records_done
    total = _row_count(input_path)
    bar = tqdm(total=total, initial=resumed_at, unit="rows", desc="scoring", disable=None)

    if scorer is None:
        def scorer(stream: Iterable[list[str]]) -> Iterator[list[dict]]:
            return (predictor.predict(texts, batch_size=batch_size) if texts else [] for texts in stream)

    # The scorer may run ahead (chunks in flight on a cluster) but yields in input order: each result
    # belongs to the oldest chunk not yet written.
    waiting: deque[_Sorted] = deque()

    def texts_to_score() -> Iterator[list[str]]:
        for chunk in read_chunks(input_path, text_column, id_column, chunk_rows, skip_records=resumed_at):
            waiting.append(_sort_rows(chunk))
            yield waiting[-1].texts

    for predictions in scorer(texts_to_score()):
        done = waiting.popleft()
        chunk, keep, rejected = done.chunk, done.keep, done.rejected
        if len(predictions) != len(keep):
            raise RuntimeError(f"records {chunk.first_record}..: {len(keep)} texts scored, "
                               f"{len(predictions)} predictions came back")
        output.write([chunk.ids[i] for i in keep], predictions, rejected)
        progress.records_done = chunk.first_record + len(chunk.texts) - 1
        progress.scored += len(keep)
        progress.rejected += len(rejected)
        progress.output_bytes, progress.rejected_bytes = output.sizes()
        _write_progress(progress_path, progress)
        bar.update(len(chunk.texts))
        if on_chunk is not None:
            on_chunk(progress.records_done)
    bar.close()
    progress_path.unlink(missing_ok=True)  # finished: a new run on this output starts afresh
    if progress.rejected == 0:
        rejected_path.unlink(missing_ok=True)
    return ScoringSummary(progress.records_done, progress.scored, progress.rejected, resumed_at, output_path,
                          rejected_path)


@dataclass(frozen=True)
class _Sorted:
    """A chunk's rows split into those to score (`keep`, their texts) and those rejected, with why."""

    chunk: Chunk
    keep: list[int]
    texts: list[str]
    rejected: list[tuple[int, Any, str]]


def _sort_rows(chunk: Chunk) -> _Sorted:
    reasons = [problem or rejection_reason(text) for problem, text in zip(chunk.problems, chunk.texts)]
    keep = [i for i, why in enumerate(reasons) if why is None]
    rejected = [(chunk.first_record + i, chunk.ids[i], why) for i, why in enumerate(reasons) if why is not None]
    return _Sorted(chunk, keep, [chunk.texts[i] for i in keep], rejected)


def _row_count(path: Path) -> int | None:
    """Rows of a Parquet file, from its footer; None for text formats (counting would read them twice)."""
    if path.suffix.lower() != ".parquet":
        return None
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
