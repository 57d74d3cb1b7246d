"""The service's sampled prediction log (JSON lines), and reading it back: monitoring compares live
traffic with the data the champion was trained on. Predicted labels stand in for the true ones, which
live traffic lacks.

serve.log_pii (LogScreen) decides what reaches the log of a text that holds personal data: its data replaced
by typed placeholders (redact), the request left out (drop), or the text as sent (keep). The labelling queue
and the shadow's disagreements read the log's text, so they get what the log got. The client's answer is never
affected: the screen sees the texts only after the model answered them.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from components.privacy.pii import PiiFinding, count_by_type, redact

if TYPE_CHECKING:
    from components.config import LogPiiPolicy, PrivacyParams
    from components.privacy.pii import PiiScanner

logger = logging.getLogger("tunegate.serve")

# `s3://bucket/prefix`, `file:///srv/log`, `gs://...`: any fsspec URL (s3fs etc. must be installed for its scheme).
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
# A log path with one of these suffixes is one JSON-lines file (the layout before partitions), kept as it was.
SINGLE_FILE_SUFFIXES = (".jsonl", ".ndjson", ".json")
# The frame monitoring gets, whichever the layout: the columns it always had (entities for NER only).
FRAME_COLUMNS = ["time", "version", "text", "label", "score"]


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


# ---- serve.log_pii: personal data in what the service writes down -----------------------------------

def _build_scanner(privacy: PrivacyParams | None, project_root: Path) -> PiiScanner:
    from components.config import PrivacyParams
    from components.privacy.configured import build_scanner_for

    return build_scanner_for(privacy or PrivacyParams(), project_root)


def scanner_factory(privacy: PrivacyParams | None = None,
                    project_root: Path | None = None) -> Callable[[], PiiScanner]:
    """What builds the scanner privacy: describes (None: its defaults, the pattern recognizers and no NER model);
    `project_root` resolves a relative privacy.ner_model. A partial of a module function: it travels to Ray
    replicas with the rest of the app's recipe."""
    return partial(_build_scanner, privacy, Path(project_root or "."))


@dataclass(frozen=True)
class ScreenedText:
    """A text as it may be written down, and the findings taken out of it (offsets into the text as sent)."""

    text: str
    findings: tuple[PiiFinding, ...] = ()

    def pii(self) -> dict[str, int]:
        """What the log line may say of what was taken out: counts by type, never the data."""
        return count_by_type([self.findings])


class LogScreen:
    """serve.log_pii for the texts one service process writes down (the prediction log, the shadow's
    disagreements), with one scanner built once per process.

    The scanner costs Presidio's import (~4 s, spaCy and torch with it), so it is built by `prepare`, which the
    app runs on the prediction-log writer thread during startup; a screen used without that (an app served
    without lifespan events) builds it at its first use, on whichever writer thread that is. A scanner that
    cannot be built (a privacy.ner_model that does not load) is not retried at every write: each write then
    fails, and nothing is written that should have been screened."""

    def __init__(self, policy: LogPiiPolicy = "redact", make_scanner: Callable[[], PiiScanner] | None = None) -> None:
        self.policy = policy
        self._make_scanner = make_scanner or scanner_factory()
        self._scanner: PiiScanner | None = None
        self._failure: str | None = None
        self._lock = threading.Lock()  # one build, whichever writer asks first

    @property
    def scans(self) -> bool:
        return self.policy != "keep"

    def prepare(self) -> None:
        """Build the scanner now if the policy needs one; a failure is logged here and told at each write."""
        if not self.scans:
            return
        try:
            self._scanner_now()
        except RuntimeError as error:
            logger.error("%s", error)

    def _scanner_now(self) -> PiiScanner:
        with self._lock:
            if self._scanner is None and self._failure is None:
                try:
                    self._scanner = self._make_scanner()
                except Exception as error:  # noqa: BLE001 - told at every write rather than rebuilt each time
                    self._failure = f"{type(error).__name__}: {error}"
            if self._failure is not None:
                raise RuntimeError(f"serve.log_pii: {self.policy}: the PII scanner could not be built "
                                   f"({self._failure}); texts are not written down unscreened")
            return self._scanner

    def screen(self, texts: list[str]) -> list[ScreenedText | None]:
        """Each text as it may be written down: as sent (keep, or nothing found), redacted, or None where drop
        leaves it out (what else goes with it is the caller's choice)."""
        if not self.scans:
            return [ScreenedText(text) for text in texts]
        findings = self._scanner_now().scan_many(texts)
        return [None if found and self.policy == "drop" else
                ScreenedText(redact(text, found) if found else text, tuple(found))
                for text, found in zip(texts, findings)]


