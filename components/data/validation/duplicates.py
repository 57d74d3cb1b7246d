"""Which rows are the same text: the duplicate and conflicting-label flags shared by the dataset suite,
the batch checks and ingest.

Sequence data: the key is the id (the hash of the normalized text), so texts that differ only in
case, spacing or invisible characters collide. Token data: the sentence text itself, and rows of an
official split (column `split` not empty) are never flagged, since the official data keeps each
occurrence."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

# Helper columns added to the frame for the group-by checks.
DUPLICATE_FLAG = "is_duplicate_text"
CONFLICT_FLAG = "has_conflicting_label"
SPLIT_COLUMN = "split"


def duplicate_key(frame: pd.DataFrame, token_task: bool = False) -> pd.Series | None:
    # The id is the hash of the normalized text: texts that differ only in case or spacing collide.
    # Token data: ids of official-split rows are not the text's hash, so the sentence itself is the key.
    if "id" in frame.columns and not (token_task and "text" in frame.columns):
        return frame["id"]
    return frame["text"] if "text" in frame.columns else None


def official_rows(frame: pd.DataFrame, token_task: bool) -> np.ndarray:
    """Rows of an official split: never duplicates, never conflicting (the official data keeps them)."""
    if not token_task or SPLIT_COLUMN not in frame.columns:
        return np.zeros(len(frame), dtype=bool)
    return (frame[SPLIT_COLUMN].fillna("").astype(str) != "").to_numpy()


def with_duplicate_flags(frame: pd.DataFrame, token_task: bool = False) -> pd.DataFrame:
    key = duplicate_key(frame, token_task)
    if key is None:
        return frame
    official = official_rows(frame, token_task)
    helpers = {DUPLICATE_FLAG: key.duplicated(keep="first") & ~official}  # the first occurrence is not a duplicate
    if "label" in frame.columns:
        helpers[CONFLICT_FLAG] = conflicting_label_flags(key, frame["label"]) & ~official
    return frame.assign(**helpers)


def conflicting_label_flags(key: pd.Series, labels: pd.Series) -> pd.Series:
    """True on every row whose text also appears with another label (all rows of the group)."""
    pairs = pd.DataFrame({"key": key, "label": labels}).dropna(subset=["label"]).drop_duplicates()
    conflicting_keys = pairs.loc[pairs["key"].duplicated(keep=False), "key"]
    # drop_duplicates + isin is about twice as fast as groupby().transform("nunique") on 1M rows.
    return key.isin(conflicting_keys.unique())


# --- at ingest: one rule for repeats, within a batch and across batches ----------------------------

CONFLICT_CHECK = "conflicting_labels"
CONFLICT_EXPECTATION = "one label per text"
REASON_ROWS_SHOWN = 5


@dataclass(frozen=True)
class RepeatedTexts:
    """A batch's clean rows, each in exactly one frame (all keep the batch's index)."""

    unique: pd.DataFrame  # rows to add: first copy of each text, and texts the dataset does not have
    duplicates: pd.DataFrame  # same text and label as an earlier row of the batch or a row of the dataset
    conflicting: pd.DataFrame  # every copy of a text that has more than one label; plus check, expectation, reason


def separate_repeated_texts(batch: pd.DataFrame, existing: pd.DataFrame, *, token_task: bool) -> RepeatedTexts:
    """Exact repeats with the same label are duplicates: counted, not added (the first copy in the
    batch is kept unless the dataset already has the text). Texts whose copies disagree on the label,
    in the batch or against the dataset, are conflicting: every copy in the batch is set aside with a
    reason naming the labels and rows, and the dataset's copy stays as it was. Rows of an official
    split are neither (the official data keeps each occurrence)."""
    key = duplicate_key(batch, token_task)
    existing_key = duplicate_key(existing, token_task) if len(existing) else None
    judged = ~official_rows(batch, token_task) & key.notna().to_numpy()
    if existing_key is None or "label" not in existing.columns:
        existing_key, existing_labels = key.iloc[:0], batch["label"].iloc[:0]
    else:
        existing_labels = existing["label"]
    pairs = pd.DataFrame({"key": pd.concat([key[judged], existing_key], ignore_index=True),
                          "label": pd.concat([batch["label"][judged], existing_labels], ignore_index=True)})
    pairs = pairs.dropna().drop_duplicates()
    conflict_keys = pairs.loc[pairs["key"].duplicated(keep=False), "key"].unique()
    conflicting = judged & key.isin(conflict_keys).to_numpy()
    candidates = judged & ~conflicting
    repeated = pd.Series(False, index=batch.index)
    repeated[candidates] = key[candidates].duplicated(keep="first") | key[candidates].isin(existing_key)
    duplicate = repeated.to_numpy()
    return RepeatedTexts(
        unique=batch[~conflicting & ~duplicate],
        duplicates=batch[duplicate],
        conflicting=conflict_reasons(batch[conflicting], key[conflicting], existing, existing_key),
    )


def conflict_reasons(rows: pd.DataFrame, key: pd.Series, existing: pd.DataFrame,
                           existing_key: pd.Series) -> pd.DataFrame:
    if rows.empty:
        return rows.assign(check=pd.Series(dtype=str), expectation=pd.Series(dtype=str),
                           reason=pd.Series(dtype=str))
    known = existing[existing_key.isin(key.unique())] if len(existing_key) else existing.iloc[:0]
    known_labels = known.groupby(existing_key[known.index])["label"].agg(lambda s: sorted(set(map(str, s))))
    reasons = {}
    for value, group in rows.groupby(key, sort=False):
        labels = sorted({str(label) for label in group["label"]} | set(known_labels.get(value, [])))
        where = _rows_text(group)
        before = known_labels.get(value)
        reasons[value] = (f"this text has labels {labels}: {where} of this batch"
                          + (f", {before} in the dataset already" if before else "")
                          + "; every copy in the batch is set aside until the text has one label")
    return rows.assign(check=CONFLICT_CHECK, expectation=CONFLICT_EXPECTATION, reason=key.map(reasons))


def _rows_text(group: pd.DataFrame) -> str:
    if "source_row" not in group.columns:
        return f"{len(group)} row(s)"
    shown = [f"row {row} ({label})" for row, label in zip(group["source_row"].head(REASON_ROWS_SHOWN), group["label"])]
    more = f" and {len(group) - REASON_ROWS_SHOWN} more" if len(group) > REASON_ROWS_SHOWN else ""
    return ", ".join(shown) + more


# --- the same flags from 64-bit hashes: a group-by over millions of rows without holding them ----------
# The chunked validate stage (components.data.validation.chunked) keeps only each row's key and label as
# hashes (16 bytes a row, with the official-split mask 17) and computes every row's flags from them:
# with_duplicate_flags on these rows gives the same flags.

NULL_HASH = np.uint64(0)  # a null key or label; value_hashes moves a value that hashes to 0 to 1
_MAX_HASH = np.iinfo(np.uint64).max


def value_hashes(values: pd.Series) -> np.ndarray:
    """Each value's 64-bit hash (pandas' hash_array: SipHash of its UTF-8 text), the same in every chunk;
    NULL_HASH for every null, so that nulls are one key, as duplicated() and isin() group them."""
    hashes = pd.util.hash_array(values.to_numpy(dtype=object))
    hashes[hashes == NULL_HASH] = 1
    hashes[values.isna().to_numpy()] = NULL_HASH
    return hashes


def flag_inputs(frame: pd.DataFrame, token_task: bool = False
                ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """What flag_arrays needs of these rows: the key hashes (None when the frame has no key column), the
    label hashes (None without a label column) and the official-split mask."""
    key = duplicate_key(frame, token_task)
    if key is None:
        return None, None, official_rows(frame, token_task)
    labels = value_hashes(frame["label"]) if "label" in frame.columns else None
    return value_hashes(key), labels, official_rows(frame, token_task)


def flag_arrays(keys: np.ndarray, labels: np.ndarray | None = None,
                official: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """with_duplicate_flags' helper columns as bool arrays, from flag_inputs' hashes of all rows in dataset
    order: a row is a duplicate when an earlier row has its key, conflicting when the rows with its key carry
    more than one distinct non-null label; rows of an official split are neither."""
    order, starts = sorted_groups(keys)
    duplicate = np.empty(len(keys), dtype=bool)
    duplicate[order] = ~starts  # a stable sort: the first row of each run is the first occurrence
    flags = {DUPLICATE_FLAG: duplicate}
    if labels is not None:
        flags[CONFLICT_FLAG] = conflicting_rows(labels, order, starts)
    if official is not None:
        for flag in flags.values():
            flag &= ~official
    return flags


# Sorted positions handled at once by the group functions below: their temporary arrays are this long, never
# as long as the dataset (a sorted copy of five million keys would be 40 MB more at the peak).
GROUP_BLOCK = 1 << 20


def sorted_groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): the stable order that sorts `keys`, and whether each sorted position starts a run of
    equal keys. 9 bytes a row, the keys compared a block at a time."""
    order = np.argsort(keys, kind="stable")
    starts = np.empty(len(keys), dtype=bool)
    starts[:1] = True
    for begin in range(1, len(keys), GROUP_BLOCK):
        end = min(begin + GROUP_BLOCK, len(keys))
        np.not_equal(keys[order[begin:end]], keys[order[begin - 1:end - 1]], out=starts[begin:end])
    return order, starts


