"""A synthetic labelled corpus for sequence classification: review-like texts written to a CSV in chunks,
so that a corpus of any size costs the memory of one chunk. Not a test; bench/data_scale.py feeds it to the
pipeline.

    .venv/bin/python bench/synthetic_corpus.py out.csv --rows 1000000 --seed 0
    .venv/bin/python bench/synthetic_corpus.py out.csv --rows 20000 --text-column review --label-column sentiment \\
        --labels positive negative

    from synthetic_corpus import write_corpus
    counts = write_corpus(Path("out.csv"), rows=1_000_000, seed=0)

The defaults match the default project's params.yaml: columns `text` and `category`, raw labels `fresh`
(data.label_map: positive) and `rotten` (negative), data.min_chars 3 and data.max_chars 2000, so that a
params.yaml differing from the shipped one only in data.source ingests it.

What a corpus holds:

- texts: log-normal lengths (median 22 words, sigma 0.75, 4 to 320 words: 76% between 10 and 60 words,
  0.2% over 200), sentences of about 14 words with capitals, commas, full stops, the odd "!", "?" or "...",
  and quoted words. Words come from a fixed list of English function words, film-review vocabulary and
  neutral words (the most frequent, Zipf-Mandelbrot weighted), then ~4,000 made-up words of two or three
  syllables for the long tail (real-looking, several word pieces each to a BERT tokenizer, as rare words are).
- labels: 55% the first label (positive-like), 45% the second. Each text carries 1 + Binomial(words, 1/12)
  sentiment words, each of its label's polarity with probability 0.8; 12% of them are negated ("not funny"
  in a negative review). A classifier learns them; the rest of the text is noise.
- repeats: 1.5% of rows are exact copies (text and label) of another row, 0.05% copies of a text with the
  other label (conflicting: ingest quarantines every copy of such a text, the original too).
- bad rows, 0.5% in all, one kind each, as components/data/validation/quarantine.py checks them: empty
  text, whitespace-only text, text shorter than min_chars, text longer than max_chars, U+FFFD in the text
  (a bad decode), a control character in the text, an unknown label, an empty label.
- personal data: 0.05% of rows end with an e-mail address or a URL (data.pii finds them; they pass the
  row checks).
- paragraphs: 0.2% of rows of 30 words or more hold a blank line (a quoted newline in the CSV, as in
  multi-paragraph reviews; `--paragraphs 0` writes one record per line).

The same (rows, seed, options) write the same bytes; the first K rows of a larger corpus are those of a
smaller one (each chunk of CHUNK_ROWS rows has its own generator, seeded by (seed, chunk)), except for
the last, partial chunk of the smaller one. `write_corpus` returns what it wrote, counted, and what an
ingest of the file should report (`expected`; assumes data.pii other than quarantine and refuse, and no
accidental repeats, which are vanishingly rare at these lengths).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

CHUNK_ROWS = 20_000  # ~120 MB of Python strings and numpy arrays at a time
POOL_ROWS = 4_096  # earlier chunks' texts kept as sources of repeats, so that copies also span chunks
POOL_TAKE = 0.05  # the share of a chunk's plain rows that join the pool (it spans the last ~8 chunks)
POOL_SHARE = 0.25  # repeats copying a text of an earlier chunk (the rest copy one of their own chunk)

MEDIAN_WORDS, SIGMA_WORDS, MIN_WORDS, MAX_WORDS = 22, 0.75, 4, 320
SENTENCE_WORDS = 14
COMMA_RATE, QUOTE_RATE = 0.06, 0.006
SENTIMENT_RATE, SENTIMENT_AGREEMENT, NEGATION_RATE = 1 / 12, 0.8, 0.12
FIRST_LABEL_SHARE = 0.55

DUPLICATE_FRACTION = 0.015
CONFLICT_FRACTION = 0.0005
BAD_FRACTION = 0.005
PII_FRACTION = 0.0005
PARAGRAPH_FRACTION = 0.002

BAD_KINDS = ("empty_text", "blank_text", "short_text", "long_text", "undecodable_text", "control_character",
             "unknown_label", "empty_label")
UNKNOWN_LABELS = ("neutral", "mixed", "unrated", "fresh?", "3/5")

FUNCTION_WORDS = """
the a and of to is it in that this with but as for its an on by be was are one more than so at all about from
his her their who what if or has have like just even too very much most out up into there some can only not
isn't doesn't it's there's you your we our they them he she him which when where while how never ever still
also much many such own any every each both few no nor yet then now here through over after before under
again because until though although whose would could should might will may does did been being had were
""".split()
DOMAIN_WORDS = """
film movie story director script cast actor actress performance performances plot ending scene scenes
character characters dialogue camera screen audience audiences comedy drama thriller sequel picture music
score soundtrack minutes hour time life love world family man woman kids work effects action humor moments
tale narrative style tone pace premise material genre documentary star role roles writer writing visuals
images filmmaker filmmakers filmmaking hollywood cinema debut feature romance horror mystery adventure
animation heroes villain hero lead leads ensemble subject portrait journey history people relationship
relationships friendship father mother son daughter brother sister town city war game show book novel
adaptation version remake franchise studio festival screenplay editing cinematography production budget
twist twists climax finale opening sequence sequences series episode emotion emotions idea ideas message
""".split()
NEUTRAL_WORDS = """
makes make made feels feel seems seem gets get takes take tries try looks look comes come goes go know see
watch watching find give gives tells tell plays play shows show turns turn keeps keep wants want thinks
think says say leaves leave becomes become begins brings offers manages needs uses lets puts sets runs
new old long little big own first last young other real whole human american french british visual familiar
strange dark light small large early late full short high low simple modern classic recent final main
certain particular political social personal serious quiet loud slow fast odd rare common general
something nothing everything anything someone everyone way part kind sort lot bit thing things place
year years day days night end side point fact case sense reason room voice face eyes heart mind head
enough almost rather quite really simply perhaps maybe often sometimes always already probably actually
""".split()
POSITIVE_WORDS = """
great brilliant moving funny charming wonderful delightful beautiful beautifully powerful gripping touching
smart witty engaging compelling entertaining remarkable superb masterful stunning thoughtful heartfelt
hilarious satisfying enjoyable best excellent memorable poignant clever rich vivid sharp intelligent warm
affecting exhilarating fascinating graceful inventive irresistible joyous lovely luminous marvelous
absorbing accomplished assured elegant fun gorgeous haunting honest inspired lively original playful
refreshing rewarding sincere sweet terrific thrilling tender winning wise
""".split()
NEGATIVE_WORDS = """
boring dull tedious awful bad worst terrible mess lifeless flat pointless predictable stupid clumsy tiresome
bland forgettable shallow silly lame weak unfunny incoherent painful disappointing mediocre pretentious
tired cliched dreary sloppy hollow listless labored muddled numbing overlong plodding ponderous sluggish
stale tepid trite uninspired unwatchable wooden annoying bloated confused contrived dumb empty inept lazy
limp loud-mouthed messy obnoxious routine sentimental smug soggy sour thin ugly
""".split()
NEGATIONS = ("not", "never", "hardly", "not at all", "far from")

# Made-up words: two or three of these common English syllables and an ending ("caldering", "vintoness").
SYLLABLES = ("ban ber cal can car con cor dan del der fal fer gan gar hal har ker lan lar len lin lo ma man mar "
             "mel mer min mo na nel ner no pan par pel per ra ran rel ren ro sa sal san sel ser son ta tal tan ter "
             "tin to ven ver vin wal war wen win bo da de di ga ha ka ki la le li ne ni pa pe pi re ri se si te ti "
             "ve vi stan bren trel plo gra dre fli cro").split()
ENDINGS = ("", "", "", "", "s", "s", "ed", "ing", "er", "ly", "ion", "ness", "ful", "ity", "ment", "ous", "ish")
TAIL_WORDS = 4_000
ZIPF_EXPONENT = 1.1
VOCABULARY_SEED = 20240607  # the vocabulary is the same for every corpus seed


def _made_up_words(count: int, taken: set[str]) -> list[str]:
    rng = np.random.default_rng(VOCABULARY_SEED)
    words: list[str] = []
    seen = set(taken)
    while len(words) < count:
        syllables = 2 if rng.random() < 0.75 else 3
        word = "".join(SYLLABLES[rng.integers(len(SYLLABLES))] for _ in range(syllables))
        word += ENDINGS[rng.integers(len(ENDINGS))]
        if 4 <= len(word) <= 12 and word not in seen:
            seen.add(word)
            # About one in twelve reads as a name (a character, a director): capitalized wherever it stands.
            words.append(word.capitalize() if rng.random() < 0.08 else word)
    return words


class Vocabulary:
    """The words, their sampling weights, and the sentiment words by polarity (indices into `words`)."""

    def __init__(self) -> None:
        base = list(dict.fromkeys(FUNCTION_WORDS + DOMAIN_WORDS + NEUTRAL_WORDS))
        tail = _made_up_words(TAIL_WORDS, set(base) | set(POSITIVE_WORDS) | set(NEGATIVE_WORDS))
        sampled = base + tail  # in frequency order: function words first, made-up words last
        self.words = sampled + POSITIVE_WORDS + NEGATIVE_WORDS + list(NEGATIONS)
        ranks = np.arange(len(sampled), dtype=np.float64)
        weights = 1.0 / (ranks + 2.7) ** ZIPF_EXPONENT  # Zipf-Mandelbrot
        self.cdf = np.cumsum(weights / weights.sum())
        self.cdf[-1] = 1.0
        self.positive = np.arange(len(sampled), len(sampled) + len(POSITIVE_WORDS))
        self.negative = self.positive[-1] + 1 + np.arange(len(NEGATIVE_WORDS))
        self.negations = self.negative[-1] + 1 + np.arange(len(NEGATIONS))
        self.plain = np.array(self.words, dtype=object)
        self.capitalized = np.array([w[:1].upper() + w[1:] for w in self.words], dtype=object)
        self.quoted = np.array([f'"{w}"' for w in self.words], dtype=object)


_VOCABULARY: Vocabulary | None = None


def vocabulary() -> Vocabulary:
    global _VOCABULARY
    if _VOCABULARY is None:
        _VOCABULARY = Vocabulary()
    return _VOCABULARY


def _texts(rng: np.random.Generator, lengths: np.ndarray, positive: np.ndarray) -> list[str]:
    """One text per row: `lengths` words, sentiment words of the row's polarity (mostly)."""
    vocab = vocabulary()
    n, total = len(lengths), int(lengths.sum())
    ends = np.cumsum(lengths)
    starts = ends - lengths
    tokens = np.searchsorted(vocab.cdf, rng.random(total), side="right")

    # Sentiment words at random places of each row, most of them of the row's polarity; some negated,
    # the word then of the other polarity ("not funny" in a negative review).
    slots = 1 + rng.binomial(lengths, SENTIMENT_RATE)
    row_of_slot = np.repeat(np.arange(n), slots)
    where = starts[row_of_slot] + (rng.random(len(row_of_slot)) * lengths[row_of_slot]).astype(np.int64)
    agrees = rng.random(len(row_of_slot)) < SENTIMENT_AGREEMENT
    cue_positive = positive[row_of_slot] == agrees
    negated = (rng.random(len(row_of_slot)) < NEGATION_RATE) & (where > starts[row_of_slot])
    word_positive = cue_positive ^ negated
    tokens[where] = np.where(word_positive, vocab.positive[rng.integers(len(vocab.positive), size=len(where))],
                             vocab.negative[rng.integers(len(vocab.negative), size=len(where))])
    tokens[where[negated] - 1] = vocab.negations[rng.integers(len(vocab.negations), size=int(negated.sum()))]

    # Sentences: an end every ~14 words and at each row's end, a capital after it; commas and quotes here and there.
    row_end = np.zeros(total, dtype=bool)
    row_end[ends - 1] = True
    sentence_end = (rng.random(total) < 1 / SENTENCE_WORDS) | row_end
    capital = np.zeros(total, dtype=bool)
    capital[1:] = sentence_end[:-1]
    capital[starts] = True
    words = np.where(capital, vocab.capitalized[tokens], vocab.plain[tokens])
    quoted = (rng.random(total) < QUOTE_RATE) & ~capital
    words[quoted] = vocab.quoted[tokens[quoted]]

    marks = rng.random(total)
    stop = np.where(marks < 0.86, ".", np.where(marks < 0.94, "!", np.where(marks < 0.97, "?", "...")))
    suffix = np.full(total, " ", dtype=object)
    suffix[(rng.random(total) < COMMA_RATE) & ~sentence_end] = ", "
    suffix[sentence_end] = np.char.add(stop[sentence_end], " ").astype(object)
    # U+0001 ends each row (never in a text; not NUL, which numpy strips from the end of its strings).
    suffix[row_end] = np.char.add(stop[row_end], "\x01").astype(object)
    texts = "".join((words + suffix).tolist()).split("\x01")
    texts.pop()  # after the last row's mark
    return texts