def redacted_position(position: int, findings: tuple[PiiFinding, ...], *, is_end: bool) -> int:
    """Where a character offset into the text as sent lands in its redacted text (findings: scan's, in text
    order and non-overlapping). An offset inside a finding moves to its placeholder's edge, so that a span
    that touched personal data covers the whole placeholder rather than part of one."""
    shift = 0
    for finding in findings:
        placeholder = len(finding.type) + 2  # redact's "<TYPE>"
        if position >= finding.end:
            shift += placeholder - (finding.end - finding.start)
        elif position > finding.start:
            return finding.start + shift + (placeholder if is_end else 0)
        else:
            break
    return position + shift


def redacted_prediction(prediction: dict[str, Any], screened: ScreenedText) -> dict[str, Any]:
    """An NER prediction with its entities' offsets (and `text`, where the answer has it) moved into the
    redacted text: the log's tags and the labelling queue's suggestions must line up with the text logged, and
    an entity's own text may be the very name or number taken out. A classifier's prediction holds no text."""
    if not screened.findings or "entities" not in prediction:
        return prediction
    entities = []
    for entity in prediction["entities"]:
        start, end = entity.get("start"), entity.get("end")
        if not isinstance(start, int) or not isinstance(end, int):
            entities.append({key: value for key, value in entity.items() if key != "text"})
            continue
        start = redacted_position(start, screened.findings, is_end=False)
        end = redacted_position(end, screened.findings, is_end=True)
        moved = {**entity, "start": start, "end": end}
        if "text" in entity:
            moved["text"] = screened.text[start:end]
        entities.append(moved)
    return {**prediction, "entities": entities}


def _screened_row(screened: ScreenedText, prediction: dict[str, Any]) -> dict[str, Any]:
    if not screened.findings:
        return {"text": screened.text, **_log_fields(screened.text, prediction)}
    return {"text": screened.text, **_log_fields(screened.text, redacted_prediction(prediction, screened)),
            "pii": screened.pii()}


def is_url(location: str) -> bool:
    return bool(_URL.match(location))


def is_single_file(location: Path | str) -> bool:
    """Whether the log is one JSON-lines file (a .jsonl path, or an existing local file) rather than the root of
    a partitioned log (a folder or URL: date=YYYY-MM-DD/hour=HH/<replica>.jsonl under it)."""
    text = str(location)
    if text.rstrip("/").lower().endswith(SINGLE_FILE_SUFFIXES):
        return True
    return not is_url(text) and Path(text).is_file()


def log_location(project_root: Path, setting: Path | str) -> Path | str:
    """serve.prediction_log resolved: a URL as it is, a path relative to the project."""
    return str(setting) if is_url(str(setting)) else project_root / setting


def partition_dir(moment: datetime) -> str:
    """The hive partition of a UTC moment: date=YYYY-MM-DD/hour=HH (zero-padded: compares as text)."""
    moment = moment.astimezone(timezone.utc)
    return f"date={moment:%Y-%m-%d}/hour={moment:%H}"


def open_log_root(location: Path | str) -> tuple[Any, str]:
    """The fsspec filesystem and root path of a partitioned log (local folders too: one code path)."""
    from fsspec.core import url_to_fs

    filesystem, root = url_to_fs(str(location))
    return filesystem, root.rstrip("/")


