"""A labelled synthetic set for the PII scanner: sentences with personal data at known offsets, and hard
negatives that look like it but are not (a card number failing Luhn, dates, prices, versions, order numbers).

Every value is valid by its own rules, computed here and not by the scanner's libraries: card numbers pass Luhn,
IBANs mod 97, national ids their check digits, phone numbers are real numbering plans' formats. So the set
measures the scanner against the formats, not against itself. Seeded: the same seed gives the same set.

`evaluate` scores a scanner on such a set, per type, span by span: a finding is a true positive when it has the
type of a labelled span that it overlaps (each labelled span matched once), or with exact=True only when it has
the labelled span's exact offsets.
"""

from __future__ import annotations

import ipaddress
import random
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from components.privacy.pii import NER_TYPES, PATTERN_TYPES, PiiFinding, PiiScanner


@dataclass(frozen=True)
class LabelledSpan:
    type: str
    start: int
    end: int


@dataclass(frozen=True)
class Example:
    text: str
    spans: tuple[LabelledSpan, ...]  # empty: a hard negative


@dataclass(frozen=True)
class TypeScore:
    type: str
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float | None:  # None: the scanner reported nothing of this type
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:  # None: the set has no span of this type
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None


# --- values -----------------------------------------------------------------------------------------------------

def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def luhn_check_digit(payload: str) -> str:
    total = 0
    for index, char in enumerate(reversed(payload)):  # the check digit will be rightmost: double every other
        digit = int(char) * (2 if index % 2 == 0 else 1)
        total += digit - 9 if digit > 9 else digit
    return str((10 - total % 10) % 10)


def luhn_valid(number: str) -> bool:
    digits = [c for c in number if c.isdigit()]
    return luhn_check_digit("".join(digits[:-1])) == digits[-1]


def _group(number: str, sizes: Sequence[int], separator: str) -> str:
    parts, position = [], 0
    for size in sizes:
        parts.append(number[position:position + size])
        position += size
    return separator.join(parts)


def card_number(rng: random.Random, *, valid: bool = True) -> str:
    prefix, length, groups = rng.choice([("4", 16, (4, 4, 4, 4)), (str(rng.randint(51, 55)), 16, (4, 4, 4, 4)),
                                         ("6011", 16, (4, 4, 4, 4)), (rng.choice(["34", "37"]), 15, (4, 6, 5))])
    payload = prefix + _digits(rng, length - len(prefix) - 1)
    check = luhn_check_digit(payload)
    if not valid:
        check = str((int(check) + rng.randint(1, 9)) % 10)
    return _group(payload + check, groups, rng.choice([" ", "-", ""]))


# country -> (BBAN maker); IBAN = country + check digits + BBAN
_BBANS: dict[str, Callable[[random.Random], str]] = {
    "DE": lambda rng: _digits(rng, 18),
    "GB": lambda rng: "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + _digits(rng, 14),
    "FR": lambda rng: _digits(rng, 10) + "".join(rng.choice(string.ascii_uppercase + string.digits)
                                                 for _ in range(11)) + _digits(rng, 2),
    "NL": lambda rng: "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + _digits(rng, 10),
    "ES": lambda rng: _digits(rng, 20),
}


def _iban_number(text: str) -> int:
    return int("".join(str(int(c, 36)) for c in text))


