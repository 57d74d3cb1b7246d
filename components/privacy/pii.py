"""Find personal data (PII) in texts, and redact it: the library behind ingest's data.pii policies, the
service's prediction log (serve.log_pii) and `tunegate forget`.

Two kinds of recognizer, both Presidio's (components/privacy/recognizers.py):
- patterns: e-mails, phone numbers, card numbers, IBANs, IP addresses, URLs and national ids, found by
  Presidio's pattern recognizers with no NLP engine (nothing downloaded, no spaCy). Where a format has a
  checksum (Luhn for cards, mod 97 for IBANs, the ids' check digits) a match that fails it is dropped and one
  that passes it scores 1.0;
- names and places (PERSON, LOCATION): our own token-classification model behind a Presidio recognizer,
  when the caller gives one. Without it the scanner says so (`PiiScanner.describe`) rather than pretending.

This module imports nothing heavy: Presidio (seconds to import) is imported when a scanner is built.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from components.privacy.recognizers import BoundRecognizer, TokenTaggerRecognizer

from components.privacy.types import (  # noqa: F401 - re-exported: callers name the types from here
    ALL_TYPES,
    CONTACT_AND_PAYMENT_TYPES,
    NATIONAL_ID_TYPES,
    NER_TYPES,
    PATTERN_TYPES,
    TokenPredictor,
)

# The NER model's entity types (data.labels of a token-classification model) -> ours; ORG and MISC are not
# personal data by themselves and are left alone.
DEFAULT_NER_MAPPING: Mapping[str, str] = {"PER": "PERSON", "LOC": "LOCATION"}

# Presidio's phone recognizer scores every number python-phonenumbers accepts as valid 0.4, and only context
# words (which need an NLP engine) raise it. Everything below 0.4 is a format without a check: a bare 9-digit run
# as an SSN (0.05), 12 digits as an Aadhaar number before its checksum (0.01), a card-shaped number before Luhn
# (0.3; Luhn then makes it 1.0 or drops it). So 0.4 keeps phones and drops random digit runs.
DEFAULT_MIN_SCORE = 0.4

NO_NER_MODEL = ("names and places are not detected: no token-classification model is configured "
                "(privacy.ner_model)")


@dataclass(frozen=True)
class PiiFinding:
    """One piece of personal data: text[start:end] is of `type`, found by `recognizer` with `score`."""

    type: str
    start: int
    end: int
    score: float
    recognizer: str

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"a finding needs 0 <= start < end, got start={self.start} end={self.end}")

    def overlaps(self, other: PiiFinding) -> bool:
        return self.start < other.end and other.start < self.end


_DIGITS = re.compile(r"\d+")  # Unicode digits: a superset of the patterns' [0-9] and of what phonenumbers reads


def longest_digit_run(text: str) -> int:
    """The length of the longest run of digits in the text: what most recognizers' gates look at."""
    return max(map(len, _DIGITS.findall(text)), default=0)


def _precedence(finding: PiiFinding) -> tuple:
    """The order in which overlapping findings are preferred (see resolve_overlaps)."""
    return -(finding.end - finding.start), -finding.score, finding.start, finding.type, finding.recognizer


def resolve_overlaps(findings: Iterable[PiiFinding]) -> list[PiiFinding]:
    """Non-overlapping findings in text order. Where findings overlap, the longer span wins, then the higher score,
    then the earlier start, then the type name (so the same findings in any order give the same answer).

    Length before score: the scores of different recognizers do not compare (a valid phone number is 0.4 by
    Presidio's convention, an NER tag is a model's probability), and the longer reading is the more specific one
    (a phone number with its +1 before the ten digits that also pass the NHS check; a URL with a name in its
    path). Dropping the longer finding would also leave the rest of it visible in a redacted text."""
    kept: list[PiiFinding] = []
    for finding in sorted(findings, key=_precedence):
        if not any(finding.overlaps(other) for other in kept):
            kept.append(finding)
    return sorted(kept, key=lambda f: (f.start, f.end, f.type))


