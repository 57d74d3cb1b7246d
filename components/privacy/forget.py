"""Forget a person's data: remove their rows from every batch of the dataset, make a new DVC data version,
mark the model versions trained on them, and scrub the logs that hold their texts (`tunegate forget`).

What is removed: the rows whose text equals a given text after ingest's normalization (`normalize_text`), whose
id is a given id, or whose text a regular expression finds, from every batch file and quarantine file under
data/; the same texts' lines in the prediction log (one file or a partitioned folder), the shadow's
disagreements file and the labelling queue's files, and the example rows of the batches' validation reports.

What is recorded (data/removals.jsonl, versioned with the data): an id for the removal, when, why, who, the
kind of matcher, the rows removed per batch and their ids (a hash of the text). Never a text, and never a
regular expression itself: a pattern may spell a person's name, so only its sha256 is kept.

What is not changed: older DVC versions of data/ (in .dvc/cache and the remote: remove them with `dvc gc` once
no commit you keep needs them), git history, the source files batches were read from, remote logs (s3://...).
The summary says so, so that a person can finish the job where tunegate cannot.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal

import pandas as pd

if TYPE_CHECKING:
    from components.data.dataset import BatchRecord
    from components.lifecycle.registry import ModelRegistry, VersionInfo

MatcherKind = Literal["text", "id", "regex"]
REMOVALS_FILE = "removals.jsonl"  # under data/: versioned with the rows it speaks of
# Version tags of a model trained on forgotten rows.
FORGOTTEN_TAG = "data_forgotten"  # the removal ids, comma-separated, oldest first
RETRAIN_TAG = "retrain_needed"
# The labelling queue's files under each .tunegate/labelling/<stamp>/ (components/monitoring/labelling.py).
QUEUE_CSV = "labelling-queue.csv"
QUEUE_LABEL_STUDIO = "labelling-queue.label-studio.json"


class NothingToForget(LookupError):
    """No row of the dataset and no logged line matched: nothing was changed."""


# --- matching ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Matcher:
    """What to forget: texts (normalized as ingest does), row ids, or one regular expression."""

    kind: MatcherKind
    texts: frozenset[str] = frozenset()
    ids: frozenset[str] = frozenset()
    pattern: re.Pattern[str] | None = None

    @classmethod
    def for_texts(cls, texts: list[str]) -> Matcher:
        from components.data.dataset import normalize_text

        normalized = frozenset(normalize_text(t) for t in texts) - {""}
        if not normalized:
            raise ValueError("no text to forget: every --text given is empty")
        return cls("text", texts=normalized)

    @classmethod
    def for_ids(cls, ids: list[str]) -> Matcher:
        cleaned = frozenset(i.strip() for i in ids) - {""}
        if not cleaned:
            raise ValueError("no id to forget: every --id given is empty")
        return cls("id", ids=cleaned)

    @classmethod
    def for_regex(cls, pattern: str) -> Matcher:
        if not pattern:
            raise ValueError("an empty --regex would match every row")
        try:
            return cls("regex", pattern=re.compile(pattern))
        except re.error as error:
            # The message names the position, not the pattern: the pattern may be personal data.
            raise ValueError(f"--regex is not a valid regular expression: {error.msg} at position {error.pos}") from None

    def matches(self, text: object, row_id: object = None) -> bool:
        """Whether a row (text and, in the dataset, its id) is to be forgotten. A log line has no id: its id is
        the one ingest would give its text (hash of the normalized text), so --id reaches the logs too."""
        from components.data.dataset import normalize_text, text_ids

        if not isinstance(text, str):
            text = "" if text is None or (isinstance(text, float) and pd.isna(text)) else str(text)
        if self.kind == "regex":
            # The stored form and the normalized one: a log keeps the text as typed, the dataset normalized.
            return bool(self.pattern.search(text) or self.pattern.search(normalize_text(text)))
        normalized = normalize_text(text)
        if self.kind == "text":
            return normalized in self.texts
        if isinstance(row_id, str) and row_id:
            return row_id in self.ids
        return bool(normalized) and text_ids(pd.Series([normalized])).iloc[0] in self.ids

    def occurs_in(self, raw: str) -> bool:
        """For a line that is not valid JSON (cut by a crash): whether a text to forget appears in it at all."""
        if self.kind == "regex":
            return bool(self.pattern.search(raw))
        if self.kind == "id":
            return any(i in raw for i in self.ids)
        return any(t in raw or json.dumps(t, ensure_ascii=False)[1:-1] in raw for t in self.texts)

    def record(self, asked: int) -> dict:
        """How the matcher is recorded: its kind and a count or a hash, never what it matches."""
        if self.kind == "regex":
            return {"kind": "regex", "sha256": hashlib.sha256(self.pattern.pattern.encode("utf-8")).hexdigest()}
        return {"kind": self.kind, "asked": asked}


def match_rows(frame: pd.DataFrame, matcher: Matcher, text_column: str = "text") -> pd.Series:
    """A boolean mask of the rows to forget (id column used when there is one)."""
    if frame.empty or text_column not in frame.columns:
        return pd.Series(False, index=frame.index, dtype=bool)
    ids = frame["id"] if "id" in frame.columns else pd.Series(None, index=frame.index, dtype=object)
    return pd.Series([matcher.matches(t, i) for t, i in zip(frame[text_column], ids)], index=frame.index, dtype=bool)


# --- rewriting files --------------------------------------------------------------------------
def _replace_text(path: Path, content: str) -> None:
    scratch = path.with_name(path.name + ".forget-tmp")
    scratch.write_text(content, encoding="utf-8")
    scratch.replace(path)  # a reader sees the old file or the new one, never half of one


def _read_table(path: Path) -> pd.DataFrame | None:
    """A batch or quarantine CSV with every cell as written (text, "" for empty); None when it has no rows."""
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        return None


@dataclass(frozen=True)
class RemovedRows:
    removed: int
    ids: list[str]


def rewrite_table(path: Path, matcher: Matcher, text_column: str = "text") -> RemovedRows:
    """Drop the matching rows of a CSV file in place; a file with none is left byte for byte as it was."""
    if not path.is_file():
        return RemovedRows(0, [])
    frame = _read_table(path)
    if frame is None:
        return RemovedRows(0, [])
    mask = match_rows(frame, matcher, text_column)
    if not mask.any():
        return RemovedRows(0, [])
    ids = frame.loc[mask, "id"].tolist() if "id" in frame.columns else []
    _replace_text(path, frame[~mask].to_csv(index=False, lineterminator="\n"))
    return RemovedRows(int(mask.sum()), ids)


def scrub_jsonl_text(content: str, matcher: Matcher, text_field: str = "text") -> tuple[str, int]:
    """JSON lines without those whose `text_field` matches; returns (content, lines dropped). A line that is not
    JSON is dropped when a text to forget occurs in it, else kept as it was."""
    kept, dropped = [], 0
    for line in content.splitlines(keepends=True):
        if not line.strip():
            kept.append(line)
            continue
        try:
            record = json.loads(line)
            hit = isinstance(record, dict) and matcher.matches(record.get(text_field))
        except json.JSONDecodeError:
            hit = matcher.occurs_in(line)
        if hit:
            dropped += 1
        else:
            kept.append(line)
    return "".join(kept), dropped


def scrub_jsonl(path: Path, matcher: Matcher, text_field: str = "text", attempts: int = 3) -> int:
    """Drop the matching lines of a JSON-lines file in place; returns how many. A service may append meanwhile:
    the file is read again when it grew while being rewritten, so that no line it wrote is lost."""
    if not path.is_file():
        return 0
    for _ in range(attempts):
        before = path.stat().st_size
        content, dropped = scrub_jsonl_text(path.read_text(encoding="utf-8"), matcher, text_field)
        if not dropped:
            return 0
        if path.stat().st_size == before:
            _replace_text(path, content)
            return dropped
    raise OSError(f"{path} kept growing while it was scrubbed; stop the service and run `tunegate forget` again")


def scrub_label_studio(path: Path, matcher: Matcher) -> int:
    """Drop the Label Studio tasks whose data.text matches; returns how many."""
    if not path.is_file():
        return 0
    tasks = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(tasks, list):
        return 0
    kept = [t for t in tasks if not (isinstance(t, dict) and matcher.matches((t.get("data") or {}).get("text")))]
    if len(kept) == len(tasks):
        return 0
    _replace_text(path, json.dumps(kept, ensure_ascii=False, indent=1) + "\n")
    return len(tasks) - len(kept)


def scrub_report_examples(path: Path, matcher: Matcher) -> int:
    """Drop the example rows (objects with a `text`) that match from a JSON report; returns how many."""
    if not path.is_file():
        return 0
    report = json.loads(path.read_text(encoding="utf-8"))
    dropped = 0

    def walk(node):
        nonlocal dropped
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            kept = [item for item in node if not (isinstance(item, dict) and "text" in item
                                                  and matcher.matches(item["text"], item.get("id")))]
            dropped += len(node) - len(kept)
            return [walk(item) for item in kept]
        return node

    cleaned = walk(report)
    if dropped:
        _replace_text(path, json.dumps(cleaned, indent=2) + "\n")
    return dropped


# --- the dataset ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchRemoval:
    batch_id: str
    accepted: int  # rows removed from the batch file
    quarantined: int  # rows removed from the quarantine file
    ids: list[str]

    @property
    def rows(self) -> int:
        return self.accepted + self.quarantined


def forget_in_batch(data_dir: Path, batch: BatchRecord, matcher: Matcher) -> tuple[BatchRecord, BatchRemoval]:
    """Remove the matching rows of one batch (its files rewritten) and its record with the counts moved to
    `forgotten`, so that rows_read = accepted + quarantined + duplicates + forgotten still holds."""
    accepted = rewrite_table(data_dir / batch.batch_file, matcher)
    quarantined = rewrite_table(data_dir / batch.quarantine_file, matcher)
    for report in sorted((data_dir / batch.report_dir).glob("*.json")) if batch.report_dir else []:
        scrub_report_examples(report, matcher)
    record = replace(batch, accepted=batch.accepted - accepted.removed,
                     quarantined=batch.quarantined - quarantined.removed,
                     forgotten=batch.forgotten + accepted.removed + quarantined.removed)
    return record, BatchRemoval(batch.batch_id, accepted.removed, quarantined.removed, accepted.ids + quarantined.ids)


def forget_in_dataset(data_dir: Path, matcher: Matcher) -> list[BatchRemoval]:
    """Every batch's matching rows removed and the manifest rewritten; the batches that held some."""
    from components.data.dataset import DataStore

    store = DataStore(data_dir)
    records, removals = [], []
    for batch in store.batches():
        record, removal = forget_in_batch(data_dir, batch, matcher)
        records.append(record)
        if removal.rows:
            removals.append(removal)
    if removals:
        store.write_manifest(records)
    return removals


