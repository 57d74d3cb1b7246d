"""The `privacy:` section: how personal data is found (components/privacy). What is done with it is set where
the data is: `data.pii` for training batches, `serve.log_pii` for the prediction log."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from components.config.base import Section

# What ingest does with a row that holds personal data (data.pii).
PiiPolicy = Literal["off", "report", "redact", "quarantine", "refuse"]
# What the service's prediction log does with a logged text that holds personal data (serve.log_pii).
LogPiiPolicy = Literal["redact", "drop", "keep"]


class PrivacyParams(Section):
    ner_model: Path | None = Field(
        default=None,
        description="An exported token-classification model (its ONNX directory, e.g. the NER example's "
                    "artifacts/onnx) whose PER and LOC entities are reported as PERSON and LOCATION; left out, "
                    "names and places are not detected and the reports say so.")
    min_score: float = Field(default=0.4, ge=0, le=1,
                             description="Lowest recognizer score reported: 0.4 keeps phone numbers (Presidio "
                                         "scores a valid one 0.4 without context words) and drops digit runs "
                                         "that pass no check.")
    types: list[str] | None = Field(
        default=None,
        description="The types looked for (EMAIL, PHONE, CREDIT_CARD, IBAN, IP_ADDRESS, URL, national ids such as "
                    "US_SSN, PERSON, LOCATION); left out, all of them.")

    @field_validator("types")
    @classmethod
    def _known_types(cls, types: list[str] | None) -> list[str] | None:
        from components.privacy.types import ALL_TYPES

        unknown = sorted(set(types or ()) - set(ALL_TYPES))
        if unknown:
            raise ValueError(f"privacy.types: unknown types {unknown}; known: {list(ALL_TYPES)}")
        return types
