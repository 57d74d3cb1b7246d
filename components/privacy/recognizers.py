"""The Presidio recognizers behind components.privacy.pii, built to run offline and without an NLP engine.

Only components.privacy.pii.build_scanner imports this module: importing Presidio takes seconds (it pulls in
spaCy and transformers), and a module that merely names the scanner's types should not pay for that.

Presidio's AnalyzerEngine is not used: without an NLP engine it tries to download a spaCy model, and what it
adds on top of the recognizers (context words, which need the NLP engine's lemmas) does not apply here. The
scanner calls each recognizer itself, which also lets it skip the ones a text cannot match (`gate`) and call
the NER model once per batch instead of once per text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import tldextract
from presidio_analyzer import EntityRecognizer, Pattern, RecognizerRegistry, RecognizerResult
from presidio_analyzer import predefined_recognizers as predefined

from components.privacy.types import NER_TYPES, PATTERN_TYPES, TokenPredictor


@dataclass(frozen=True)
class Gate:
    """What a text must have for a recognizer to be worth running on it: a text without it cannot match any of
    the recognizer's patterns (each gate is a necessary part of every one of them, written as a superset).
    Most review texts have no digit at all, and then none of the number recognizers runs. tests/test_pii_scan.py
    checks that gated and ungated scanners find the same."""

    digits: int = 0  # the text's longest run of digits is at least this long
    pattern: re.Pattern[str] | None = None  # and this matches somewhere in the text

    def admits(self, text: str, digit_run: int) -> bool:
        return digit_run >= self.digits and (self.pattern is None or self.pattern.search(text) is not None)


NO_GATE = Gate()
_AFTER_URL = frozenset(".,;:!?")

# Our type -> (Presidio's recognizer class, its entity name, its gate).
_PRESIDIO: dict[str, tuple[str, str, Gate]] = {
    "EMAIL": ("EmailRecognizer", "EMAIL_ADDRESS", Gate(pattern=re.compile("@"))),
    "PHONE": ("PhoneRecognizer", "PHONE_NUMBER", Gate(digits=1)),
    "CREDIT_CARD": ("CreditCardRecognizer", "CREDIT_CARD", Gate(digits=4)),  # Luhn-checked; starts with 4 digits
    "IBAN": ("IbanRecognizer", "IBAN_CODE", Gate(digits=2)),  # format and mod-97 checked; 2 check digits
    # IPv4: digit.digit; IPv6: "::" or a colon before a hex group.
    "IP_ADDRESS": ("IpRecognizer", "IP_ADDRESS", Gate(pattern=re.compile(r"\d\.\d|:[0-9A-Fa-f:]"))),
    # Every URL pattern has [.] right before its top-level domain, a word of letters. The URL patterns were most of
    # a scan's time before this gate (their host part backtracks over every word); prose has dots before spaces.
    "URL": ("UrlRecognizer", "URL", Gate(pattern=re.compile(r"\.[^\W\d_]"))),
    "US_SSN": ("UsSsnRecognizer", "US_SSN", Gate(digits=3)),
    "UK_NHS": ("NhsRecognizer", "UK_NHS", Gate(digits=3)),
    "UK_NINO": ("UkNinoRecognizer", "UK_NINO", Gate(digits=2)),
    "ES_NIF": ("EsNifRecognizer", "ES_NIF", Gate(digits=7)),
    "ES_NIE": ("EsNieRecognizer", "ES_NIE", Gate(digits=7)),
    # Its digits may be written as letters (omocodia): only its 16 characters are certain.
    "IT_FISCAL_CODE": ("ItFiscalCodeRecognizer", "IT_FISCAL_CODE", Gate(pattern=re.compile(r"\w{16}"))),
    "PL_PESEL": ("PlPeselRecognizer", "PL_PESEL", Gate(digits=11)),
    "FI_PERSONAL_IDENTITY_CODE": ("FiPersonalIdentityCodeRecognizer", "FI_PERSONAL_IDENTITY_CODE", Gate(digits=6)),
    "IN_AADHAAR": ("InAadhaarRecognizer", "IN_AADHAAR", Gate(digits=4)),
    "IN_PAN": ("InPanRecognizer", "IN_PAN", Gate(digits=4)),
    "SG_NRIC_FIN": ("SgFinRecognizer", "SG_NRIC_FIN", Gate(digits=7)),
    "AU_TFN": ("AuTfnRecognizer", "AU_TFN", Gate(digits=3)),
}
assert set(_PRESIDIO) == set(PATTERN_TYPES), "every pattern type needs its Presidio recognizer"


# Each recognizer runs on this once when the scanner is built (whatever its gate), to compile its patterns.
_WARM_UP = "mail a@example.com, call 020 7946 0958 at 10.0.0.1: www.example.org"


@dataclass(frozen=True)
class BoundRecognizer:
    """One Presidio recognizer as the scanner runs it: our type for its entity, and its gate."""

    type: str
    recognizer: EntityRecognizer
    entity: str  # Presidio's name for the type
    gate: Gate

    def findings(self, text: str, digit_run: int) -> list[RecognizerResult]:
        """Presidio's results for the text; `digit_run`: pii.longest_digit_run(text), computed once per text."""
        if not self.gate.admits(text, digit_run):
            return []
        results = self.recognizer.analyze(text, [self.entity], None)
        if self.type == "URL":  # "settings..it", "elves...as": an ellipsis typo, not a host (no empty labels)
            results = [result for result in results if ".." not in _host(text[result.start:result.end])]
        for result in results:
            if self.type == "URL":
                # The URL patterns' path part ([^\s()<>"']*) takes the punctuation after a URL ("see x.com/a, or"):
                # it is the sentence's, and redacting it would glue the placeholder to the next word.
                while result.end > result.start and text[result.end - 1] in _AFTER_URL:
                    result.end -= 1
            elif self.type == "PHONE" and text[result.start] == "(" and ")" not in text[result.start:result.end]:
                # phonenumbers keeps the "(" of "(020 7946 0958)" but not its ")": the bracket is the sentence's.
                result.start += 1
        return results


