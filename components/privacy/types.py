"""The names of the personal-data types tunegate looks for: a leaf module, so that the configuration can check
privacy.types without importing the scanner; and what the scanner needs of a model."""

from __future__ import annotations

from typing import Any, Protocol

# Our names for the types: short and stable, whatever Presidio calls them (EMAIL_ADDRESS, PHONE_NUMBER, ...).
CONTACT_AND_PAYMENT_TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "URL")
# The national ids whose Presidio recognizer reaches the default min_score with no context words (context needs
# an NLP engine): those with a check digit (validated matches score 1.0: UK_NHS, ES_NIF, ES_NIE, IT_FISCAL_CODE,
# PL_PESEL, FI_PERSONAL_IDENTITY_CODE, IN_AADHAAR, AU_TFN) and those with a distinctive format scored 0.5
# (US_SSN with separators, UK_NINO, IN_PAN, SG_NRIC_FIN). Left out: the ones that are bare digit runs without a
# check (passports, driving licences, bank accounts: 0.01-0.1 without context) and other 11-digit ids, which
# would fight PL_PESEL over the same digits.
NATIONAL_ID_TYPES = ("US_SSN", "UK_NHS", "UK_NINO", "ES_NIF", "ES_NIE", "IT_FISCAL_CODE", "PL_PESEL",
                     "FI_PERSONAL_IDENTITY_CODE", "IN_AADHAAR", "IN_PAN", "SG_NRIC_FIN", "AU_TFN")
PATTERN_TYPES = CONTACT_AND_PAYMENT_TYPES + NATIONAL_ID_TYPES
NER_TYPES = ("PERSON", "LOCATION")
ALL_TYPES = PATTERN_TYPES + NER_TYPES


class TokenPredictor(Protocol):
    """What the NER recognizer needs of a model: components.export.predictor.OnnxTokenTagger.predict."""

    def predict(self, texts: list[str]) -> list[dict[str, Any]]: ...
