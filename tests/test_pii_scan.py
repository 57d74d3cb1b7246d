"""The PII scanner (components/privacy): each pattern type found at its offsets, hard negatives left alone,
redaction, no network from tldextract, names and places from a real tiny NER model, and precision/recall floors
on the synthetic set."""

from __future__ import annotations

import logging
import random
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from components.privacy.pii import (
    ALL_TYPES,
    DEFAULT_MIN_SCORE,
    DEFAULT_NER_MAPPING,
    NATIONAL_ID_TYPES,
    NO_NER_MODEL,
    PATTERN_TYPES,
    PiiFinding,
    PiiScanner,
    build_scanner,
    count_by_type,
    redact,
    resolve_overlaps,
)
from components.privacy.synthetic import evaluate, generate, luhn_valid

ROOT = Path(__file__).resolve().parents[1]

# One valid value per pattern type: the classic published examples where there is one (their checksums pass).
VALUES = {
    "EMAIL": "maria.garcia@example.co.uk",
    "PHONE": "+44 7911 123456",
    "CREDIT_CARD": "4111 1111 1111 1111",
    "IBAN": "DE89 3704 0044 0532 0130 00",
    "IP_ADDRESS": "2001:db8::8a2e:370:7334",
    "URL": "https://www.example.org/reviews?id=42",
    "US_SSN": "536-22-8451",
    "UK_NHS": "943 476 5919",
    "UK_NINO": "AB 12 34 56 C",
    "ES_NIF": "12345678Z",
    "ES_NIE": "X1234567L",
    "IT_FISCAL_CODE": "RSSMRA85T10A562S",
    "PL_PESEL": "44051401359",
    "FI_PERSONAL_IDENTITY_CODE": "131052-308T",
    "IN_AADHAAR": "2345 6789 0124",
    "IN_PAN": "ABCPE1234F",
    "SG_NRIC_FIN": "S1234567D",
    "AU_TFN": "123 456 782",
}

# Looks like personal data, is not: a card number that fails Luhn, prices, dates, versions, a missing space.
HARD_NEGATIVES = [
    "Card 4111 1111 1111 1112 was declined, the stub says.",
    "4111111111111112",
    "Tickets were $12.99 each and popcorn €4,50.",
    "Released on 2023-12-01, again on 01/12/2023 and on 1 December 2023.",
    "The restored print (version 2.4.1) runs 127 minutes; I give it 4/5.",
    "It made $350.5 million in 1968 at screen 7, row C, at 7:30pm.",
    "A quiet film about the cinema.and its audience.The ending drags.",
    "An exhaustive look at the revolutions that rocked France, the U.S., China and Latin America.",
]


@pytest.fixture(scope="module")
def scanner() -> PiiScanner:
    # Read-only once built (scans keep no state), so one for the module.
    return build_scanner()


def spans(findings: list[PiiFinding]) -> list[tuple[str, int, int]]:
    return [(f.type, f.start, f.end) for f in findings]


# --- pattern types ----------------------------------------------------------------------------------------------

def test_the_values_are_valid_and_every_pattern_type_has_one():
    assert set(VALUES) == set(PATTERN_TYPES) and len(NATIONAL_ID_TYPES) >= 10
    assert luhn_valid(VALUES["CREDIT_CARD"])


@pytest.mark.parametrize("kind", PATTERN_TYPES)
def test_each_pattern_type_is_found_with_its_span(scanner, kind):
    value = VALUES[kind]
    text = f"Please note {value} for the screening."
    found = scanner.scan(text)
    assert spans(found) == [(kind, 12, 12 + len(value))], found
    assert 0 < found[0].score <= 1 and found[0].recognizer


def test_counts_by_type_and_placeholders_in_place(scanner):
    texts = [
        f"Mail {VALUES['EMAIL']} or call {VALUES['PHONE']}; card {VALUES['CREDIT_CARD']}.",
        f"Refund to {VALUES['IBAN']}, see {VALUES['URL']}, from {VALUES['IP_ADDRESS']}.",
        f"Write to {VALUES['EMAIL']} with your NHS number {VALUES['UK_NHS']}.",
        "A three-hour cinema master class.",
    ]
    found = scanner.scan_many(texts)
    assert [redact(text, f) for text, f in zip(texts, found)] == [
        "Mail <EMAIL> or call <PHONE>; card <CREDIT_CARD>.",
        "Refund to <IBAN>, see <URL>, from <IP_ADDRESS>.",
        "Write to <EMAIL> with your NHS number <UK_NHS>.",
        "A three-hour cinema master class.",
    ]
    assert count_by_type(found) == {"EMAIL": 2, "PHONE": 1, "CREDIT_CARD": 1, "IBAN": 1, "IP_ADDRESS": 1, "URL": 1,
                                    "UK_NHS": 1}
    assert found == [scanner.scan(text) for text in texts]  # one text at a time or a batch: the same
    assert scanner.scan_many([]) == [] and scanner.scan("") == []