def offline_tld_extractor() -> tldextract.TLDExtract:
    """A tldextract that reads only the public suffix list bundled with it.

    tldextract's module-level extractor (the one Presidio's e-mail recognizer calls) first tries to fetch
    the list from publicsuffix.org and, offline, logs a ConnectionError traceback before falling back to
    the bundled copy. No URLs means no request; no cache directory means nothing written under ~/.cache.
    The snapshot is parsed here once, when the scanner is built, not on the first e-mail it meets."""
    extractor = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)
    extractor("example.com")
    return extractor


class OfflineEmailRecognizer(predefined.EmailRecognizer):
    """Presidio's e-mail recognizer, its domain check done by an offline tldextract (see above) instead of
    tldextract's global one, which this leaves untouched for everyone else in the process."""

    def __init__(self, extractor: tldextract.TLDExtract) -> None:
        self._extract = extractor
        super().__init__()

    def validate_result(self, pattern_text: str) -> bool:
        return self._extract(pattern_text).fqdn != ""


def _host(url: str) -> str:
    """The host part of a matched URL: after any scheme, before the path."""
    return url.split("://", 1)[-1].split("/", 1)[0]


# Presidio's URL host pattern has no end after the top-level domain: "cinema.and" is a URL "cinema.an" (an: the
# Netherlands Antilles) and "dark.The" one "dark.Th", which made most of its false positives on review text
# (a missing space after a full stop). Our patterns add a lookahead there, so that the domain ends the word; the
# regex then also goes on to the right domain where a shorter one is a prefix (".community" is not ".com").
_URL_PATH = r"""(?:/[^\s()<>\"']*)?)"""
_URL_DOMAIN_ENDS = r"(?![a-z0-9\-])"


def url_patterns() -> list[Pattern]:
    base = predefined.UrlRecognizer.BASE_URL_REGEX
    if not base.endswith(_URL_PATH):  # another Presidio: its own patterns (tests/test_pii_scan.py will tell)
        return list(predefined.UrlRecognizer.PATTERNS)
    bounded = base[:-len(_URL_PATH)] + _URL_DOMAIN_ENDS + _URL_PATH
    return [Pattern(p.name, p.regex.replace(base, bounded), p.score) for p in predefined.UrlRecognizer.PATTERNS]