def _safe_replica(name: str) -> str:
    """A replica id usable as a file name on every filesystem."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".")
    if not safe:
        raise ValueError(f"replica id {name!r} has no usable characters (letters, digits, _ . -)")
    return safe


class PredictionLog:
    """Appends JSON lines {time, version, replica, text, label, score} for a sample of requests (drift
    monitoring). NER lines have label = the predicted IOB2 tags of the text's words (space-joined, as in an
    NER split), score = the entities' mean score (null without entities) and entities (type, start, end, score).

    `path` ending in .jsonl (or an existing file) is one file, as it always was. Anything else (a folder, a
    `file://` or `s3://` URL) is the root of a partitioned log: <root>/date=YYYY-MM-DD/hour=HH/<replica>.jsonl,
    one file per replica per UTC hour, so that replicas never share a file and monitoring reads only the
    hours it judges. `replica` defaults to hostname-pid; `now` is the clock (tests cross an hour with it).

    `screen` applies serve.log_pii to each logged request (None: texts as sent, as before it existed; the
    service always gives one). A redacted line says what was taken out, counts by type: "pii": {"EMAIL": 1}.

    A log that cannot be written costs a warning and a counter, never a request.
    """

    def __init__(self, path: Path | str, sample_rate: float, *, seed: int | None = None,
                 replica: str | None = None, now: Callable[[], datetime] | None = None,
                 screen: LogScreen | None = None) -> None:
        self.path = path if is_url(str(path)) else Path(path)
        self.sample_rate = sample_rate
        self.replica = _safe_replica(replica or f"{socket.gethostname()}-{os.getpid()}")
        self.partitioned = not is_single_file(self.path)
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._filesystem: Any = None  # opened at the first write: a bad URL then costs a warning, not the service
        self.screen = screen
        self.requests_left_out = 0  # requests not logged under serve.log_pii: drop

    def wants_request(self) -> bool:
        with self._lock:
            return self.sample_rate > 0 and self._random.random() < self.sample_rate

    def write(self, version: str | None, texts: list[str], predictions: list[dict[str, Any]]) -> None:
        """Log one request's texts and predictions (screened first: run it on a writer thread, never the event
        loop's or the model's: a scan costs about a millisecond per text)."""
        rows = self._rows(texts, predictions)
        if not rows:
            return
        moment = self._now().astimezone(timezone.utc)
        stamp = moment.isoformat(timespec="milliseconds")
        replica = {"replica": self.replica} if self.partitioned else {}
        lines = [json.dumps({"time": stamp, "version": version, **replica, **row}, ensure_ascii=False)
                 for row in rows]
        payload = "\n".join(lines) + "\n"
        with self._lock:
            if self.partitioned:
                self._append_partition(moment, payload)
            elif isinstance(self.path, Path):
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a", encoding="utf-8") as handle:  # reopened per batch: survives log rotation
                    handle.write(payload)
            else:  # one file at a URL (s3://bucket/predictions.jsonl): fine for one replica only
                filesystem, target = open_log_root(self.path)
                with filesystem.open(target, "a", encoding="utf-8") as handle:
                    handle.write(payload)

    def _rows(self, texts: list[str], predictions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The lines' text and prediction fields, as serve.log_pii lets them be written."""
        if self.screen is None:
            return [{"text": text, **_log_fields(text, p)} for text, p in zip(texts, predictions)]
        screened = self.screen.screen(texts)
        # drop leaves out the whole request, not only its texts that hold personal data: the setting says so,
        # and a request is one client's submission (a review cut into sentences, a thread of messages), so its
        # other texts are the likeliest to hold what the scanner missed (a name without an NER model, a number
        # in an unusual format). Sampling is per request too: the log keeps whole requests or none.
        if any(text is None for text in screened):
            with self._lock:
                self.requests_left_out += 1
            return []
        return [_screened_row(text, p) for text, p in zip(screened, predictions)]

    def partition_file(self, moment: datetime) -> str:
        """Where rows logged at `moment` go (a path within the log's filesystem)."""
        if self._filesystem is None:
            self._filesystem, self._root = open_log_root(self.path)
        return f"{self._root}/{partition_dir(moment)}/{self.replica}.jsonl"

    def _append_partition(self, moment: datetime, payload: str) -> None:
        target = self.partition_file(moment)
        self._filesystem.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        # Appended per batch, reopened each time: a new hour simply names a new file. (On S3, s3fs appends
        # by copying the object server-side: fine for one file per replica-hour, not for one per row.)
        with self._filesystem.open(target, "a", encoding="utf-8") as handle:
            handle.write(payload)


