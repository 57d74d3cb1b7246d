"""Label-preserving text perturbations (CheckList's invariance tests), seeded and deterministic.

Each kind takes a text and a random generator and returns the perturbed text with a note of what
changed, or None when the kind does not apply to the text (it would change nothing): that row is
skipped for that kind, and counted.

- typo: two adjacent inner letters of one word of 4+ letters swapped ("wonderful" -> "wodnerful").
- casing: the whole text lower-cased or upper-cased, one of the two drawn per row (the other when the
  drawn one changes nothing). Lower case is how many people type; upper case is shouting. Title case
  was left out: it changes little that these two do not.
- punctuation: the final punctuation toggled (". ! ?" at the end removed, else a "." added), or every
  punctuation mark stripped except those inside a word ("don't", "well-made"), one of the two drawn per row.
- whitespace: one space doubled, a leading space or a trailing space, one drawn among those that apply.
- entity: a first name or a city from the built-in lists below (capitalised, whole words) replaced,
  everywhere in the text, by another of the same list (female, male, city) that the text does not hold.

Token classification (NER; a split row is words joined by single spaces, its label their IOB2 tags):
only the kinds that keep word boundaries apply. typo and casing change letters within words; entity
replaces one gold PER or LOC span with a name of the same type, which may have another number of words:
its tags move with it, and `Perturbation.boundaries` says where each word boundary went.

Randomness: every (seed, kind, row id) draws from its own generator, so what happens to a row does
not depend on the other rows, their order or robustness.max_rows.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from components.config import ROBUSTNESS_KINDS, ROBUSTNESS_TOKEN_KINDS
from components.entities import Span, spans_from_tags

# Kinds that keep word boundaries: the ones that apply to token classification.
TOKEN_KINDS = ROBUSTNESS_TOKEN_KINDS

# Unambiguous first names: none that is also a common English word ("Will", "Mark", "Grace", "Frank"...),
# since a capitalised word at the start of a sentence would be taken for a name. Two lists, and a name is
# replaced from its own: "Anthony ... his" must not become "Sarah ... his".
FEMALE_NAMES = (
    "Amara", "Anna", "Elena", "Elizabeth", "Emily", "Fatima", "Jennifer", "Jessica", "Julia", "Laura", "Linda",
    "Maria", "Mary", "Nancy", "Olga", "Patricia", "Priya", "Sarah", "Susan", "Yuki",
)
MALE_NAMES = (
    "Ahmed", "Anthony", "Brian", "Carlos", "Daniel", "David", "George", "Hiroshi", "Ivan", "James", "John", "Kevin",
    "Kwame", "Luis", "Martin", "Michael", "Paul", "Peter", "Rahul", "Richard", "Robert", "Steven", "Thomas", "Wei",
)
FIRST_NAMES = FEMALE_NAMES + MALE_NAMES
# Full names for NER person spans: one and two words, so that a replaced span may grow or shrink.
PERSON_NAMES = (
    "Ahmed", "Amara Okafor", "Anna Kowalski", "Carlos Mendes", "Elena Petrova", "Fatima", "Hiroshi Sato", "Kwame",
    "Laura Jensen", "Maria Garcia", "Olga", "Priya Sharma", "Rahul", "Steven Clarke", "Wei Chen", "Yuki Tanaka",
)
CITIES = (
    "Atlanta", "Beijing", "Berlin", "Boston", "Buenos Aires", "Cairo", "Chicago", "Denver", "Dublin", "Hong Kong",
    "Istanbul", "Lagos", "Lima", "Lisbon", "London", "Los Angeles", "Madrid", "Manchester", "Mexico City", "Moscow",
    "Mumbai", "Nairobi", "New York", "Paris", "Prague", "Rome", "San Francisco", "Seattle", "Seoul", "Stockholm",
    "Sydney", "Tokyo", "Toronto", "Vienna",
)
# NER entity types whose spans can be swapped, and the names that replace them.
PERSON_TYPES = ("PER", "PERSON")
LOCATION_TYPES = ("LOC", "LOCATION", "GPE", "CITY")

Perturber = Callable[[str, random.Random], "tuple[str, str] | None"]


@dataclass(frozen=True)
class Perturbation:
    """One perturbed test row: its kind, where it came from, and what changed."""

    kind: str
    row_id: str
    change: str  # for a person reading the flipped examples: what was done to the text
    original: str
    perturbed: str
    # Token classification only: the perturbed words' gold tags, and for each word boundary of the
    # original (0..len(words)) the perturbed sentence's boundary, None inside a replaced span.
    tags: tuple[str, ...] = ()
    boundaries: tuple[int | None, ...] = ()

    def map_span(self, span: Span) -> Span | None:
        """Where an entity span of the original lies in the perturbed words; None when one of its
        boundaries falls inside a replaced span (that span cannot stay the same)."""
        if not self.boundaries:
            return span
        start, end = self.boundaries[span.start], self.boundaries[span.end]
        return None if start is None or end is None else Span(span.kind, start, end)


@dataclass(frozen=True)
class KindSample:
    """The perturbed rows of one kind."""

    kind: str
    perturbations: list[Perturbation]
    skipped: int  # rows the kind does not apply to: nothing to change, or (entity) no name found
    dropped: int  # rows that could be perturbed beyond robustness.max_rows


def row_rng(seed: int, kind: str, row_id: str) -> random.Random:
    # A str seed is hashed with SHA-512 by random.seed: the same draws in every process and Python build.
    return random.Random(f"{seed}/{kind}/{row_id}")


_WORD = re.compile(r"[^\W\d_]{4,}")  # 4+ letters in a row (any script, no digits or underscores)


def typo(text: str, rng: random.Random) -> tuple[str, str] | None:
    choices = []
    for match in _WORD.finditer(text):
        word = match.group()
        # Inner letters only (not the first or the last), and a swap that changes something.
        spots = [i for i in range(1, len(word) - 2) if word[i] != word[i + 1]]
        if spots:
            choices.append((match.start(), word, spots))
    if not choices:
        return None
    start, word, spots = rng.choice(choices)
    i = rng.choice(spots)
    new = word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return text[:start] + new + text[start + len(word):], f"{word!r} -> {new!r}"


def casing(text: str, rng: random.Random) -> tuple[str, str] | None:
    variants = [("lower-cased", str.lower), ("upper-cased", str.upper)]
    rng.shuffle(variants)
    for name, change in variants:
        new = change(text)
        if new != text:
            return new, name
    return None


_FINAL = re.compile(r"[.!?]+$")


def _strip_punctuation(text: str) -> str:
    kept = [char for i, char in enumerate(text)
            if not unicodedata.category(char).startswith("P")
            or (0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum())]
    # A mark between two spaces leaves a double space: that is the whitespace kind's test, not this one's.
    return re.sub(r" {2,}", " ", "".join(kept)).strip()


def punctuation(text: str, rng: random.Random) -> tuple[str, str] | None:
    body = text.rstrip()
    tail = text[len(body):]
    final = _FINAL.search(body)
    options = []
    if final:
        options.append((body[:final.start()].rstrip() + tail, f"final {final.group()!r} removed"))
    elif body:
        options.append((body + "." + tail, "final '.' added"))
    stripped = _strip_punctuation(text)
    if stripped and stripped != text:
        options.append((stripped, "punctuation stripped"))
    options = [(new, note) for new, note in options if new.strip() and new != text]
    return rng.choice(options) if options else None


def whitespace(text: str, rng: random.Random) -> tuple[str, str] | None:
    if not text.strip():
        return None
    variants = ["leading", "trailing"] + (["double"] if " " in text else [])
    variant = rng.choice(variants)
    if variant == "leading":
        return " " + text, "leading space added"
    if variant == "trailing":
        return text + " ", "trailing space added"
    at = rng.choice([match.start() for match in re.finditer(" ", text)])
    return text[:at] + " " + text[at:], f"space at character {at} doubled"


@lru_cache(maxsize=1)
def _name_pattern() -> re.Pattern:
    names = sorted(FIRST_NAMES + CITIES, key=len, reverse=True)  # "New York" before "York" were it listed
    return re.compile(r"(?<!\w)(" + "|".join(re.escape(name) for name in names) + r")(?!\w)")


def _whole_word(name: str) -> re.Pattern:
    return re.compile(r"(?<!\w)" + re.escape(name) + r"(?!\w)")


def entity(text: str, rng: random.Random) -> tuple[str, str] | None:
    found = sorted({match.group() for match in _name_pattern().finditer(text)})
    if not found:
        return None
    name = rng.choice(found)
    pool = next(names for names in (FEMALE_NAMES, MALE_NAMES, CITIES) if name in names)
    # Not a name the text already holds: two people (or places) must not become one.
    others = [other for other in pool if other != name and not _whole_word(other).search(text)]
    replacement = rng.choice(others)
    return _whole_word(name).sub(lambda _: replacement, text), f"{name!r} -> {replacement!r}"


TEXT_PERTURBERS: dict[str, Perturber] = {
    "typo": typo, "casing": casing, "punctuation": punctuation, "whitespace": whitespace, "entity": entity,
}
assert set(TEXT_PERTURBERS) == set(ROBUSTNESS_KINDS)


def _pool_for(entity_type: str) -> tuple[str, ...] | None:
    if entity_type.upper() in PERSON_TYPES:
        return PERSON_NAMES
    if entity_type.upper() in LOCATION_TYPES:
        return CITIES
    return None


def swap_entity(words: Sequence[str], tags: Sequence[str], rng: random.Random
                ) -> tuple[list[str], list[str], tuple[int | None, ...], str] | None:
    """One gold PER or LOC span of a tagged sentence replaced by another name of its type: the new
    words, their tags, where each word boundary went, and a note; None without such a span."""
    spans = [span for span in spans_from_tags(list(tags)) if _pool_for(span.kind)]
    if not spans:
        return None
    span = rng.choice(spans)
    old = list(words[span.start:span.end])
    present = " " + " ".join(words).lower() + " "
    others = [name for name in _pool_for(span.kind) if f" {name.lower()} " not in present]
    if not others:
        return None
    replacement = rng.choice(others).split(" ")
    new_words = list(words[:span.start]) + replacement + list(words[span.end:])
    new_tags = (list(tags[:span.start]) + [f"B-{span.kind}"] + [f"I-{span.kind}"] * (len(replacement) - 1)
                + list(tags[span.end:]))
    shift = len(replacement) - (span.end - span.start)
    boundaries = tuple(b if b <= span.start else None if b < span.end else b + shift for b in range(len(words) + 1))
    return new_words, new_tags, boundaries, f"{span.kind} {' '.join(old)!r} -> {' '.join(replacement)!r}"


def applicable_kinds(kinds: Sequence[str], token_task: bool) -> list[str]:
    """The kinds (in the order given) that apply to the task."""
    return [kind for kind in kinds if not token_task or kind in TOKEN_KINDS]


def _perturb_text_row(kind: str, row_id: str, text: str, rng: random.Random) -> Perturbation | None:
    done = TEXT_PERTURBERS[kind](text, rng)
    return None if done is None else Perturbation(kind, row_id, done[1], text, done[0])


def _perturb_token_row(kind: str, row_id: str, text: str, tags: Sequence[str], rng: random.Random
                       ) -> Perturbation | None:
    words = text.split(" ")
    if kind == "entity":
        done = swap_entity(words, tags, rng)
        if done is None:
            return None
        new_words, new_tags, boundaries, note = done
        return Perturbation(kind, row_id, note, text, " ".join(new_words), tuple(new_tags), boundaries)
    if kind not in ("typo", "casing"):
        raise ValueError(f"{kind!r} does not keep word boundaries: token classification takes {TOKEN_KINDS}")
    # Letters change within words only: the words and their tags stay where they were.
    done = TEXT_PERTURBERS[kind](text, rng)
    if done is None:
        return None
    new_words = done[0].split(" ")
    if len(new_words) != len(words):  # cannot happen with letters swapped or re-cased; never score a misalignment
        raise AssertionError(f"row {row_id}: {kind} changed the number of words")
    return Perturbation(kind, row_id, done[1], text, done[0], tuple(tags), tuple(range(len(words) + 1)))


def perturb_rows(
    ids: Sequence[str],
    texts: Sequence[str],
    kinds: Sequence[str],
    seed: int,
    max_rows: int | None = None,
    tags: Sequence[Sequence[str]] | None = None,
) -> dict[str, KindSample]:
    """Every kind's perturbations of the rows. `tags`: the gold IOB2 tags of each row for token
    classification (texts are then words joined by single spaces); None for a classifier. At most
    max_rows perturbed rows per kind, a seeded sample kept in the rows' order."""
    if len(ids) != len(texts) or (tags is not None and len(tags) != len(texts)):
        raise ValueError(f"{len(ids)} ids, {len(texts)} texts and {len(tags) if tags is not None else '-'} tag rows")
    if len(set(ids)) != len(ids):
        raise ValueError("row ids must be unique: each seeds its row's perturbations and names it in the report")
    samples = {}
    for kind in kinds:
        if kind not in TEXT_PERTURBERS:
            raise ValueError(f"unknown perturbation kind {kind!r}; kinds: {', '.join(TEXT_PERTURBERS)}")
        done = []
        for index, (row_id, text) in enumerate(zip(ids, texts)):
            rng = row_rng(seed, kind, str(row_id))
            made = (_perturb_text_row(kind, str(row_id), text, rng) if tags is None
                    else _perturb_token_row(kind, str(row_id), text, tags[index], rng))
            if made is not None:
                done.append(made)
        kept = done
        if max_rows is not None and len(done) > max_rows:
            chosen = sorted(random.Random(f"{seed}/{kind}/rows").sample(range(len(done)), max_rows))
            kept = [done[i] for i in chosen]
        samples[kind] = KindSample(kind, kept, skipped=len(texts) - len(done), dropped=len(done) - len(kept))
    return samples
