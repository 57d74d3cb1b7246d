"""The `data:` and `split:` sections: where the labelled rows come from, the checks they must pass, and how
they are split."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from components.config.base import Section
from components.config.privacy import PiiPolicy

# Columns of the dataset and split files that ingest fills itself; a kept source column may not take their names.
RESERVED_COLUMNS = ("id", "text", "label", "batch_id", "source_row", "split", "tokens", "tags", "rejected",
                    "check", "expectation", "reason")


class DataParams(Section):
    source: str = Field(description="Where the labelled rows come from: 'builtin:<name>' for a built-in dataset, "
                                    "or the path of a CSV, TSV, JSONL, Parquet or CoNLL file. Required.")
    text_column: str = Field(default="text", description="Sequence classification: the source column that holds "
                                                         "each text.")
    label_column: str = Field(default="label", description="Sequence classification: the source column that "
                                                           "holds each raw label.")
    tokens_column: str = Field(default="tokens", description="Token classification: the JSONL field that holds "
                                                             "each sentence's list of tokens.")
    tags_column: str = Field(default="tags", description="Token classification: the JSONL field that holds each "
                                                         "sentence's list of IOB2 tags.")
    label_map: dict[str, str] = Field(default_factory=dict,
                                      description="Renames raw labels (raw label -> label in data.labels); left "
                                                  "out, raw labels are used as they are.")
    exclude_labels: list[str] = Field(default_factory=list,
                                      description="Raw labels whose rows are examples of no class (e.g. plot "
                                                  "synopses): set aside and counted, never trained on.")
    labels: list[str] = Field(min_length=1,
                              description="Sequence classification: the classes. Token classification: the entity "
                                          "types (PER, LOC, ...), whose tags are O plus B-/I- of each. Required.")
    min_rows: int = Field(default=1000, ge=1, description="Fewest clean rows the whole dataset must hold; fewer "
                                                          "stops validation.")
    min_chars: int = Field(default=3, ge=1, description="Shortest text accepted, in characters; shorter rows are "
                                                        "quarantined.")
    max_chars: int = Field(default=2000, ge=1, description="Longest text accepted, in characters; longer rows are "
                                                           "quarantined.")
    max_duplicate_fraction: float = Field(default=0.01, ge=0, le=1,
                                          description="Largest share of the dataset's rows that may repeat an "
                                                      "earlier text before validation fails.")
    min_batch_rows: int = Field(default=1, ge=1, description="Fewest clean rows a new batch must bring "
                                                             "(data.min_rows applies to the whole dataset).")
    min_examples_per_label: int = Field(default=1, ge=0,
                                        description="Fewest examples of each label in data.labels across the "
                                                    "existing data and a new batch; 0 turns the check off.")
    max_quarantine_fraction: float = Field(default=0.1, ge=0, le=1,
                                           description="Largest share of a batch's input rows that may be "
                                                       "quarantined before the whole batch is refused.")
    keep_columns: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]] = Field(
        default_factory=list,
        description="Further source columns kept with each row as text (missing values become empty), e.g. "
                    "[source, language], so that evaluate.slices can select on them; left out, none are kept.")
    pii: PiiPolicy = Field(
        default="report",
        description="Personal data in a batch's texts (found as privacy: says): 'report' counts it by type in the "
                    "batch's record, validation report and MLflow run; 'redact' puts a typed placeholder (<EMAIL>) "
                    "in its place, the row keeping its id and label; 'quarantine' sets the row aside with the "
                    "reason (its text redacted); 'refuse' stops the batch, naming rows and types; 'off' does not "
                    "look. Token-classification data takes off, report or refuse: its names are its labels.")
    template: str | None = Field(default=None,
                                 description="Sequence classification: the template every text is read through, "
                                             "e.g. 'Review: {text}', in training, evaluation and serving alike "
                                             "(clients send the raw text); left out, texts are read as they are.")

    @model_validator(mode="after")
    def _labels_are_distinct(self) -> "DataParams":
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"data.labels has duplicates: {self.labels}")
        if refusal := keep_columns_refusal(self.keep_columns, self.text_column, self.label_column):
            raise ValueError(refusal)
        unknown = sorted(set(self.label_map.values()) - set(self.labels))
        if unknown:
            raise ValueError(f"data.label_map maps to {unknown}, which are not in data.labels {self.labels}")
        from components.data.template import template_refusal

        if refusal := template_refusal(self.template):
            raise ValueError(refusal)
        return self


def keep_columns_refusal(keep_columns: list[str], text_column: str, label_column: str) -> str | None:
    """Why data.keep_columns cannot be kept as given, or None."""
    twice = sorted({name for name in keep_columns if keep_columns.count(name) > 1})
    if twice:
        return f"data.keep_columns: {', '.join(twice)} appear(s) more than once"
    taken = [name for name in keep_columns if name in (text_column, label_column)]
    if taken:
        return (f"data.keep_columns: {', '.join(taken)} is the text or label column (data.text_column, "
                "data.label_column), which every row keeps already")
    # The dataset's own columns: a kept column of that name would overwrite them.
    reserved = [name for name in keep_columns if name in RESERVED_COLUMNS]
    if reserved:
        return (f"data.keep_columns: {', '.join(reserved)} is a column tunegate writes itself "
                f"({', '.join(RESERVED_COLUMNS)}); rename it in the source")
    return None


class SplitParams(Section):
    validation_fraction: float = Field(default=0.1, gt=0, lt=0.5,
                                       description="Share of the examples in the validation split (picks the best "
                                                   "weights and the sweep's best trial).")
    test_fraction: float = Field(default=0.1, gt=0, lt=0.5,
                                 description="Share of the examples in the test split, never trained on (the gate "
                                             "judges on it).")
    salt: str = Field(default="tunegate-v1",
                      description="Salt of the hash that assigns each example its split; changing it reshuffles "
                                  "every example, and champion and challenger stop being comparable.")