def append_removal_record(data_dir: Path, record: dict) -> Path:
    path = data_dir / REMOVALS_FILE
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
    return path


def read_removals(data_dir: Path) -> list[dict]:
    path = data_dir / REMOVALS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- the registry -----------------------------------------------------------------------------
def trained_on(info: VersionInfo, batch_ids: set[str]) -> bool | None:
    """Whether a version's lineage names one of the batches; None when it records no lineage."""
    raw = info.tags.get("data_batches")
    if raw is None:
        return None
    try:
        batches = json.loads(raw)
    except json.JSONDecodeError:
        return None
    return bool(set(map(str, batches)) & batch_ids) if isinstance(batches, list) else None


@dataclass(frozen=True)
class TaggedVersions:
    tagged: list[str]
    unknown_lineage: list[str]  # versions without data_batches: whether they saw the rows cannot be told


def mark_versions(registry: ModelRegistry, removal_id: str, batch_ids: set[str]) -> TaggedVersions:
    """Tag every version trained on one of the batches: data_forgotten gets the removal id, retrain_needed true.
    Every version the batches were in is tagged, whether or not it is served: any of them may be promoted later."""
    tagged, unknown = [], []
    for info in sorted(registry.find_versions(), key=lambda v: int(v.version)):
        verdict = trained_on(info, batch_ids)
        if verdict is None:
            unknown.append(info.version)
            continue
        if not verdict:
            continue
        earlier = [r for r in info.tags.get(FORGOTTEN_TAG, "").split(",") if r]
        registry.tag_version(info.version, {FORGOTTEN_TAG: ",".join(earlier + [removal_id]), RETRAIN_TAG: "true"})
        tagged.append(info.version)
    return TaggedVersions(tagged, unknown)