@pytest.mark.parametrize("text", HARD_NEGATIVES)
def test_hard_negatives_are_not_flagged(scanner, text):
    assert scanner.scan(text) == []


def test_urls_end_where_their_domain_and_their_sentence_end(scanner):
    """Presidio's URL pattern alone would read "cinema.and" as the URL "cinema.an" and keep a URL's comma."""
    text = "See film-club.community, or example.com/reviews/best. Or cinema.and more."
    assert [text[f.start:f.end] for f in scanner.scan(text)] == ["film-club.community", "example.com/reviews/best"]
    phone = "Call me (020 7946 0958) later."
    assert [phone[f.start:f.end] for f in scanner.scan(phone)] == ["020 7946 0958"]  # not the sentence's "("


def test_min_score_keeps_phones_by_default_and_drops_them_above(scanner):
    text = f"Call {VALUES['PHONE']} or pay with {VALUES['CREDIT_CARD']}."
    assert scanner.min_score == DEFAULT_MIN_SCORE
    assert [f.type for f in scanner.scan(text)] == ["PHONE", "CREDIT_CARD"]
    assert scanner.scan(text)[0].score == pytest.approx(0.4)  # Presidio's phone score, no context words
    strict = build_scanner(types=["PHONE", "CREDIT_CARD"], min_score=0.5)
    assert [f.type for f in strict.scan(text)] == ["CREDIT_CARD"]


def test_types_narrow_the_scan_and_bad_arguments_are_refused():
    only_email = build_scanner(types=["EMAIL"])
    assert only_email.types == ("EMAIL",) and only_email.not_detected is None
    assert spans(only_email.scan(f"{VALUES['EMAIL']} {VALUES['CREDIT_CARD']}")) == [("EMAIL", 0, 26)]
    with pytest.raises(ValueError, match="unknown PII types"):
        build_scanner(types=["EMAIL", "SHOE_SIZE"])
    with pytest.raises(TypeError, match="list of type names"):
        build_scanner(types="EMAIL")
    with pytest.raises(ValueError, match="min_score"):
        build_scanner(min_score=1.5)
    with pytest.raises(ValueError, match="may only map to"):
        build_scanner(ner_mapping={"ORG": "COMPANY"})
    with pytest.raises(TypeError, match="single string"):
        only_email.scan_many("a text")
    with pytest.raises(TypeError, match="text 1 is int"):
        only_email.scan_many(["a", 3])


def test_gates_change_no_finding(scanner):
    """The gates skip recognizers that cannot match a text; an ungated scanner must find exactly the same."""
    from components.privacy.recognizers import build_recognizers

    registry, patterns, tagger = build_recognizers(list(ALL_TYPES), None, DEFAULT_NER_MAPPING, gated=False)
    ungated = PiiScanner(registry, patterns, tagger, types=ALL_TYPES, min_score=DEFAULT_MIN_SCORE)
    texts = [e.text for e in generate(240, seed=5)] + HARD_NEGATIVES + list(VALUES.values())
    assert ungated.scan_many(texts) == scanner.scan_many(texts)


# --- overlaps and redaction ---------------------------------------------------------------------------------------

def test_overlaps_keep_the_longer_span_then_the_higher_score_whatever_the_order():
    email = PiiFinding("EMAIL", 4, 21, 1.0, "EmailRecognizer")
    url = PiiFinding("URL", 10, 21, 0.5, "UrlRecognizer")  # the domain of the e-mail
    phone = PiiFinding("PHONE", 30, 42, 0.4, "PhoneRecognizer")
    nhs = PiiFinding("UK_NHS", 30, 42, 1.0, "NhsRecognizer")  # the same digits pass the NHS check
    plus_one = PiiFinding("PHONE", 50, 65, 0.4, "PhoneRecognizer")  # "+1 415 867 5309"
    inner = PiiFinding("UK_NHS", 53, 65, 1.0, "NhsRecognizer")  # its last ten digits
    link = PiiFinding("URL", 70, 93, 0.6, "UrlRecognizer")  # "www.example.com/u/maria"
    name = PiiFinding("PERSON", 88, 93, 0.95, "TokenTaggerRecognizer")
    tie_a, tie_b = PiiFinding("IN_PAN", 100, 110, 0.5, "a"), PiiFinding("SG_NRIC_FIN", 100, 110, 0.5, "b")
    findings = [url, email, phone, nhs, plus_one, inner, name, link, tie_a, tie_b]
    expected = [email, nhs, plus_one, link, tie_a]
    rng = random.Random(0)
    for _ in range(100):
        rng.shuffle(findings)
        assert resolve_overlaps(findings) == expected


