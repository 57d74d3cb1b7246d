"""Paired comparison of two models scored on the same test rows, for the gate's vs_champion, slice and
no-forgetting checks: the bootstrap interval of the difference of a metric, McNemar's exact test for
accuracy, and how many rows a conclusive comparison would need. Pure: per-row outcomes in, figures out.

Why paired: both models answer the same rows, so most rows are right (or wrong) for both and cancel; the
difference is decided by the discordant rows alone. Resampling rows (sentences for NER) once for both
models keeps that pairing, and its interval is far narrower than two separate intervals would suggest.

Per-row outcomes, as components/export/scoring.py writes them under OUTCOMES in a model's metrics:
- classification, one entry per test row: {"unit": "row", "ids", "labels", "actual", "predicted"}, labels
  as indices into "labels" (-1: an actual label outside them, which no prediction can match);
- token classification, one entry per sentence: {"unit": "sentence", "ids", "kinds", "true_positive",
  "false_positive", "false_negative" (entities, exact span and type, as entity_scores counts them), the
  same per entity type in "<count>_by_kind" ([sentence][kind]), "correct_tokens", "tokens"};
- "slices": {name: [positions of the slice's rows in "ids"]} when evaluate.slices is set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

OUTCOMES = "outcomes"  # the key of the per-row outcomes in a model's metrics
CompareMetric = Literal["accuracy", "macro_f1", "entity_f1"]
ENTITY_COUNTS = ("true_positive", "false_positive", "false_negative")


class PairingError(ValueError):
    """The two models' outcomes are not on the same rows: comparing them row by row would be wrong."""


class MetricUnavailable(ValueError):
    """The outcomes cannot give this metric (entity F1 of a classifier, say)."""


class McNemar(BaseModel):
    model_config = ConfigDict(frozen=True)

    champion_only_right: int  # rows the champion got right and the challenger wrong
    challenger_only_right: int  # and the other way round
    p_value: float  # exact two-sided: the discordant rows split as by a fair coin?


class PairedComparison(BaseModel):
    """The difference (champion - challenger: positive when the challenger is worse) of a metric on the same
    rows, with its paired percentile bootstrap interval."""

    model_config = ConfigDict(frozen=True)

    metric: str
    champion: float
    challenger: float
    difference: float
    low: float
    high: float
    confidence: float
    resamples: int
    seed: int
    n: int
    # Classification accuracy only: the discordant rows and McNemar's exact p.
    champion_only_right: int | None = None
    challenger_only_right: int | None = None
    mcnemar_p: float | None = None
    # When the interval is wider (either side) than the margin judged against: the rows that would narrow it
    # to the margin. None when it is narrow enough, or no margin was given.
    rows_needed: int | None = None

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class CountTable:
    """Per row, the counts whose sums over any multiset of rows give the metric: accuracy from correct and
    total, F1 from true positives, false positives and false negatives. A resample is then a weighted sum."""

    counts: np.ndarray  # [rows, columns]
    score: Callable[[np.ndarray], np.ndarray]  # column sums [..., columns] -> metric [...]


def without_outcomes(metrics: dict) -> dict:
    """The metrics without their per-row outcomes: what is logged, tagged and shown to people."""
    return {key: value for key, value in metrics.items() if key != OUTCOMES}


def check_paired(champion: dict, challenger: dict) -> None:
    """Raise PairingError unless both outcomes are of the same rows in the same order."""
    if champion.get("unit") != challenger.get("unit"):
        raise PairingError(f"the champion's outcomes are per {champion.get('unit')}, the challenger's per "
                           f"{challenger.get('unit')}")
    for classes in ("labels", "kinds"):  # the same index must mean the same label in both
        if champion.get(classes) != challenger.get(classes):
            raise PairingError(f"the champion's outcomes are of the {classes} {champion.get(classes)}, the "
                               f"challenger's of {challenger.get(classes)}")
    ours, theirs = list(challenger["ids"]), list(champion["ids"])
    if ours == theirs:
        return
    if len(ours) != len(theirs):
        raise PairingError(f"the challenger was scored on {len(ours)} rows, the champion on {len(theirs)}")
    first = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
    what = "the same rows in another order" if sorted(ours) == sorted(theirs) else "other rows"
    raise PairingError(f"the champion's outcomes are of {what}: row {first} is id {theirs[first]!r} for the champion, "
                       f"{ours[first]!r} for the challenger")


def slice_positions(outcomes: dict, name: str) -> list[int] | None:
    """The positions of a slice's rows in the outcomes, None when the outcomes do not record the slice."""
    found = (outcomes.get("slices") or {}).get(name)
    return None if found is None else [int(i) for i in found]