def spread_over_groups(order: np.ndarray, starts: np.ndarray,
                       group_value: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> np.ndarray:
    """A bool per row: group_value(rows, first) of its group of equal keys, where `rows` are a block of whole
    groups' row positions in sorted order and `first` where each group starts in it (one value per group)."""
    spread = np.zeros(len(order), dtype=bool)
    begin = 0
    while begin < len(order):
        end = _block_end(starts, begin + GROUP_BLOCK)
        rows = order[begin:end]
        first = np.flatnonzero(starts[begin:end])
        spread[rows] = np.repeat(group_value(rows, first), np.diff(np.append(first, end - begin)))
        begin = end
    return spread


def _block_end(starts: np.ndarray, at: int) -> int:
    """The first group start at or after `at`: blocks end between groups."""
    if at >= len(starts):
        return len(starts)
    rest = starts[at:]
    found = int(np.argmax(rest))
    return at + found if rest[found] else len(starts)


def conflicting_rows(labels: np.ndarray, order: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Whether each row's group of equal keys (sorted_groups' order and starts) holds two different labels."""
    return spread_over_groups(order, starts, lambda rows, first: _labels_differ(labels[rows], first))


def _labels_differ(sorted_labels: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Per group of label hashes (in a copy, grouped): whether it holds two different non-null labels, its
    highest label above its lowest."""
    highest = np.maximum.reduceat(sorted_labels, first)  # a null (0) is never above a label
    sorted_labels[sorted_labels == NULL_HASH] = _MAX_HASH  # nor, here, below one
    return highest > np.minimum.reduceat(sorted_labels, first)