def _presidio_recognizer(kind: str, extractor: tldextract.TLDExtract | None) -> EntityRecognizer:
    class_name, _, _ = _PRESIDIO[kind]
    if kind == "EMAIL":
        return OfflineEmailRecognizer(extractor)
    if kind == "URL":
        return predefined.UrlRecognizer(patterns=url_patterns(), supported_language="en")
    if kind == "PL_PESEL":
        # Presidio's PESEL pattern has no word boundaries: it matches 11 digits inside any longer digit run
        # (a card, a phone number) and its checksum then passes one time in ten, scored 1.0.
        (pattern,) = predefined.PlPeselRecognizer.PATTERNS
        return predefined.PlPeselRecognizer(
            patterns=[Pattern(pattern.name, rf"\b{pattern.regex}\b", pattern.score)], supported_language="en")
    # Language only matters to Presidio's registry lookups; the ids are the same in any text.
    return getattr(predefined, class_name)(supported_language="en")


class TokenTaggerRecognizer(EntityRecognizer):
    """Names and places from a token-classification model: any predictor with OnnxTokenTagger.predict's
    contract, texts in, per text {"entities": [{"type", "start", "end", "score", ...}]} with character
    offsets. The model's entity types are mapped to ours (PER -> PERSON); unmapped ones (ORG, MISC) dropped."""

    def __init__(self, predictor: TokenPredictor, mapping: Mapping[str, str]) -> None:
        unknown = sorted(set(mapping.values()) - set(NER_TYPES))
        if unknown:
            raise ValueError(f"the NER mapping names {unknown}; it may only map to {list(NER_TYPES)}")
        self.predictor = predictor
        self.mapping = dict(mapping)
        super().__init__(supported_entities=sorted(set(self.mapping.values())), name="TokenTaggerRecognizer")

    def load(self) -> None:
        """Nothing to load: the caller loaded the predictor."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[RecognizerResult]:
        return self.analyze_many([text], entities)[0]

    def analyze_many(self, texts: Sequence[str], entities: Sequence[str]) -> list[list[RecognizerResult]]:
        """One predictor call for all the texts (the model batches them itself)."""
        wanted = set(entities)
        predictions = self.predictor.predict(list(texts))
        if len(predictions) != len(texts):
            raise ValueError(f"the NER predictor answered {len(predictions)} predictions for {len(texts)} texts")
        results = []
        for index, (text, prediction) in enumerate(zip(texts, predictions)):
            found = []
            for entity in prediction["entities"]:
                kind = self.mapping.get(entity["type"])
                if kind is None or kind not in wanted:
                    continue
                start, end = int(entity["start"]), int(entity["end"])
                if not 0 <= start < end <= len(text):
                    # A predictor off its contract would make redaction cut the wrong characters.
                    raise ValueError(f"the NER predictor's entity {entity} on text {index} is outside the text "
                                     f"({len(text)} characters)")
                found.append(RecognizerResult(kind, start, end, float(entity["score"]),
                                              recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name}))
            results.append(found)
        return results


def build_recognizers(
    kinds: Sequence[str], predictor: TokenPredictor | None, mapping: Mapping[str, str], *, gated: bool = True
) -> tuple[RecognizerRegistry, list[BoundRecognizer], TokenTaggerRecognizer | None]:
    """The registry of the recognizers for `kinds`, built once per scanner: the pattern ones bound to our
    types and gates, and the NER one (None without a predictor or when no NER type is asked for).
    gated=False runs every recognizer on every text (to check that the gates change nothing)."""
    extractor = offline_tld_extractor() if "EMAIL" in kinds else None
    bound = []
    for kind in PATTERN_TYPES:  # a fixed order: the same findings whatever order `kinds` came in
        if kind in kinds:
            _, entity, gate = _PRESIDIO[kind]
            recognizer = _presidio_recognizer(kind, extractor)
            # Compiles the patterns (the URL one alone takes tens of milliseconds) and loads phonenumbers'
            # metadata now rather than on the first text that passes the gate.
            recognizer.analyze(_WARM_UP, [entity], None)
            bound.append(BoundRecognizer(kind, recognizer, entity, gate if gated else NO_GATE))
    tagger = None
    ner_mapping = {source: target for source, target in mapping.items() if target in kinds}
    if predictor is not None and ner_mapping:
        tagger = TokenTaggerRecognizer(predictor, ner_mapping)
    registry = RecognizerRegistry([b.recognizer for b in bound] + ([tagger] if tagger else []),
                                  supported_languages=["en"])
    return registry, bound, tagger