def read_prediction_log(path: Path | str, last: int | None = None, *, window: timedelta | None = None,
                        since: datetime | None = None, now: Callable[[], datetime] | None = None) -> pd.DataFrame:
    """The logged predictions as a frame with `time`, `version`, `text` and `label` (the predicted label),
    `score`, and for NER `entities` (type, start, end, score), oldest first.

    `since` (or `window`: the span before `now`) keeps the rows logged from then on; a partitioned log then
    opens only the hours of the window. `last` keeps the newest N of those (0/None: all). The frame's
    attrs["files_read"] says how many files were opened."""
    if since is None and window is not None:
        since = (now or (lambda: datetime.now(timezone.utc)))() - window
    if is_single_file(path):
        frame = _read_single_file(path, since)
        frame.attrs["files_read"] = 1
    else:
        frame = _read_partitioned(path, since, last)
    return frame.tail(last).reset_index(drop=True) if last else frame


def _read_single_file(path: Path | str, since: datetime | None) -> pd.DataFrame:
    """The one-file log, read as it always was (a line cut by a crash is skipped)."""
    filesystem, target = open_log_root(path)
    if not filesystem.isfile(target):
        raise FileNotFoundError(f"{path}: no prediction log; set serve.prediction_log and serve some traffic first")
    records = []
    with filesystem.open(target, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a crash mid-write; the rest are still good
    columns = list(FRAME_COLUMNS)
    if any("entities" in record for record in records):  # NER: offsets and scores for the labelling queue
        columns.append("entities")
    frame = pd.DataFrame(records, columns=columns)
    if since is None:
        return frame
    logged = pd.to_datetime(frame["time"], utc=True, errors="coerce", format="ISO8601")
    return frame[logged >= pd.Timestamp(since).tz_convert("UTC")].reset_index(drop=True)


# ---- the partitioned log: pyarrow datasets, hive partitions date=/hour=, pruned to the window ----

def _row_schema():
    import pyarrow as pa

    entity = pa.struct([("type", pa.string()), ("start", pa.int64()), ("end", pa.int64()), ("score", pa.float64())])
    return pa.schema([("time", pa.string()), ("version", pa.string()), ("replica", pa.string()),
                      ("text", pa.string()), ("label", pa.string()), ("score", pa.float64()),
                      ("entities", pa.list_(entity))])


def _log_dataset(location: Path | str):
    """The partitioned log as a pyarrow dataset: listing only, no file is opened here."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.json as pj
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    filesystem, root = open_log_root(location)
    if not filesystem.isdir(root):
        raise FileNotFoundError(f"{location}: no prediction log; set serve.prediction_log and serve some traffic first")
    # Explicit types: a file whose scores are all null must not be read as a column of nulls.
    parse = pj.ParseOptions(explicit_schema=_row_schema(), unexpected_field_behavior="ignore")
    keys = pa.schema([("date", pa.string()), ("hour", pa.string())])
    # The schema given, not inspected: pyarrow would otherwise open the first file, in the window or not.
    return ds.dataset(root, schema=pa.unify_schemas([_row_schema(), keys]),
                      format=ds.JsonFileFormat(parse_options=parse), partitioning=ds.partitioning(keys, flavor="hive"),
                      filesystem=PyFileSystem(FSSpecHandler(filesystem)))


def _window_filter(since: datetime | None):
    """Partitions at or after since's hour (None: all); compared as text, which zero-padding makes safe.
    Files outside date=/hour= folders (a stray note at the root) are never log files."""
    import pyarrow.dataset as ds

    partitioned = ds.field("date").is_valid() & ds.field("hour").is_valid()
    if since is None:
        return partitioned
    since = since.astimezone(timezone.utc)
    day, hour = f"{since:%Y-%m-%d}", f"{since:%H}"
    return partitioned & ((ds.field("date") > day) | ((ds.field("date") == day) & (ds.field("hour") >= hour)))


def prediction_log_files(location: Path | str, since: datetime | None = None) -> list[str]:
    """The files a read from `since` opens: the partitions of the window (pruned from the listing), oldest first."""
    fragments = _log_dataset(location).get_fragments(filter=_window_filter(since))
    return sorted(fragment.path for fragment in fragments)


def _read_file(dataset, path: str):
    """One replica-hour file as a table. pyarrow's JSON reader refuses a whole file for one bad line (a crash
    mid-write, a label logged as a number): such a file is read line by line instead, skipping what is cut."""
    import pyarrow as pa

    try:
        return dataset.format.make_fragment(path, dataset.filesystem).to_table(schema=_row_schema())
    except pa.ArrowInvalid:
        with dataset.filesystem.open_input_stream(path) as stream:
            text = stream.read().decode("utf-8")
        records = []
        for line in text.splitlines():
            try:
                records.append(_typed_record(json.loads(line)))
            except (json.JSONDecodeError, TypeError, ValueError):
                continue
        return pa.Table.from_pylist(records, schema=_row_schema())


def _typed_record(record: dict[str, Any]) -> dict[str, Any]:
    """A logged row with the schema's types (a label may have been logged as a number)."""
    if not isinstance(record, dict):
        raise TypeError("not a JSON object")
    text_or_none = {key: None if record.get(key) is None else str(record[key])
                    for key in ("time", "version", "replica", "text", "label")}
    score = record.get("score")
    return {**text_or_none, "score": None if score is None else float(score), "entities": record.get("entities")}


