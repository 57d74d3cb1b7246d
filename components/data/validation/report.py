"""The validation report: what failed, in plain words, with example rows; the error that carries it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from components.reports import JsonReport

SUMMARY_EXAMPLES = 3
SUMMARY_VALUE_CHARS = 60
# Helper columns of the token checks: the check's reason for the sentence, null when it passes.
ISSUE_PREFIX = "issue_"


class FailedExpectation(BaseModel):
    check: str = Field(description="tunegate's name for the check, e.g. 'label_in_labels'")
    expectation: str = Field(description="GX expectation type, e.g. 'expect_column_values_to_be_in_set'")
    column: str | None = None
    description: str = Field(description="what was expected, in plain words")
    observed: str = Field(description="what was found, in plain words")
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[dict[str, Any]] = Field(default_factory=list, description="up to 5 offending rows")


class ValidationReport(JsonReport):
    success: bool
    source: str
    rows: int
    checked: int = Field(description="number of expectations run")
    failures: list[FailedExpectation] = Field(default_factory=list)
    pii: dict[str, Any] | None = Field(default=None, description="what data.pii found in the batch, by type "
                                                                 "(components.data.pii_screening.PiiScreening)")

    def summary(self) -> str:
        if self.success:
            return f"Data validation of {self.source} passed: {self.checked} expectations on {self.rows} rows."
        lines = [
            f"Data validation of {self.source} failed: {len(self.failures)} of {self.checked} expectations "
            f"failed on {self.rows} rows."
        ]
        lines.extend(summary_line(failure) for failure in self.failures)
        return "\n".join(lines)


class DataValidationError(RuntimeError):
    """The dataset failed validation; `.report` holds the details, the message is its summary and,
    when the report was written, where to read all of it."""

    def __init__(self, report: ValidationReport, report_path: Path | None = None) -> None:
        where = f"\nFull report: {report_path}" if report_path is not None else ""
        super().__init__(report.summary() + where)
        self.report = report
        self.report_path = report_path


def assert_valid(report: ValidationReport, report_path: Path | None = None) -> ValidationReport:
    if not report.success:
        raise DataValidationError(report, report_path)
    return report


def summary_line(failure: FailedExpectation) -> str:
    on = f" on {failure.column!r}" if failure.column else ""
    line = (f"- {failure.check} ({failure.expectation}{on}): expected {failure.description}; "
            f"found {failure.observed}")
    quoted = [_quote_example(failure, example) for example in failure.examples[:SUMMARY_EXAMPLES]]
    if quoted:
        line += "; e.g. " + ", ".join(quoted)
    return line


def _quote_example(failure: FailedExpectation, example: dict[str, Any]) -> str:
    if "source_row" in example:
        where = f"row {example['source_row']}"
    elif "label" in example:  # a row of the per-label table of validate_batch
        where = f"label {example['label']!r}"
    else:
        where = "a row"
    field = {"duplicate_texts": "text", "conflicting_labels": "label"}.get(failure.check, failure.column or "text")
    if (failure.column or "").startswith(ISSUE_PREFIX):  # a token check: quote its reason
        field = "reason"
    value = example.get(field)
    if isinstance(value, str) and len(value) > SUMMARY_VALUE_CHARS:
        value = value[:SUMMARY_VALUE_CHARS] + "..."
    quoted = f"{where} {field}={value!r}"
    if "first_source_row" in example:
        quoted += f" (first seen in row {example['first_source_row']})"
    if "labels_for_this_text" in example:
        quoted += f" (this text has labels {example['labels_for_this_text']})"
    return quoted