# --- metrics from counts ---------------------------------------------------------------------------------

def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (zero_division=0, as the metrics are computed)."""
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros(np.broadcast(numerator, denominator).shape),
                     where=denominator > 0)


def f1_from_counts(true_positive: np.ndarray, false_positive: np.ndarray, false_negative: np.ndarray) -> np.ndarray:
    """2PR / (P + R), written as 2TP / (2TP + FP + FN): the same number, defined (0) when nothing was found."""
    return _divide(2 * true_positive, 2 * true_positive + false_positive + false_negative)


def _macro_f1(kinds: int, present_only: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Sums laid out as [tp per kind, fp per kind, fn per kind] -> the mean F1 over the kinds; present_only:
    over the kinds that occur (gold or predicted) in the rows summed, as slice figures average."""
    def score(sums: np.ndarray) -> np.ndarray:
        tp, fp, fn = sums[..., :kinds], sums[..., kinds:2 * kinds], sums[..., 2 * kinds:]
        f1 = f1_from_counts(tp, fp, fn)
        if not present_only:
            return f1.sum(axis=-1) / kinds if kinds else np.zeros(f1.shape[:-1])
        return _divide(f1.sum(axis=-1), ((tp + fp + fn) > 0).sum(axis=-1))
    return score


def _ratio(sums: np.ndarray) -> np.ndarray:
    return _divide(sums[..., 0], sums[..., 1])


def _entity_f1(sums: np.ndarray) -> np.ndarray:
    return f1_from_counts(sums[..., 0], sums[..., 1], sums[..., 2])


def correct_rows(outcomes: dict) -> np.ndarray:
    """Classification: whether each row's prediction is its actual label."""
    return np.asarray(outcomes["actual"]) == np.asarray(outcomes["predicted"])


def _classification_table(outcomes: dict, metric: str, present_only: bool) -> CountTable:
    actual = np.asarray(outcomes["actual"], dtype=np.int64)
    predicted = np.asarray(outcomes["predicted"], dtype=np.int64)
    if metric == "accuracy":
        return CountTable(np.column_stack([actual == predicted, np.ones(len(actual))]).astype(np.float64), _ratio)
    if metric != "macro_f1":
        raise MetricUnavailable(f"a classifier's outcomes give accuracy and macro_f1, not {metric}")
    kinds = np.arange(len(outcomes["labels"]))
    gold, guessed = actual[:, None] == kinds, predicted[:, None] == kinds  # [rows, labels]
    true_positive = gold & guessed
    counts = np.hstack([true_positive, guessed & ~gold, gold & ~guessed]).astype(np.float64)
    return CountTable(counts, _macro_f1(len(kinds), present_only))


def _token_table(outcomes: dict, metric: str) -> CountTable:
    if metric == "accuracy":  # word-level, as entity_scores reports it
        return CountTable(np.column_stack([outcomes["correct_tokens"], outcomes["tokens"]]).astype(np.float64), _ratio)
    if metric == "entity_f1":
        return CountTable(np.column_stack([outcomes[name] for name in ENTITY_COUNTS]).astype(np.float64), _entity_f1)
    if metric != "macro_f1":
        raise MetricUnavailable(f"a token classifier's outcomes give accuracy, entity_f1 and macro_f1, not {metric}")
    kinds = len(outcomes["kinds"])
    # entity_scores averages per-type F1 over every entity type, present or not.
    by_kind = [np.asarray(outcomes[f"{name}_by_kind"], dtype=np.float64).reshape(-1, kinds) for name in ENTITY_COUNTS]
    return CountTable(np.hstack(by_kind), _macro_f1(kinds, present_only=False))


def count_table(outcomes: dict, metric: CompareMetric, present_only: bool = False) -> CountTable:
    """The per-row counts of `metric` in one model's outcomes. present_only (classification macro-F1 on a
    slice): average over the labels that occur in the rows, as components/model/slices.py does."""
    if outcomes.get("unit") == "sentence":
        return _token_table(outcomes, metric)
    return _classification_table(outcomes, metric, present_only)


def metric_value(outcomes: dict, metric: CompareMetric, rows: Sequence[int] | None = None,
                 present_only: bool = False) -> float:
    """The metric on all rows (or on `rows`) from the outcomes: the bootstrap's point value."""
    table = count_table(outcomes, metric, present_only)
    counts = table.counts if rows is None else table.counts[np.asarray(rows, dtype=np.int64)]
    return float(table.score(counts.sum(axis=0)))


# --- resampling ------------------------------------------------------------------------------------------

RESAMPLE_CHUNK_ROWS = 4_000_000  # drawn row indices held at once when rows are drawn one by one (32 MB)