# --- logs -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogScrub:
    location: str
    dropped: int
    skipped: str | None = None  # why it was not scrubbed


def scrub_prediction_log(location: Path | str, matcher: Matcher) -> LogScrub:
    """The prediction log, one file or a partitioned folder (every date=/hour=/<replica>.jsonl under it). A log at
    a URL (s3://...) is not rewritten here: replicas append to it while it would be, and tunegate has no lock
    there; the summary names it so that a person scrubs it (or lets its bucket's lifecycle rule expire it)."""
    from components.serving.prediction_log import is_url

    text = str(location)
    if is_url(text) and not text.startswith("file://"):
        return LogScrub(text, 0, skipped="a remote log: stop the service and rewrite its objects without those lines")
    path = Path(text.removeprefix("file://"))
    if path.is_dir():
        return LogScrub(text, sum(scrub_jsonl(file, matcher) for file in sorted(path.rglob("*.jsonl"))))
    return LogScrub(text, scrub_jsonl(path, matcher))


def scrub_labelling_queues(directory: Path, matcher: Matcher, text_column: str) -> LogScrub:
    """Every labelling queue under `directory` (one folder per monitoring run): the CSV and the Label Studio file."""
    dropped = 0
    if directory.is_dir():
        for sheet in sorted(directory.rglob(QUEUE_CSV)):
            dropped += rewrite_table(sheet, matcher, text_column).removed
        for tasks in sorted(directory.rglob(QUEUE_LABEL_STUDIO)):
            dropped += scrub_label_studio(tasks, matcher)
    return LogScrub(str(directory), dropped)


