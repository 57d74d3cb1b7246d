"""Drift between the data the model learnt from (the reference) and a new batch, before retraining.

Validation asks whether each row and the batch are sound; drift asks whether the batch still looks
like the reference. Three checks, each a number in [0, 1] compared with a warn and a fail threshold
(params.drift): the label mix, the text lengths, and how much of the text the model's tokenizer
cannot represent at all (its unknown token). Only numpy and pandas are used; the tokenizer is the
caller's (a transformers fast tokenizer).

Token classification (task="token-classification", rows are sentences with `text` the tokens joined
by single spaces and `label` the IOB2 tags joined likewise): the label mix is the share of each
entity type among the entities (B- tags), and the length is the number of tokens per sentence.

Sizes: the label and length checks read every row (about 0.3 s for 1M rows); the OOV check
tokenizes a seeded sample of params.drift.oov_sample_texts texts per side.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from components.config import TOKEN_CLASSIFICATION, DriftParams, DriftThresholds, Task
from components.reports import JsonReport

Status = Literal["ok", "warn", "fail"]
CheckStatus = Literal["ok", "warn", "fail", "skipped"]
SEVERITY: dict[str, int] = {"skipped": 0, "ok": 0, "warn": 1, "fail": 2}
# 1.358 = c(0.05) of the two-sample KS test: at these sample sizes, a statistic this large arises by
# chance one time in twenty. Quoted in the detail so a person can tell noise from drift on small batches.
KS_CRITICAL_COEFFICIENT = 1.358
# The OOV check reads each sampled text's first 512 characters only. The rate is per word piece, and
# 20,000 heads of 512 characters already hold millions of pieces; a text's unknown words are no more
# likely in its tail than in its head. It bounds the cost: measured 2.8M characters/s (tiny WordPiece
# tokenizer, 2 cores), 20,000 long texts take about 3.5 s per side, whole 5,000-character ones ~35 s.
OOV_MAX_CHARS = 512
# Texts per tokenizer call: the piece ids come back as Python lists, so chunks bound the memory.
OOV_CHUNK_TEXTS = 1000


class DriftCheck(BaseModel):
    name: str = Field(description="the DriftParams field holding its thresholds, e.g. 'label_shift'")
    value: float | None = Field(description="the measured drift; None when the check was skipped")
    warn: float
    fail: float
    status: CheckStatus
    detail: str = Field(description="what was measured, in plain words")
    measures: dict[str, float] = Field(default_factory=dict, description="the numbers behind the value")


class DriftReport(JsonReport):
    status: Status
    checks: list[DriftCheck]
    reference_rows: int
    batch_rows: int

    def summary(self) -> str:
        lines = [f"Drift of {self.batch_rows:,} batch rows against {self.reference_rows:,} reference rows: "
                 f"{self.status}"]
        for check in self.checks:
            if check.value is None:
                lines.append(f"- {check.name}: {check.status}: {check.detail}")
            else:
                lines.append(f"- {check.name}: {check.status} ({check.value:.3f}; warn above {check.warn:g}, "
                             f"fail above {check.fail:g}): {check.detail}")
        return "\n".join(lines)



def drift_report(reference: pd.DataFrame, batch: pd.DataFrame, tokenizer: Any, params: DriftParams, *,
                 task: Task = "sequence-classification") -> DriftReport:
    """Compare `batch` with `reference` (both with columns text and label); raises nothing on drift."""
    if task not in ("sequence-classification", TOKEN_CLASSIFICATION):
        raise ValueError(f"unknown task {task!r}")
    if not params.enabled:
        checks = [_skipped(name, params, "drift checks are disabled (drift.enabled is false)")
                  for name in ("label_shift", "length_shift", "oov_increase")]
    elif task == TOKEN_CLASSIFICATION:
        checks = [
            entity_shift_check(reference["label"], batch["label"], params.label_shift),
            token_length_shift_check(reference["text"], batch["text"], params.length_shift),
            oov_check(reference["text"], batch["text"], tokenizer, params),
        ]
    else:
        checks = [
            label_shift_check(reference["label"], batch["label"], params.label_shift),
            length_shift_check(reference["text"], batch["text"], params.length_shift),
            oov_check(reference["text"], batch["text"], tokenizer, params),
        ]
    worst = max((SEVERITY[check.status] for check in checks), default=0)
    status: Status = ("ok", "warn", "fail")[worst]
    return DriftReport(status=status, checks=checks, reference_rows=len(reference), batch_rows=len(batch))


def judge(value: float, thresholds: DriftThresholds) -> CheckStatus:
    """Thresholds are inclusive limits: a value equal to `warn` is still ok."""
    if value > thresholds.fail:
        return "fail"
    if value > thresholds.warn:
        return "warn"
    return "ok"


def _check(name: str, value: float, thresholds: DriftThresholds, detail: str,
           measures: dict[str, float]) -> DriftCheck:
    return DriftCheck(name=name, value=value, warn=thresholds.warn, fail=thresholds.fail,
                      status=judge(value, thresholds), detail=detail, measures=measures)


def _skipped(name: str, params: DriftParams, why: str) -> DriftCheck:
    thresholds: DriftThresholds = getattr(params, name)
    return DriftCheck(name=name, value=None, warn=thresholds.warn, fail=thresholds.fail, status="skipped",
                      detail=why)


def _empty_side(reference: pd.Series, batch: pd.Series, what: str) -> str | None:
    if reference.empty:
        return f"the reference has no {what}"
    if batch.empty:
        return f"the batch has no {what}"
    return None


# --- label mix ------------------------------------------------------------------------------------


def label_shares(labels: pd.Series) -> pd.Series:
    """Share of each label among the non-null labels, indexed by label."""
    return labels.dropna().value_counts(normalize=True)


def total_variation_distance(reference_shares: pd.Series, batch_shares: pd.Series) -> float:
    """Half the summed absolute share differences: the largest share of rows any set of labels
    gained or lost. 0 for the same mix, 1 for no label in common."""
    labels = reference_shares.index.union(batch_shares.index)
    difference = reference_shares.reindex(labels, fill_value=0) - batch_shares.reindex(labels, fill_value=0)
    return float(0.5 * difference.abs().sum())


def label_shift_check(reference_labels: pd.Series, batch_labels: pd.Series, thresholds: DriftThresholds) -> DriftCheck:
    return _share_shift(label_shares(reference_labels), label_shares(batch_labels), thresholds, items="labels",
                        what="the label shares (reference -> batch)")


def _share_shift(reference_shares: pd.Series, batch_shares: pd.Series, thresholds: DriftThresholds, *, items: str,
                 what: str) -> DriftCheck:
    """Total variation distance between two distributions of shares, with every share in the detail."""
    empty = _empty_side(reference_shares, batch_shares, items)
    if empty:
        return DriftCheck(name="label_shift", value=None, warn=thresholds.warn, fail=thresholds.fail,
                          status="skipped", detail=empty)
    distance = total_variation_distance(reference_shares, batch_shares)
    keys = sorted(reference_shares.index.union(batch_shares.index), key=str)
    shares = ", ".join(f"{key} {reference_shares.get(key, 0):.1%} -> {batch_shares.get(key, 0):.1%}" for key in keys)
    detail = f"total variation distance {distance:.3f} between {what}: {shares}"
    measures = {f"reference_share[{key}]": float(reference_shares.get(key, 0)) for key in keys}
    measures |= {f"batch_share[{key}]": float(batch_shares.get(key, 0)) for key in keys}
    return _check("label_shift", distance, thresholds, detail, measures)


def entity_type_shares(tag_strings: pd.Series) -> pd.Series:
    """Share of each entity type among the entities (B- tags) of IOB2 tag strings, indexed by type."""
    from components.entities import entity_type_counts

    counts = pd.Series(entity_type_counts(tag_strings.dropna().tolist()), dtype="float64")
    return counts / counts.sum() if counts.sum() else counts


def entity_shift_check(reference_tags: pd.Series, batch_tags: pd.Series, thresholds: DriftThresholds) -> DriftCheck:
    """Token data: total variation distance between the entity-type shares (each entity = one B- tag)."""
    return _share_shift(entity_type_shares(reference_tags), entity_type_shares(batch_tags), thresholds,
                        items="entities", what="the entity-type shares of the entities (B- tags; reference -> batch)")


# --- text length ----------------------------------------------------------------------------------
#
# The two-sample Kolmogorov-Smirnov statistic rather than a PSI over the reference's length deciles:
# lengths are integers with many ties, so deciles often coincide and the bins collapse, and PSI needs
# an epsilon for empty bins that then decides its value (a batch of only long texts scores anything
# from 2 to 20 depending on it). KS needs no bins or smoothing, is exact with ties, lies in [0, 1]
# like the other two checks, and reads plainly: the largest gap, over all lengths L, between the
# shares of reference and batch texts no longer than L.


def ks_statistic(reference: np.ndarray, batch: np.ndarray) -> float:
    """max over x of |F_reference(x) - F_batch(x)|, the empirical CDFs; both arrays non-empty."""
    reference, batch = np.sort(reference), np.sort(batch)
    # The CDFs only change at observed values, so comparing them there finds the maximum.
    points = np.unique(np.concatenate([reference, batch]))
    cdf_reference = np.searchsorted(reference, points, side="right") / len(reference)
    cdf_batch = np.searchsorted(batch, points, side="right") / len(batch)
    return float(np.max(np.abs(cdf_reference - cdf_batch)))


def text_lengths(texts: pd.Series) -> np.ndarray:
    return texts.dropna().str.len().to_numpy(dtype=np.int64)


def length_shift_check(reference_texts: pd.Series, batch_texts: pd.Series, thresholds: DriftThresholds) -> DriftCheck:
    return _length_shift(text_lengths(reference_texts), text_lengths(batch_texts), thresholds, items="texts",
                         key="chars", unit="characters",
                         what="text lengths in characters (the largest gap between the shares of texts up to "
                              "any one length)")


def _length_shift(reference: np.ndarray, batch: np.ndarray, thresholds: DriftThresholds, *, items: str, key: str,
                  unit: str, what: str) -> DriftCheck:
    """The KS statistic between two samples of lengths, with medians, 90th percentiles and the chance level."""
    empty = _empty_side(pd.Series(reference), pd.Series(batch), items)
    if empty:
        return DriftCheck(name="length_shift", value=None, warn=thresholds.warn, fail=thresholds.fail,
                          status="skipped", detail=empty)
    statistic = ks_statistic(reference, batch)
    chance = KS_CRITICAL_COEFFICIENT * np.sqrt((len(reference) + len(batch)) / (len(reference) * len(batch)))
    measures = {
        f"reference_median_{key}": float(np.median(reference)), f"batch_median_{key}": float(np.median(batch)),
        f"reference_p90_{key}": float(np.percentile(reference, 90)), f"batch_p90_{key}": float(np.percentile(batch, 90)),
        "chance_level": float(chance),
    }
    detail = (f"KS statistic {statistic:.3f} between the {what}; median {measures[f'reference_median_{key}']:,.0f} -> "
              f"{measures[f'batch_median_{key}']:,.0f}, 90th percentile {measures[f'reference_p90_{key}']:,.0f} -> "
              f"{measures[f'batch_p90_{key}']:,.0f} {unit} (reference -> batch); "
              f"noise alone reaches about {chance:.3f} at these sizes")
    return _check("length_shift", statistic, thresholds, detail, measures)


def token_counts(texts: pd.Series) -> np.ndarray:
    """Tokens per sentence of texts that are tokens joined by single spaces."""
    texts = texts.dropna()
    return np.fromiter((len(t.split(" ")) if t else 0 for t in texts), dtype=np.int64, count=len(texts))


def token_length_shift_check(reference_texts: pd.Series, batch_texts: pd.Series,
                             thresholds: DriftThresholds) -> DriftCheck:
    """Token data: the KS statistic between the sentence lengths in tokens."""
    return _length_shift(token_counts(reference_texts), token_counts(batch_texts), thresholds, items="sentences",
                         key="tokens", unit="tokens", what="sentence lengths in tokens")


# --- words the tokenizer cannot represent -----------------------------------------------------------


def sample_texts(texts: pd.Series, size: int, seed: int) -> list[str]:
    """Up to `size` non-null texts, drawn without replacement with `seed` so reruns agree."""
    texts = texts.dropna()
    if len(texts) > size:
        texts = texts.sample(n=size, random_state=seed)
    return [text[:OOV_MAX_CHARS] for text in texts]


def unknown_piece_counts(texts: list[str], tokenizer: Any, unk_id: int) -> tuple[int, int]:
    """(word pieces that are the unknown token, all word pieces) over `texts`, special tokens excluded."""
    unknown = total = 0
    for start in range(0, len(texts), OOV_CHUNK_TEXTS):
        encoded = tokenizer(texts[start:start + OOV_CHUNK_TEXTS], add_special_tokens=False,
                            return_attention_mask=False, return_token_type_ids=False,
                            verbose=False)  # no "longer than the maximum sequence length" warning: not for a model
        for ids in encoded["input_ids"]:
            unknown += ids.count(unk_id)
            total += len(ids)
    return unknown, total


def oov_check(reference_texts: pd.Series, batch_texts: pd.Series, tokenizer: Any, params: DriftParams) -> DriftCheck:
    thresholds = params.oov_increase
    unk_id = getattr(tokenizer, "unk_token_id", None)
    if unk_id is None:
        return _skipped("oov_increase", params, "the tokenizer has no unknown token, so every text can be encoded")
    reference = sample_texts(reference_texts, params.oov_sample_texts, params.seed)
    batch = sample_texts(batch_texts, params.oov_sample_texts, params.seed)
    empty = _empty_side(pd.Series(reference, dtype=object), pd.Series(batch, dtype=object), "texts")
    if empty:
        return _skipped("oov_increase", params, empty)
    reference_unknown, reference_total = unknown_piece_counts(reference, tokenizer, unk_id)
    batch_unknown, batch_total = unknown_piece_counts(batch, tokenizer, unk_id)
    reference_rate = reference_unknown / reference_total if reference_total else 0.0
    batch_rate = batch_unknown / batch_total if batch_total else 0.0
    increase = batch_rate - reference_rate
    unk = getattr(tokenizer, "unk_token", "unknown")
    detail = (f"{batch_rate:.2%} of word pieces are {unk} in the batch vs {reference_rate:.2%} in the reference, "
              f"an increase of {100 * increase:.2f} points (tokenized the first {OOV_MAX_CHARS} characters of "
              f"{len(batch):,} of {batch_texts.notna().sum():,} batch texts and {len(reference):,} of "
              f"{reference_texts.notna().sum():,} reference texts)")
    measures = {"reference_rate": reference_rate, "batch_rate": batch_rate,
                "reference_pieces": float(reference_total), "batch_pieces": float(batch_total)}
    return _check("oov_increase", increase, thresholds, detail, measures)