class PiiScanner:
    """Finds the configured types in texts. Build it with `build_scanner`, once: it holds the Presidio recognizers,
    their patterns compiled. A scan changes nothing in the scanner: the same text always gives the same findings."""

    def __init__(self, registry: Any, patterns: Sequence[BoundRecognizer], tagger: TokenTaggerRecognizer | None,
                 *, types: Sequence[str], min_score: float) -> None:
        self.registry = registry  # presidio_analyzer.RecognizerRegistry: every recognizer this scanner runs
        self._patterns = list(patterns)
        self._tagger = tagger
        self._ner_types = [kind for kind in NER_TYPES if kind in types and tagger is not None
                           and kind in tagger.supported_entities]
        self.types: tuple[str, ...] = tuple(kind for kind in ALL_TYPES
                                            if kind in types and (kind in PATTERN_TYPES or kind in self._ner_types))
        self.requested_types: tuple[str, ...] = tuple(kind for kind in ALL_TYPES if kind in types)
        self.min_score = min_score

    @property
    def not_detected(self) -> str | None:
        """Why asked-for types are not detected (no NER model for PERSON/LOCATION), or None."""
        missing = [kind for kind in self.requested_types if kind not in self.types]
        if not missing:
            return None
        if self._tagger is None:
            return NO_NER_MODEL
        return f"{', '.join(missing)} not detected: the NER mapping {self._tagger.mapping} gives no such type"

    def describe(self) -> str:
        lines = [f"PII scanner: {', '.join(self.types) or 'no types'} (min_score {self.min_score})"]
        if self._tagger is not None and self._ner_types:
            mapping = ", ".join(f"{source}->{target}" for source, target in sorted(self._tagger.mapping.items()))
            lines.append(f"names and places: token-classification model ({mapping})")
        if self.not_detected:
            lines.append(self.not_detected)
        return "\n".join(lines)

    def scan(self, text: str) -> list[PiiFinding]:
        """The findings in one text, non-overlapping, in text order."""
        return self.scan_many([text])[0]

    def scan_many(self, texts: Sequence[str]) -> list[list[PiiFinding]]:
        """The findings of each text; the NER model, if any, is called once for all of them."""
        if isinstance(texts, str):
            raise TypeError("scan_many takes a list of texts, got a single string; use scan(text)")
        texts = list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {index} is {type(text).__name__}, not a string")
        names: list[list[PiiFinding]] = [[] for _ in texts]
        if self._ner_types:
            for index, results in enumerate(self._tagger.analyze_many(texts, self._ner_types)):
                names[index] = self._kept(results, self._tagger.name)
        return [resolve_overlaps(self._pattern_findings(text) + found) for text, found in zip(texts, names)]

    def _pattern_findings(self, text: str) -> list[PiiFinding]:
        digit_run = longest_digit_run(text)
        found = []
        for bound in self._patterns:
            for result in bound.findings(text, digit_run):
                result.entity_type = bound.type
                found.extend(self._kept([result], bound.recognizer.name))
        return found

    def _kept(self, results: Iterable[Any], recognizer: str) -> list[PiiFinding]:
        return [PiiFinding(result.entity_type, result.start, result.end, float(result.score), recognizer)
                for result in results if result.score >= self.min_score and result.end > result.start]


def build_scanner(
    ner_predictor: TokenPredictor | None = None,
    *,
    min_score: float = DEFAULT_MIN_SCORE,
    types: Iterable[str] | None = None,
    ner_mapping: Mapping[str, str] = DEFAULT_NER_MAPPING,
) -> PiiScanner:
    """A scanner for `types` (default: all of ALL_TYPES). `ner_predictor`: a loaded token-classification model
    (OnnxTokenTagger) for PERSON and LOCATION; loading it from privacy.ner_model's path is the caller's job.
    `ner_mapping`: the model's entity types -> PERSON or LOCATION."""
    if isinstance(types, str):
        raise TypeError(f"types takes a list of type names, got the string {types!r}")
    chosen = list(ALL_TYPES) if types is None else list(types)
    unknown = sorted(set(chosen) - set(ALL_TYPES))
    if unknown:
        raise ValueError(f"unknown PII types {unknown}; known: {list(ALL_TYPES)}")
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f"min_score must be within [0, 1] (Presidio's scores), got {min_score}")
    bad_targets = sorted(set(ner_mapping.values()) - set(NER_TYPES))
    if bad_targets:
        raise ValueError(f"ner_mapping maps to {bad_targets}; it may only map to {list(NER_TYPES)}")
    from components.privacy.recognizers import build_recognizers

    registry, patterns, tagger = build_recognizers(chosen, ner_predictor, ner_mapping)
    return PiiScanner(registry, patterns, tagger, types=chosen, min_score=min_score)


def redact(text: str, findings: Iterable[PiiFinding]) -> str:
    """The text with each finding replaced by its type as a placeholder: "mail me at <EMAIL>".

    Findings that overlap (scan's never do; a caller may merge several scanners' findings) become one placeholder
    over their union, named as resolve_overlaps would choose: redaction never leaves part of a finding visible."""
    groups: list[list[PiiFinding]] = []  # overlapping findings, in text order
    end = -1
    for finding in sorted(findings, key=lambda f: (f.start, f.end)):
        if finding.end > len(text):
            raise ValueError(f"{finding} ends past the text ({len(text)} characters): a finding of another text?")
        if groups and finding.start < end:
            groups[-1].append(finding)
            end = max(end, finding.end)
        else:
            groups.append([finding])
            end = finding.end
    parts, position = [], 0
    for group in groups:
        parts += [text[position:group[0].start], f"<{min(group, key=_precedence).type}>"]
        position = max(f.end for f in group)
    parts.append(text[position:])
    return "".join(parts)


def count_by_type(findings_per_text: Iterable[Iterable[PiiFinding]]) -> dict[str, int]:
    """How many findings of each type, over all the texts, in ALL_TYPES order (types never found left out)."""
    return in_type_order(Counter(finding.type for findings in findings_per_text for finding in findings))


def in_type_order(counts: Counter) -> dict[str, int]:
    """Counts by type in ALL_TYPES order (other types after them, by name), types never found left out."""
    order = {kind: index for index, kind in enumerate(ALL_TYPES)}
    return {kind: counts[kind] for kind in sorted(counts, key=lambda kind: (order.get(kind, len(order)), kind))
            if counts[kind]}