# --- all of it --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ForgetRequest:
    matcher: Matcher
    asked: int  # how many texts or ids were given (1 for a regex): recorded instead of them
    reason: str
    by: str
    project_root: Path
    data_dir: Path
    labelling_dir: Path
    labelling_text_column: str  # the queue's CSV names the text column as data.text_column
    shadow_log: Path
    prediction_log: Path | str | None = None
    registry: ModelRegistry | None = None
    # Makes the new DVC version and returns its hash (components.lifecycle.versioning.version_data).
    version_data: Callable[[Path, Path], str] | None = None


@dataclass(frozen=True)
class ForgetResult:
    removal_id: str
    batches: list[BatchRemoval]
    data_hash: str | None  # the new DVC version; None when no row of data/ matched
    versions: TaggedVersions
    logs: list[LogScrub] = field(default_factory=list)
    base_batch_touched: bool = False

    @property
    def rows_removed(self) -> int:
        return sum(b.rows for b in self.batches)

    @property
    def lines_scrubbed(self) -> int:
        return sum(log.dropped for log in self.logs)


def new_removal_id(at: float) -> str:
    return time.strftime("forget-%Y%m%dT%H%M%SZ-", time.gmtime(at)) + secrets.token_hex(3)


def forget(request: ForgetRequest) -> ForgetResult:
    """Everything `tunegate forget` does. Logs first (they hold no record to keep consistent, and a failure later
    must not leave them untouched), then data/ and its new version, then the registry: the versions' tags name
    the removal the new data version records. Raises NothingToForget, changing nothing, when nothing matched."""
    from components.lifecycle.versioning import data_hash

    at = time.time()
    removal_id = new_removal_id(at)
    matcher = request.matcher
    logs = [scrub_labelling_queues(request.labelling_dir, matcher, request.labelling_text_column),
            LogScrub(str(request.shadow_log), scrub_jsonl(request.shadow_log, matcher))]
    if request.prediction_log is not None:
        logs.insert(0, scrub_prediction_log(request.prediction_log, matcher))

    dvc_file = request.project_root / (str(request.data_dir.relative_to(request.project_root)) + ".dvc")
    previous_hash = data_hash(dvc_file) if dvc_file.is_file() else None
    base_ids = _base_batch_ids(request.data_dir)
    batches = forget_in_dataset(request.data_dir, matcher)
    if not batches:
        if not any(log.dropped for log in logs):
            raise NothingToForget("nothing matched: no row of data/ and no logged line holds those texts; nothing "
                                  "was changed (no new data version)")
        return ForgetResult(removal_id, [], None, TaggedVersions([], []), logs)

    append_removal_record(request.data_dir, {
        "removal_id": removal_id,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
        "reason": request.reason,
        "by": request.by,
        "matcher": matcher.record(request.asked),
        "rows_removed": {b.batch_id: {"accepted": b.accepted, "quarantined": b.quarantined} for b in batches},
        "removed_ids": sorted({i for b in batches for i in b.ids}),
        "previous_data_hash": previous_hash,
    })
    new_hash = request.version_data(request.project_root, request.data_dir) if request.version_data else None
    versions = TaggedVersions([], [])
    if request.registry is not None:
        versions = mark_versions(request.registry, removal_id, {b.batch_id for b in batches})
        request.registry.record_removal({
            "action": "forget", "version": None, "previous": None, "by": request.by, "reason": request.reason,
            "removal_id": removal_id, "rows": sum(b.rows for b in batches), "versions": versions.tagged,
            "data_hash": new_hash}, at)
    return ForgetResult(removal_id, batches, new_hash, versions, logs,
                        base_batch_touched=bool(base_ids & {b.batch_id for b in batches}))