def _read_partitioned(location: Path | str, since: datetime | None, last: int | None) -> pd.DataFrame:
    """The window's rows from every replica, oldest first. With `last`, hours are read newest first and the
    reading stops once enough rows are in (every replica of an hour is read: their rows interleave)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    dataset = _log_dataset(location)
    files = sorted(fragment.path for fragment in dataset.get_fragments(filter=_window_filter(since)))
    tables, rows, opened = [], 0, 0
    for hour_files in reversed(_by_partition(files)):
        hour_tables = [_read_file(dataset, path) for path in hour_files]
        opened += len(hour_files)
        if since is not None:  # the window's first hour is only partly inside it
            cutoff = since.astimezone(timezone.utc).isoformat(timespec="milliseconds")
            hour_tables = [table.filter(pc.field("time") >= cutoff) for table in hour_tables]
        tables[:0] = hour_tables
        rows += sum(table.num_rows for table in hour_tables)
        if last and rows >= last:
            break
    table = pa.concat_tables(tables) if tables else _row_schema().empty_table()
    table = table.take(pc.sort_indices(table, [("time", "ascending"), ("replica", "ascending")]))
    frame = _frame_of(table)
    frame.attrs["files_read"] = opened
    return frame


def _by_partition(files: list[str]) -> list[list[str]]:
    """Sorted file paths grouped by their date=/hour= folder, oldest first."""
    groups: dict[str, list[str]] = {}
    for path in files:
        groups.setdefault(path.rsplit("/", 1)[0], []).append(path)
    return [groups[folder] for folder in sorted(groups)]


def _frame_of(table) -> pd.DataFrame:
    """The single-file reader's frame plus the replica that answered each row; entities (NER) as lists of
    dicts, as json.loads gives."""
    frame = table.select([*FRAME_COLUMNS, "replica"]).to_pandas()
    if table.column("entities").null_count < table.num_rows:  # NER rows carry entities (maybe []); others none
        frame["entities"] = table.column("entities").to_pylist()
    return frame