def _filler(rng: np.random.Generator, characters: int) -> str:
    """Plain text of at least `characters` characters."""
    vocab = vocabulary()
    words: list[str] = []
    size = 0
    while size < characters:
        chunk = vocab.plain[np.searchsorted(vocab.cdf, rng.random(64), side="right")].tolist()
        words += chunk
        size += sum(len(w) + 1 for w in chunk)
    text = " ".join(words)
    return text[:1].upper() + text[1:] + "."


def _bad_row(kind: str, text: str, label: str, rng: np.random.Generator, *, min_chars: int, max_chars: int,
             labels: tuple[str, ...]) -> tuple[str, str]:
    if kind == "empty_text":
        return "", label
    if kind == "blank_text":
        return " " * int(rng.integers(1, 4)) + ("\t" if rng.random() < 0.5 else " "), label
    if kind == "short_text":
        short = [w for w in ("ok", "no", "10", "A+", "!!", "x") if len(w) < min_chars]
        return short[int(rng.integers(len(short)))], label
    if kind == "long_text":
        return _filler(rng, max_chars + int(rng.integers(1, max_chars))), label
    if kind == "undecodable_text":
        at = text.rfind(" ", 0, max(1, len(text) // 2)) + 1
        return text[:at] + "caf\ufffd " + text[at:], label
    if kind == "control_character":
        # ESC and backspace: str.split() does not take them for whitespace, so normalization keeps them.
        return text[:-1] + (" \x1b[0m" if rng.random() < 0.5 else "\x08") + text[-1:], label
    if kind == "unknown_label":
        unknown = [u for u in UNKNOWN_LABELS if u.casefold() not in {x.casefold() for x in labels}]
        return text, unknown[int(rng.integers(len(unknown)))]
    if kind == "empty_label":
        return text, ""
    raise ValueError(kind)


def _with_pii(text: str, rng: np.random.Generator, number: int) -> str:
    words = vocabulary().plain
    name = words[int(rng.integers(300, 1500))].lower()
    if rng.random() < 0.5:
        return f"{text} Write to me at {name}.{number % 997}@example.com for more."
    return f"{text} Full review at https://www.{name}reviews.com/{number}"


def _with_paragraph(text: str) -> str:
    at = text.find(". ", len(text) // 2)
    return text if at < 0 else text[:at + 1] + "\n\n" + text[at + 2:]


def _truncated(text: str, max_chars: int) -> str:
    cut = text.rfind(" ", 0, max_chars - 1)
    return text[:cut if cut > 0 else max_chars - 1].rstrip(",") + "."


def write_corpus(path: Path | str, rows: int, seed: int = 0, *, text_column: str = "text",
                 label_column: str = "category", labels: tuple[str, str] = ("fresh", "rotten"),
                 min_chars: int = 3, max_chars: int = 2000, duplicate_fraction: float = DUPLICATE_FRACTION,
                 conflict_fraction: float = CONFLICT_FRACTION, bad_fraction: float = BAD_FRACTION,
                 pii_fraction: float = PII_FRACTION, paragraph_fraction: float = PARAGRAPH_FRACTION) -> dict:
    """Write `rows` labelled rows to the CSV `path`, CHUNK_ROWS at a time; returns the counts written.

    labels: (positive-like, negative-like) raw labels, as the source file spells them.
    """
    if len(labels) != 2 or labels[0] == labels[1]:
        raise ValueError(f"labels: two distinct labels, positive-like first; got {labels}")
    if rows < 1:
        raise ValueError(f"rows: at least 1; got {rows}")
    started = time.perf_counter()
    vocabulary()
    kinds = [k for k in BAD_KINDS if k != "short_text" or min_chars > 1]
    shares = np.array([duplicate_fraction, conflict_fraction, pii_fraction] + [bad_fraction / len(kinds)] * len(kinds))
    if shares.sum() >= 0.5:
        raise ValueError("the repeat, bad-row and personal-data fractions add up to half the rows or more")
    bounds = np.cumsum(shares)
    roles = ["duplicate", "conflicting", "pii", *kinds]  # role code i + 1; 0: a plain row
    counts: Counter = Counter()
    label_counts: Counter = Counter()
    conflict_sources: set[int] = set()  # global row numbers of texts copied with the other label
    # Sources of repeats from earlier chunks: (global row, text, label). Exact copies come from even rows and
    # conflicting ones from odd rows, so that no text is both (the expected counts stay exact).
    pools: dict[int, list[tuple[int, str, str]]] = {0: [], 1: []}

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([text_column, label_column])
        for chunk, first in enumerate(range(0, rows, CHUNK_ROWS)):
            n = min(CHUNK_ROWS, rows - first)
            rng = np.random.default_rng([seed, chunk])
            lengths = np.clip(np.rint(rng.lognormal(np.log(MEDIAN_WORDS), SIGMA_WORDS, n)), MIN_WORDS,
                              MAX_WORDS).astype(np.int64)
            positive = rng.random(n) < FIRST_LABEL_SHARE
            texts = _texts(rng, lengths, positive)
            row_labels = np.where(positive, labels[0], labels[1]).tolist()
            for i, text in enumerate(texts):
                if len(text) > max_chars:  # the tail of the length distribution with long words: rare
                    texts[i] = _truncated(text, max_chars)
                    counts["truncated_to_max_chars"] += 1
                elif len(text) < min_chars:
                    texts[i] = text + " " + _filler(rng, min_chars)
            role = np.searchsorted(bounds, rng.random(n), side="right") + 1
            role[role > len(roles)] = 0
            plain = np.flatnonzero(role == 0)
            for i in plain[(rng.random(len(plain)) < paragraph_fraction) & (lengths[plain] >= 30)]:
                texts[i] = _with_paragraph(texts[i])
                counts["multiline"] += "\n" in texts[i]
            sources = {parity: plain[(plain + first) % 2 == parity] for parity in (0, 1)}
            for i in np.flatnonzero(role > 0):
                name = roles[role[i] - 1]
                if name in ("duplicate", "conflicting"):
                    parity = 0 if name == "duplicate" else 1
                    pool, own = pools[parity], sources[parity]
                    if pool and (rng.random() < POOL_SHARE or not len(own)):
                        source, text, label = pool[int(rng.integers(len(pool)))]
                    elif len(own):
                        j = int(own[int(rng.integers(len(own)))])
                        source, text, label = first + j, texts[j], row_labels[j]
                    else:
                        continue  # no plain row to copy yet: the row stays plain
                    if name == "conflicting":
                        label = labels[1] if label == labels[0] else labels[0]
                        conflict_sources.add(source)
                    texts[i], row_labels[i] = text, label
                elif name == "pii":
                    texts[i] = _with_pii(texts[i], rng, first + int(i))
                else:
                    texts[i], row_labels[i] = _bad_row(name, texts[i], row_labels[i], rng, min_chars=min_chars,
                                                       max_chars=max_chars, labels=labels)
                counts[name] += 1
            writer.writerows(zip(texts, row_labels))
            label_counts.update(row_labels)
            for parity, own in sources.items():
                take = own[rng.random(len(own)) < POOL_TAKE]
                pools[parity] = (pools[parity] + [(first + int(j), texts[j], row_labels[j]) for j in take])[-POOL_ROWS:]
            counts["words"] += int(lengths.sum())

    bad = {kind: counts[kind] for kind in kinds}
    quarantined = sum(bad.values()) + counts["conflicting"] + len(conflict_sources)
    return {
        "path": str(path),
        "rows": rows,
        "seed": seed,
        "columns": [text_column, label_column],
        "labels": dict(sorted(label_counts.items())),
        "duplicates": counts["duplicate"],
        "conflicting": counts["conflicting"],
        "conflicting_texts": len(conflict_sources),
        "bad": bad,
        "pii": counts["pii"],
        "multiline": counts["multiline"],
        "truncated_to_max_chars": counts["truncated_to_max_chars"],
        "mean_words": round(counts["words"] / rows, 2),
        "bytes": path.stat().st_size,
        "seconds": round(time.perf_counter() - started, 2),
        # What `tunegate ingest` should report for this file: every copy of a conflicting text is quarantined.
        "expected": {"accepted": rows - counts["duplicate"] - quarantined, "duplicates": counts["duplicate"],
                     "quarantined": quarantined},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the CSV to write")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="category")
    parser.add_argument("--labels", nargs=2, default=["fresh", "rotten"], metavar=("POSITIVE", "NEGATIVE"),
                        help="the two raw labels, positive-like first (default: the default project's)")
    parser.add_argument("--min-chars", type=int, default=3, help="data.min_chars (shorter texts are bad rows)")
    parser.add_argument("--max-chars", type=int, default=2000, help="data.max_chars (longer texts are bad rows)")
    parser.add_argument("--duplicates", type=float, default=DUPLICATE_FRACTION, help="share of exact repeats")
    parser.add_argument("--conflicts", type=float, default=CONFLICT_FRACTION,
                        help="share of repeats with the other label")
    parser.add_argument("--bad", type=float, default=BAD_FRACTION, help="share of rows the row checks quarantine")
    parser.add_argument("--pii", type=float, default=PII_FRACTION, help="share of rows with an e-mail or URL")
    parser.add_argument("--paragraphs", type=float, default=PARAGRAPH_FRACTION,
                        help="share of rows (of 30+ words) holding a blank line; 0: one record per line")
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args(argv)
    counts = write_corpus(args.out, args.rows, args.seed, text_column=args.text_column,
                          label_column=args.label_column, labels=tuple(args.labels), min_chars=args.min_chars,
                          max_chars=args.max_chars, duplicate_fraction=args.duplicates,
                          conflict_fraction=args.conflicts, bad_fraction=args.bad, pii_fraction=args.pii,
                          paragraph_fraction=args.paragraphs)
    text = json.dumps(counts, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