def _base_batch_ids(data_dir: Path) -> set[str]:
    from components.data.dataset import DataStore

    return {b.batch_id for b in DataStore(data_dir).batches() if b.base}


def summary(result: ForgetResult) -> str:
    """What was done, for a person: rows per batch, the data version, the versions to retrain, the logs."""
    lines = []
    if result.batches:
        lines.append(f"{result.removal_id}: forgot {result.rows_removed} row(s) of data/:")
        lines += [f"  {b.batch_id}: {b.accepted} accepted + {b.quarantined} quarantined" for b in result.batches]
        lines.append(f"data.dvc: {result.data_hash} (commit data.dvc to record this version; data/{REMOVALS_FILE} "
                     "records the removal, without the texts)")
    else:
        lines.append("no row of data/ matched: the data is unchanged (no new data version)")
    if result.versions.tagged:
        lines.append(f"versions trained on them: {', '.join('v' + v for v in result.versions.tagged)} (tagged "
                     f"{FORGOTTEN_TAG}, {RETRAIN_TAG}=true); schedule a retraining (`tunegate run`)")
    elif result.batches:
        lines.append("no registered version was trained on them")
    if result.versions.unknown_lineage:
        lines.append(f"versions without lineage (no data_batches tag), not tagged: "
                     f"{', '.join('v' + v for v in result.versions.unknown_lineage)}; check them by hand")
    for log in result.logs:
        lines.append(f"{log.location}: not scrubbed, {log.skipped}" if log.skipped
                     else f"{log.location}: {log.dropped} line(s) scrubbed")
    if result.base_batch_touched:
        lines.append("the base batch held some: remove them from data.source too, or a rebuild of the base batch "
                     "(new data rules) brings them back")
    if result.batches:
        lines.append("older data versions still hold them in the DVC cache and remote: once no kept commit needs "
                     "them, `dvc gc` (and `dvc gc --cloud`) deletes them")
    return "\n".join(lines)