def iban(rng: random.Random) -> str:
    country = rng.choice(sorted(_BBANS))
    bban = _BBANS[country](rng)
    check = 98 - _iban_number(bban + country + "00") % 97
    code = f"{country}{check:02d}{bban}"
    return _group(code, [4] * (len(code) // 4 + 1), " ").strip() if rng.random() < 0.6 else code


def email(rng: random.Random) -> str:
    first, last = rng.choice(_FIRST_NAMES).lower(), rng.choice(_LAST_NAMES).lower()
    user = rng.choice([f"{first}.{last}", f"{first}{rng.randint(1, 99)}", f"{first[0]}{last}", f"{first}_{last}"])
    return f"{user}@{rng.choice(['example.com', 'mail.co.uk', 'gmail.com', 'uni-bonn.de', 'studio.org', 'cinema.net'])}"


def phone(rng: random.Random) -> str:
    """A number in one of the formats people write in the US, the UK, Germany, France and India."""
    area, exchange = rng.choice(["212", "415", "312", "617", "206", "303"]), rng.randint(201, 989)
    line = _digits(rng, 4)
    uk_mobile = f"7{rng.choice('45789')}{_digits(rng, 2)} {_digits(rng, 6)}"  # 076: pagers, not mobiles
    german = _digits(rng, 8)
    french = " ".join(_digits(rng, 2) for _ in range(4))
    return rng.choice([
        f"({area}) {exchange}-{line}", f"{area}-{exchange}-{line}", f"{area}.{exchange}.{line}",
        f"+1 {area} {exchange} {line}", f"0{uk_mobile}", f"+44 {uk_mobile}", f"+44 20 7{_digits(rng, 3)} {line}",
        f"+49 30 {german}", f"030 {german}", f"+33 1 {french}", f"01 {french}",
        f"+91 9{_digits(rng, 4)} {_digits(rng, 5)}",
    ])


def ip_address(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    address = ipaddress.IPv6Address(rng.getrandbits(128))
    if rng.random() < 0.5:  # compressed, as people write them: a prefix, a run of zeros, an interface id
        address = ipaddress.IPv6Address((rng.choice([0x2001_0db8, 0xfe80_0000]) << 96) | rng.getrandbits(32))
    return address.compressed if rng.random() < 0.7 else address.exploded


def url(rng: random.Random) -> str:
    host = rng.choice(["example.com", "movies.example.org", "reviews.net", "cinema.co.uk", "film-club.de"])
    path = rng.choice(["", "/", "/reviews/2019/best-of", "/item?id=42&ref=mail",
                       "/u/" + rng.choice(_FIRST_NAMES).lower()])
    return rng.choice(["https://", "http://", "https://www.", "www."]) + host + path


def us_ssn(rng: random.Random) -> str:
    while True:
        digits = f"{rng.randint(1, 899):03d}{rng.randint(1, 99):02d}{rng.randint(1, 9999):04d}"
        # Never issued: area 666, one digit repeated, and the numbers published as examples.
        if digits[:3] != "666" and len(set(digits)) > 1 and digits not in {"123456789", "078051120", "219099999"}:
            return _group(digits, (3, 2, 4), rng.choice("- "))


def uk_nhs(rng: random.Random) -> str:
    while True:
        body = _digits(rng, 9)
        check = 11 - sum(int(d) * (10 - i) for i, d in enumerate(body)) % 11
        if check != 10:
            number = body + str(check % 11)
            return _group(number, (3, 3, 4), rng.choice([" ", "-", ""]))


def uk_nino(rng: random.Random) -> str:
    first, second = "ABCEGHJKLMNOPRSTWXYZ", "ABCEGHJKLMNPRSTWXYZ"
    while (prefix := rng.choice(first) + rng.choice(second)) in {"BG", "GB", "NK", "KN", "NT", "TN", "ZZ"}:
        pass
    digits, suffix = _digits(rng, 6), rng.choice("ABCD")
    if rng.random() < 0.5:
        return f"{prefix} {digits[:2]} {digits[2:4]} {digits[4:]} {suffix}"
    return prefix + digits + suffix


_NIF_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def es_nif(rng: random.Random) -> str:
    number = rng.randint(10_000_000, 99_999_999)
    return f"{number}{rng.choice(['', '-'])}{_NIF_LETTERS[number % 23]}"


def es_nie(rng: random.Random) -> str:
    prefix, digits = rng.choice("XYZ"), _digits(rng, 7)
    return f"{prefix}{digits}{_NIF_LETTERS[int(str('XYZ'.index(prefix)) + digits) % 23]}"


_FISCAL_ODD = dict(zip(string.digits + string.ascii_uppercase,
                       [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8,
                        12, 14, 16, 10, 22, 25, 24, 23]))


def it_fiscal_code(rng: random.Random) -> str:
    consonants = "BCDFGHJKLMNPQRSTVWXZ"
    name = "".join(rng.choice(consonants) for _ in range(2)) + rng.choice(string.ascii_uppercase)
    surname = "".join(rng.choice(consonants) for _ in range(2)) + rng.choice(string.ascii_uppercase)
    day = rng.randint(1, 28) + rng.choice([0, 40])  # women: day + 40
    body = f"{surname}{name}{_digits(rng, 2)}{rng.choice('ABCDEHLMPRST')}{day:02d}{rng.choice('ABCDEFGHILM')}" \
           f"{rng.randint(1, 9)}{_digits(rng, 2)}"
    total = sum(_FISCAL_ODD[c] if i % 2 == 0 else (int(c) if c.isdigit() else ord(c) - 65) for i, c in enumerate(body))
    return body + chr(65 + total % 26)


def pl_pesel(rng: random.Random) -> str:
    year, month, day = rng.randint(1930, 2015), rng.randint(1, 12), rng.randint(1, 28)
    body = f"{year % 100:02d}{month + (20 if year >= 2000 else 0):02d}{day:02d}{_digits(rng, 4)}"
    total = sum(int(d) * w for d, w in zip(body, [1, 3, 7, 9, 1, 3, 7, 9, 1, 3]))
    return body + str((10 - total % 10) % 10)


def fi_personal_identity_code(rng: random.Random) -> str:
    year, month, day, serial = rng.randint(1930, 2015), rng.randint(1, 12), rng.randint(1, 28), rng.randint(2, 899)
    date = f"{day:02d}{month:02d}{year % 100:02d}"
    check = "0123456789ABCDEFHJKLMNPRSTUVWXY"[int(f"{date}{serial:03d}") % 31]
    return f"{date}{'A' if year >= 2000 else '-'}{serial:03d}{check}"


_VERHOEFF_D = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
               [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
               [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
               [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]
_VERHOEFF_P = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
               [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
               [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8]]
_VERHOEFF_INV = [0, 4, 3, 2, 1, 5, 6, 7, 8, 9]


def verhoeff_check_digit(payload: str) -> str:
    check = 0
    for index, char in enumerate(reversed(payload)):
        check = _VERHOEFF_D[check][_VERHOEFF_P[(index + 1) % 8][int(char)]]
    return str(_VERHOEFF_INV[check])


def in_aadhaar(rng: random.Random) -> str:
    while True:
        payload = str(rng.randint(2, 9)) + _digits(rng, 10)
        number = payload + verhoeff_check_digit(payload)
        if number != number[::-1]:
            return _group(number, (4, 4, 4), rng.choice([" ", ""]))


def in_pan(rng: random.Random) -> str:
    letters = string.ascii_uppercase
    return ("".join(rng.choice(letters) for _ in range(3)) + rng.choice("ABCFGHJLPT") + rng.choice(letters)
            + _digits(rng, 4) + rng.choice(letters))


def sg_nric_fin(rng: random.Random) -> str:
    """With its check letter, though Presidio does not check it (the format alone scores 0.5)."""
    prefix, digits = rng.choice("STFG"), _digits(rng, 7)
    total = sum(int(d) * w for d, w in zip(digits, [2, 7, 6, 5, 4, 3, 2])) + (4 if prefix in "TG" else 0)
    return prefix + digits + ("JZIHGFEDCBA" if prefix in "ST" else "XWUTRQPNMLK")[total % 11]


def au_tfn(rng: random.Random) -> str:
    while True:
        body = _digits(rng, 8)
        last = sum(int(d) * w for d, w in zip(body, [1, 4, 3, 7, 5, 8, 6, 9])) % 11  # weight 10 is -1 mod 11
        if last < 10:
            return _group(body + str(last), (3, 3, 3), rng.choice([" ", ""]))


_FIRST_NAMES = ["Maria", "John", "Aisha", "Wei", "Pedro", "Anna", "Kofi", "Sofia", "Liam", "Yuki"]
_LAST_NAMES = ["Garcia", "Smith", "Okafor", "Chen", "Silva", "Berg", "Mensah", "Rossi", "Murphy", "Tanaka"]
_PLACES = ["Paris", "Lagos", "Tokyo", "Berlin", "San Diego", "New York", "Lisbon", "Nairobi"]

MAKERS: dict[str, Callable[[random.Random], str]] = {
    "EMAIL": email, "PHONE": phone, "CREDIT_CARD": card_number, "IBAN": iban, "IP_ADDRESS": ip_address, "URL": url,
    "US_SSN": us_ssn, "UK_NHS": uk_nhs, "UK_NINO": uk_nino, "ES_NIF": es_nif, "ES_NIE": es_nie,
    "IT_FISCAL_CODE": it_fiscal_code, "PL_PESEL": pl_pesel, "FI_PERSONAL_IDENTITY_CODE": fi_personal_identity_code,
    "IN_AADHAAR": in_aadhaar, "IN_PAN": in_pan, "SG_NRIC_FIN": sg_nric_fin, "AU_TFN": au_tfn,
    "PERSON": lambda rng: f"{rng.choice(_FIRST_NAMES)} {rng.choice(_LAST_NAMES)}",
    "LOCATION": lambda rng: rng.choice(_PLACES),
}
assert set(MAKERS) == set(PATTERN_TYPES + NER_TYPES)

# --- sentences ----------------------------------------------------------------------------------------------------

# "{}" is where a value goes. Review-like prose, with no digits of its own.
_CARRIERS = [
    "The screening was sold out, so write to {} for a spare ticket.",
    "I paid with {} and the cinema still lost my booking.",
    "My details ({}) were printed on the receipt, which felt careless.",
    "A slow, tender film; the usher kept asking for {} before the credits.",
    "Contact: {}. The director's cut is worth the long evening.",
    "{} is what the box office asked for, then the projector broke.",
    "Two of us went, and {} was on the loyalty form we filled in afterwards.",
    "Honestly the best thriller this year - I left {} with the festival staff.",
]
_PAIRS = ["Reach me at {} or on {} if the premiere is moved.", "Send the refund to {}; my reference is {}."]

_PROSE = [
    "A three-hour cinema master class that never loses its nerve.",
    "The plot wanders, but the performances hold it together.",
    "Funny, warm and a little too long in the middle stretch.",
    "An awkward sequel that forgets why the first one worked.",
    "Beautifully shot, clumsily edited, and oddly moving by the end.",
]


def _hard_negative(rng: random.Random) -> str:
    year, day, month = rng.randint(1950, 2025), rng.randint(1, 28), rng.randint(1, 12)
    return rng.choice([
        f"Card {card_number(rng, valid=False)} was declined, the stub says.",
        f"Released on {year}-{month:02d}-{day:02d} and again on {day:02d}/{month:02d}/{year}.",
        f"Tickets were ${rng.randint(5, 30)}.{rng.randint(0, 99):02d} each, popcorn €{rng.randint(3, 9)},50.",
        f"The restored print (version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}) runs "
        f"{rng.randint(80, 190)} minutes.",
        f"It made ${rng.randint(1, 900)}.{rng.randint(1, 9)} million in {year}; I give it {rng.randint(1, 5)}/5.",
        f"Screen {rng.randint(1, 12)}, row {rng.choice('ABCDEFGH')}, seat {rng.randint(1, 30)}, at "
        f"{rng.randint(1, 12)}:{rng.choice(['00', '15', '30', '45'])}pm.",
        f"Order number {rng.randint(10_000, 99_999)} arrived on {day} March {year}.",
        rng.choice(_PROSE),
    ])


def _fill(template: str, values: Sequence[tuple[str, str]]) -> Example:
    parts = template.split("{}")
    text, spans = parts[0], []
    for (kind, value), after in zip(values, parts[1:]):
        spans.append(LabelledSpan(kind, len(text), len(text) + len(value)))
        text += value + after
    return Example(text, tuple(spans))


def generate(n: int, seed: int, *, types: Iterable[str] = PATTERN_TYPES, negative_share: float = 0.3) -> list[Example]:
    """n examples: about `negative_share` of them hard negatives, the rest one or two values of `types` (cycled
    through evenly) in review-like sentences."""
    rng = random.Random(seed)
    kinds = list(types)
    unknown = sorted(set(kinds) - set(MAKERS))
    if unknown:
        raise ValueError(f"no generator for {unknown}")
    examples, turn = [], 0
    for _ in range(n):
        if rng.random() < negative_share:
            examples.append(Example(_hard_negative(rng), ()))
            continue
        count = 2 if rng.random() < 0.25 else 1
        chosen = [kinds[(turn + i) % len(kinds)] for i in range(count)]
        turn += count
        template = rng.choice(_PAIRS) if count == 2 else rng.choice(_CARRIERS)
        examples.append(_fill(template, [(kind, MAKERS[kind](rng)) for kind in chosen]))
    return examples


# --- scoring ------------------------------------------------------------------------------------------------------

def _matches(finding: PiiFinding, span: LabelledSpan, exact: bool) -> bool:
    if finding.type != span.type:
        return False
    if exact:
        return (finding.start, finding.end) == (span.start, span.end)
    return finding.start < span.end and span.start < finding.end


def evaluate(scanner: PiiScanner, examples: Sequence[Example], *, exact: bool = False) -> dict[str, TypeScore]:
    """Per type, span-level true/false positives and misses of the scanner on the examples (see the module's
    docstring for the matching), for every type the scanner detects or the examples hold."""
    findings = scanner.scan_many([example.text for example in examples])
    counts: dict[str, list[int]] = {kind: [0, 0, 0] for kind in scanner.types}
    for example, found in zip(examples, findings):
        unmatched = list(example.spans)
        for finding in found:
            match = next((span for span in unmatched if _matches(finding, span, exact)), None)
            counts.setdefault(finding.type, [0, 0, 0])[0 if match else 1] += 1
            if match:
                unmatched.remove(match)
        for span in unmatched:
            counts.setdefault(span.type, [0, 0, 0])[2] += 1
    order = {kind: index for index, kind in enumerate(PATTERN_TYPES + NER_TYPES)}
    return {kind: TypeScore(kind, *counts[kind]) for kind in sorted(counts, key=lambda k: order.get(k, len(order)))}