def resample_weights(groups: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples, groups] how many of n rows drawn with replacement fall in each group (group sizes in `groups`).

    Rows with the same counts for both models are interchangeable, so only these per-group counts matter. Few
    groups (accuracy has at most 4): one multinomial draw each, far cheaper than drawing rows. Many groups:
    draw the rows' indices and count them per group. Both are the same distribution."""
    n, size = int(groups.sum()), len(groups)
    if size <= max(16, n // 8):
        return rng.multinomial(n, groups / n, size=resamples).astype(np.float64)
    owner = np.repeat(np.arange(size), groups)  # the group of each row
    weights = np.empty((resamples, size), dtype=np.float64)
    # In chunks of resamples: the drawn indices of all at once take resamples x n integers (1 GB past 60k rows).
    chunk = max(1, min(resamples, RESAMPLE_CHUNK_ROWS // max(n, 1)))
    for start in range(0, resamples, chunk):
        count = min(chunk, resamples - start)
        drawn = owner[rng.integers(0, n, size=(count, n))]
        offsets = (np.arange(count) * size)[:, None]
        weights[start:start + count] = np.bincount((drawn + offsets).ravel(), minlength=count * size).reshape(count, size)
    return weights


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def rows_needed(n: int, half_width: float, margin: float) -> int | None:
    """Rows for the interval's half-width to shrink to `margin` (it scales as 1/sqrt(n)); None when it already
    has, or with no margin to reach."""
    if margin <= 0 or half_width <= margin:
        return None
    return math.ceil(n * (half_width / margin) ** 2)


def mcnemar_exact(champion_right: np.ndarray, challenger_right: np.ndarray) -> McNemar:
    """McNemar's exact test: under "equally accurate", each discordant row is the champion's with probability
    1/2, so the smaller count is binomial(discordant, 1/2); two-sided p = 2 P(X <= smaller), capped at 1."""
    from scipy.stats import binom

    champion_right, challenger_right = np.asarray(champion_right, dtype=bool), np.asarray(challenger_right, dtype=bool)
    champion_only = int((champion_right & ~challenger_right).sum())
    challenger_only = int((challenger_right & ~champion_right).sum())
    discordant = champion_only + challenger_only
    p_value = 1.0 if discordant == 0 else min(1.0, 2 * float(binom.cdf(min(champion_only, challenger_only),
                                                                        discordant, 0.5)))
    return McNemar(champion_only_right=champion_only, challenger_only_right=challenger_only, p_value=p_value)


def paired_bootstrap(champion: dict, challenger: dict, metric: CompareMetric, *, rows: Sequence[int] | None = None,
                     confidence: float = 0.95, resamples: int = 2000, seed: int = 0, margin: float | None = None,
                     present_only: bool = False) -> PairedComparison:
    """The difference champion - challenger of `metric` on the same rows (all, or the positions in `rows`),
    and its percentile interval over `resamples` resamples of those rows, each the same for both models.

    champion, challenger: the models' outcomes (OUTCOMES in their metrics); raises PairingError when they are
    not of the same rows. margin: the allowed difference, for rows_needed."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence}: a share between 0 and 1")
    check_paired(champion, challenger)
    theirs = count_table(champion, metric, present_only)
    ours = count_table(challenger, metric, present_only)
    positions = np.arange(len(challenger["ids"])) if rows is None else np.asarray(rows, dtype=np.int64)
    both = np.hstack([theirs.counts[positions], ours.counts[positions]])
    width = theirs.counts.shape[1]
    champion_value, challenger_value = (float(theirs.score(both[:, :width].sum(axis=0))),
                                        float(ours.score(both[:, width:].sum(axis=0))))
    n = len(positions)
    low = high = champion_value - challenger_value
    if n:
        patterns, groups = np.unique(both, axis=0, return_counts=True)
        sums = resample_weights(groups, resamples, np.random.default_rng(seed)) @ patterns
        low, high = percentile_interval(theirs.score(sums[:, :width]) - ours.score(sums[:, width:]), confidence)
    discordance = {}
    if metric == "accuracy" and champion.get("unit") == "row":
        test = mcnemar_exact(correct_rows(champion)[positions], correct_rows(challenger)[positions])
        discordance = {"champion_only_right": test.champion_only_right,
                       "challenger_only_right": test.challenger_only_right, "mcnemar_p": test.p_value}
    return PairedComparison(
        metric=metric, champion=champion_value, challenger=challenger_value,
        difference=champion_value - challenger_value, low=low, high=high, confidence=confidence,
        resamples=resamples, seed=seed, n=n, **discordance,
        rows_needed=None if margin is None else rows_needed(n, (high - low) / 2, margin))