def test_redact_merges_overlapping_findings_and_refuses_foreign_ones():
    text = "call 212-555-0187 now"
    findings = [PiiFinding("PHONE", 5, 17, 0.4, "p"), PiiFinding("UK_NHS", 9, 17, 1.0, "n")]
    assert redact(text, findings) == "call <PHONE> now"  # the union, named as resolve_overlaps would
    chain = [PiiFinding("URL", 0, 4, 0.5, "u"), PiiFinding("PERSON", 2, 8, 0.9, "t"), PiiFinding("URL", 6, 9, 0.5, "u")]
    assert redact("abcdefghijk", chain) == "<PERSON>jk"  # a chain of overlaps is one placeholder
    apart = [PiiFinding("EMAIL", 6, 8, 1.0, "e"), PiiFinding("URL", 0, 2, 1.0, "u")]
    assert redact("ab cd ef", apart) == "<URL> cd <EMAIL>"
    assert redact(text, []) == text
    with pytest.raises(ValueError, match="ends past the text"):
        redact("short", [PiiFinding("EMAIL", 0, 10, 1.0, "e")])
    with pytest.raises(ValueError, match="start < end"):
        PiiFinding("EMAIL", 5, 5, 1.0, "e")


# --- tldextract stays offline -------------------------------------------------------------------------------------

def test_no_network_attempt_and_no_connection_error_logged(monkeypatch, caplog):
    import tldextract

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    caplog.set_level(logging.DEBUG)

    scanner = build_scanner(types=["EMAIL", "URL"])
    text = "Write to maria.garcia@example.co.uk or a.chen@studio.org, not to someone@localhost."
    assert [(f.type, text[f.start:f.end]) for f in scanner.scan(text)] == [
        ("EMAIL", "maria.garcia@example.co.uk"), ("EMAIL", "a.chen@studio.org")]
    assert attempts == []
    noisy = [r for r in caplog.records if r.name.startswith("tldextract") or r.exc_info
             or "ConnectionError" in r.getMessage()]
    assert noisy == []

    # The same checks catch what tldextract does by default (fetch the list, log the failure with a traceback).
    tldextract.TLDExtract(cache_dir=None, suffix_list_urls=tldextract.tldextract.PUBLIC_SUFFIX_LIST_URLS)("example.com")
    assert attempts
    assert any(r.name.startswith("tldextract") and r.exc_info for r in caplog.records)


