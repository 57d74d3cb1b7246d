"""data.pii: what ingest does with the rows of a batch that hold personal data, and the record of it.

Pure apart from the scanner it is given: rows in, (rows kept, rows set aside, what was found) out. The record
goes with the batch into data/manifest.json (so with the data version), into the batch's validation report and
into the training run in MLflow. It holds counts by type, never the personal data itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from components.data.readers.common import IngestError
from components.privacy.pii import count_by_type, redact

if TYPE_CHECKING:
    from components.config import PiiPolicy
    from components.privacy.pii import PiiScanner

PII_CHECK = "pii"  # the quarantine file's `check` for a row set aside by data.pii: quarantine
MAX_ROWS_NAMED = 10  # a refusal names this many source rows, then says how many more


@dataclass(frozen=True)
class PiiScreening:
    """What data.pii found in one batch: counted by type, never quoted."""

    policy: str
    rows_scanned: int
    rows_with_pii: int
    found: dict[str, int] = field(default_factory=dict)  # findings by type
    not_detected: str | None = None  # what the scanner could not look for (names without an NER model)

    def record(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        if self.policy == "off":
            return "personal data: not looked for (data.pii: off)"
        found = ", ".join(f"{kind} {count}" for kind, count in self.found.items()) or "none"
        line = (f"personal data (data.pii: {self.policy}): {self.rows_with_pii:,} of {self.rows_scanned:,} rows "
                f"hold some; found {found}")
        return line + (f"; {self.not_detected}" if self.not_detected else "")


@dataclass(frozen=True)
class ScreenedRows:
    kept: pd.DataFrame  # the rows that go on (their text redacted under data.pii: redact)
    set_aside: pd.DataFrame  # rows quarantined for personal data, text redacted, with check and reason
    screening: PiiScreening


def pii_totals(batches: Iterable[Any], policy: str) -> dict:
    """What data.pii found across the dataset's batches (their BatchRecord.pii), for the training run: rows
    holding some and findings by type. Batches ingested before the scan have no record and add nothing."""
    found: Counter[str] = Counter()
    rows = scanned = 0
    not_detected = None
    for batch in batches:
        record = getattr(batch, "pii", None)
        if not record or record.get("policy") == "off":
            continue
        rows += record["rows_with_pii"]
        scanned += record["rows_scanned"]
        found.update(record["found"])
        not_detected = record.get("not_detected") or not_detected
    return PiiScreening(policy, scanned, rows, dict(found), not_detected).record()


class PiiRefusal(IngestError):
    """data.pii: refuse found personal data: the batch is not added (a user error, never retried)."""


def screen_rows(rows: pd.DataFrame, policy: PiiPolicy, scanner: PiiScanner | None, *, source: str,
                text_field: str = "text") -> ScreenedRows:
    """Apply `policy` to `rows` (columns text and source_row at least). `source` and `text_field` name the file
    and field in a refusal. Rows keep their id and label whatever is redacted."""
    if policy == "off" or scanner is None:
        return ScreenedRows(rows, rows.iloc[:0], PiiScreening("off", 0, 0))
    texts = rows["text"].fillna("").astype(str).tolist()
    findings = scanner.scan_many(texts)
    holds = pd.Series([bool(found) for found in findings], index=rows.index)
    screening = PiiScreening(policy, len(rows), int(holds.sum()), count_by_type(findings), scanner.not_detected)
    if not holds.any() or policy == "report":
        return ScreenedRows(rows, rows.iloc[:0], screening)
    if policy == "refuse":
        raise _refusal(rows[holds], [found for found in findings if found], source, text_field)
    redacted = rows.assign(text=[redact(text, found) if found else text for text, found in zip(texts, findings)])
    if policy == "redact":
        return ScreenedRows(redacted, rows.iloc[:0], screening)
    types = [", ".join(sorted({finding.type for finding in found})) for found in findings]
    set_aside = redacted[holds].assign(check=PII_CHECK, expectation="data.pii",
                                       reason=[f"personal data: {kind}" for kind, hit in zip(types, holds) if hit])
    return ScreenedRows(rows[~holds], set_aside, screening)


def _refusal(rows: pd.DataFrame, findings: list, source: str, text_field: str) -> PiiRefusal:
    counts = ", ".join(f"{kind} {count}" for kind, count in count_by_type(findings).items())
    source_rows = [int(row) for row in rows["source_row"]]
    named = ", ".join(map(str, source_rows[:MAX_ROWS_NAMED]))
    more = f" and {len(source_rows) - MAX_ROWS_NAMED} more" if len(source_rows) > MAX_ROWS_NAMED else ""
    return PiiRefusal(Path(source), f"personal data found ({counts}) in {len(source_rows)} row(s): {named}{more}. "
                                    "data.pii: refuse stops the batch; remove it at the source, or choose redact "
                                    "or quarantine", row=source_rows[0], field=text_field)
