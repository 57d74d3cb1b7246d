"""Token classification: the per-sentence checks (no tokens, token/tag counts differ, a token with
whitespace or control characters, a tag outside O/B-/I- of data.labels, an I- tag that continues no
entity), computed in Python into helper columns holding the reason (null when the sentence is fine),
each expected to be all null by GX."""

from __future__ import annotations

import unicodedata
from typing import Any

import numpy as np
import pandas as pd

from components.config import DataParams, iob2_tags
from components.data.validation.report import ISSUE_PREFIX
from components.entities import OUTSIDE, tag_parts

# Token data: the lists ingest passes along, and the column of an official split.
TOKEN_LIST_COLUMNS = ("tokens", "tags")
# Helper columns of the entity-type presence checks: the type when the sentence has such an entity.
ENTITY_PREFIX = "entity_"
ISSUE_EXAMPLES = 3  # bad tokens or tags named in one reason; the rest are counted


def _token_lists(frame: pd.DataFrame) -> tuple[list[Any], list[Any]]:
    """Each row's tokens and tags: the lists ingest passes along, else text and label split on spaces."""
    if all(c in frame.columns for c in TOKEN_LIST_COLUMNS):
        return frame["tokens"].tolist(), frame["tags"].tolist()

    def words(value: Any) -> list[str]:
        return value.split(" ") if isinstance(value, str) and value else []

    return [words(v) for v in frame["text"].tolist()], [words(v) for v in frame["label"].tolist()]


def _more(count: int, what: str) -> str:
    return f" ({count:,} {what} in all)" if count > 1 else ""


def _issue_empty(tokens: list[str], tags: list[str], data: DataParams) -> str | None:
    return "sentence has no tokens" if not tokens else None


def _issue_counts(tokens: list[str], tags: list[str], data: DataParams) -> str | None:
    if len(tokens) == len(tags):
        return None
    return f"sentence has {len(tokens):,} token(s) but {len(tags):,} tag(s); each token needs exactly one tag"


def _bad_character(token: str) -> tuple[int, str] | None:
    for position, char in enumerate(token):
        if char.isspace():
            return position, "whitespace"
        if unicodedata.category(char) == "Cc":
            return position, "a control character"
    return None


def _issue_token_characters(tokens: list[str], tags: list[str], data: DataParams) -> str | None:
    bad = []
    for word, token in enumerate(tokens, start=1):
        if token == "":
            bad.append(f"token at word {word} is empty")
            continue
        found = _bad_character(token)
        if found is not None:
            position, kind = found
            bad.append(f"token {token[:40]!r} at word {word} contains {kind} "
                       f"(U+{ord(token[position]):04X} at character {position + 1})")
    if not bad:
        return None
    return "; ".join(bad[:ISSUE_EXAMPLES]) + _more(len(bad), "bad tokens") + (
        "; a token is one word without whitespace or control characters")


def _issue_tag_set(tokens: list[str], tags: list[str], data: DataParams) -> str | None:
    known = set(iob2_tags(list(data.labels)))
    bad = [f"tag {tag!r} at word {word}" for word, tag in enumerate(tags, start=1) if tag not in known]
    if not bad:
        return None
    return (", ".join(bad[:ISSUE_EXAMPLES]) + _more(len(bad), "unknown tags")
            + f" not among the tags of data.labels {list(data.labels)} (O, B-X, I-X)")


def _issue_iob2(tokens: list[str], tags: list[str], data: DataParams) -> str | None:
    bad = []
    previous = None
    for word, tag in enumerate(tags, start=1):
        prefix, kind = tag_parts(tag)
        if prefix == "I":
            before = tag_parts(previous) if previous is not None else (OUTSIDE, None)
            if before[0] not in ("B", "I") or before[1] != kind:
                after = f"follows {previous!r}" if previous is not None else "starts the sentence"
                bad.append(f"tag {tag!r} at word {word} {after}")
        previous = tag
    if not bad:
        return None
    return ("; ".join(bad[:ISSUE_EXAMPLES]) + _more(len(bad), "broken entities")
            + "; in IOB2 an I-X tag must follow B-X or I-X")


# check name -> (description, reason of one sentence or None)
TOKEN_ISSUES = {
    "sentence_not_empty": ("every sentence has at least one token", _issue_empty),
    "tokens_match_tags": ("every sentence has as many tags as tokens", _issue_counts),
    "token_characters": ("no token is empty or contains whitespace or control characters", _issue_token_characters),
    "tags_in_tag_set": ("every tag is O or B-/I- of a type in data.labels", _issue_tag_set),
    "iob2_consistent": ("every I-X tag follows B-X or I-X (IOB2)", _issue_iob2),
}
DATASET_TOKEN_CHECKS = tuple(TOKEN_ISSUES)


def token_issue_columns(frame: pd.DataFrame, data: DataParams, names: tuple[str, ...]) -> pd.DataFrame:
    """One helper column per check in `names`: each row's reason, or None when it passes."""
    all_tokens, all_tags = _token_lists(frame)
    columns: dict[str, list[str | None]] = {ISSUE_PREFIX + name: [] for name in names}
    issues = [(ISSUE_PREFIX + name, TOKEN_ISSUES[name][1]) for name in names]
    for tokens, tags in zip(all_tokens, all_tags):
        tokens = list(tokens) if isinstance(tokens, (list, tuple, np.ndarray)) else []
        tags = list(tags) if isinstance(tags, (list, tuple, np.ndarray)) else []
        for column, issue in issues:
            columns[column].append(issue(tokens, tags, data))
    return pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in columns.items()},
                        index=frame.index)


def entity_type_columns(frame: pd.DataFrame, data: DataParams) -> pd.DataFrame:
    """entity_<TYPE>: the type on each sentence with an entity of it (a B-TYPE tag), else None."""
    _, all_tags = _token_lists(frame)
    begins = [{tag[2:] for tag in tags if isinstance(tag, str) and tag.startswith("B-")}
              if isinstance(tags, (list, tuple, np.ndarray)) else set() for tags in all_tags]
    return pd.DataFrame({ENTITY_PREFIX + kind: pd.Series([kind if kind in found else None for found in begins],
                                                         dtype=object)
                         for kind in data.labels}, index=frame.index)