def test_importing_the_module_loads_no_presidio():
    code = ("import sys, components.privacy.pii, components.privacy.synthetic; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'presidio_analyzer', 'spacy', 'tldextract'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


# --- names and places from a real tiny NER model ------------------------------------------------------------------

class CountingTagger:
    """The real tagger, counting its calls: every answer is the model's own."""

    def __init__(self, tagger) -> None:
        self.tagger, self.calls = tagger, []

    def predict(self, texts: list[str]) -> list[dict]:
        self.calls.append(len(texts))
        return self.tagger.predict(texts)


@pytest.fixture(scope="module")
def tagger(tiny_ner_base_model, tmp_path_factory):
    """A tiny tagger fine-tuned on tests/tiny.py's NER sentences (PER, LOC, ORG) and exported as served."""
    from components.export.predictor import OnnxTokenTagger
    from components.export.to_onnx import export_onnx
    from tests.test_ner_model import MAX_LENGTH, train_tiny_tagger

    model_dir = train_tiny_tagger(tiny_ner_base_model, tmp_path_factory.mktemp("pii-ner-model"), steps=150)
    export = export_onnx(model_dir, tmp_path_factory.mktemp("pii-ner-onnx") / "fp32", max_length=MAX_LENGTH,
                         precision="fp32")
    return OnnxTokenTagger(export.out_dir)


def test_without_a_model_the_scanner_says_names_and_places_are_not_detected(scanner):
    assert scanner.not_detected == NO_NER_MODEL
    assert NO_NER_MODEL in scanner.describe() and "privacy.ner_model" in NO_NER_MODEL
    assert "PERSON" not in scanner.types and "LOCATION" not in scanner.types
    assert scanner.scan("Mary visited Paris .") == []


def test_ner_recognizer_maps_the_models_entities(tagger):
    counting = CountingTagger(tagger)
    scanner = build_scanner(counting)
    assert scanner.not_detected is None and {"PERSON", "LOCATION"} <= set(scanner.types)
    assert "LOC->LOCATION, PER->PERSON" in scanner.describe()

    texts = ["Mary visited Paris .", "Pedro met Globex in Tokyo on monday .", "John Smith said Berlin .",
             f"Write to Mary at {VALUES['EMAIL']} ."]
    found = scanner.scan_many(texts)
    assert counting.calls == [len(texts)]  # one model call for the batch
    assert [(f.type, f.start, f.end, f.recognizer) for f in found[0]] == [
        ("PERSON", 0, 4, "TokenTaggerRecognizer"), ("LOCATION", 13, 18, "TokenTaggerRecognizer")]
    assert redact(texts[0], found[0]) == "<PERSON> visited <LOCATION> ."

    # Whatever the model answers: PER and LOC mapped with their offsets and scores, ORG and MISC left out.
    for text, predicted, findings in zip(texts[:3], tagger.predict(texts[:3]), found[:3]):
        expected = [(DEFAULT_NER_MAPPING[e["type"]], e["start"], e["end"], pytest.approx(e["score"]))
                    for e in predicted["entities"]
                    if e["type"] in DEFAULT_NER_MAPPING and e["score"] >= DEFAULT_MIN_SCORE]
        assert [(f.type, f.start, f.end, f.score) for f in findings] == expected, (text, predicted)
    assert any(e["type"] == "ORG" for e in tagger.predict([texts[1]])[0]["entities"])
    # The e-mail, the longer span, wins over whatever the model tags inside it.
    assert ("EMAIL", 17, 17 + len(VALUES["EMAIL"])) in spans(found[3])
    assert not any(f.type == "PERSON" and f.start >= 17 for f in found[3])


def test_ner_types_and_mapping_are_configurable(tagger):
    only_people = build_scanner(tagger, types=["PERSON"])
    assert spans(only_people.scan("Mary visited Paris .")) == [("PERSON", 0, 4)]
    orgs_as_places = build_scanner(tagger, types=["LOCATION"], ner_mapping={"ORG": "LOCATION"})
    assert [f.type for f in orgs_as_places.scan("Pedro met Globex in Tokyo on monday .")] == ["LOCATION"]
    no_location = build_scanner(tagger, types=["PERSON", "LOCATION"], ner_mapping={"PER": "PERSON"})
    assert no_location.types == ("PERSON",) and "LOCATION not detected" in no_location.not_detected


# --- quality on the synthetic set ---------------------------------------------------------------------------------

# Floors under what the scanner measured on this set (seed 2024, overlap matching, about 40 spans per type): 1.0
# everywhere but PHONE 0.975/0.975 (a US number whose ten digits pass the NHS check is typed UK_NHS, hence also
# UK_NHS precision 0.975; a card number failing Luhn is read as a phone number) and IN_AADHAAR precision 0.91
# (12 of the 16 digits of card numbers failing Luhn pass Verhoeff's check). The margin: two or three more errors.
FLOORS = {kind: (0.9, 0.9) for kind in PATTERN_TYPES} | {"PHONE": (0.85, 0.85), "IN_AADHAAR": (0.85, 0.9),
                                                         "UK_NHS": (0.85, 0.9)}


def test_precision_and_recall_floors_on_the_synthetic_set(scanner):
    examples = generate(800, seed=2024)
    scores = evaluate(scanner, examples)
    table = {kind: (score.precision, score.recall) for kind, score in scores.items()}
    print("\n" + "\n".join(f"{kind:28s} P={p} R={r}" for kind, (p, r) in table.items()))
    for kind, (min_precision, min_recall) in FLOORS.items():
        precision, recall = table[kind]
        assert scores[kind].tp + scores[kind].fn >= 20, kind  # enough spans of each type to judge
        assert precision >= min_precision and recall >= min_recall, (kind, precision, recall)
    assert generate(50, seed=2024) == examples[:50] and generate(50, seed=2025) != examples[:50]  # seeded
    assert all(e.text[s.start:s.end].strip() == e.text[s.start:s.end] for e in examples for s in e.spans)
