"""Ingest a chunk of rows at a time: the same files, counts and reports as sorting the batch whole, and the repeat
rules on hashes the same as on frames."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.config import DataParams
from components.data.batch_sort import DUPLICATE, UNIQUE, DatasetIndex, RepeatHashes
from components.data.ingest import DataStore, RawSource, ingest_batch
from components.data.readers import read_labelled_file
from components.data.validation import duplicates
from components.data.validation.duplicates import separate_repeated_texts, value_hashes

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "synthetic_corpus.py"
DATA = DataParams(source="corpus.csv", label_column="category", label_map={"fresh": "positive", "rotten": "negative"},
                  labels=["negative", "positive"], pii="quarantine", max_quarantine_fraction=0.5)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("synthetic_corpus", SCRIPT)
    corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(corpus)
    folder = tmp_path_factory.mktemp("corpora")
    shares = {"duplicate_fraction": 0.05, "conflict_fraction": 0.01, "bad_fraction": 0.03, "pii_fraction": 0.02}
    corpus.write_corpus(folder / "base.csv", 1_500, seed=1, **shares)
    corpus.write_corpus(folder / "more.csv", 1_200, seed=2, **shares)
    # A batch of texts the dataset has: half with the same label (duplicates), every 5th with the other (conflicts).
    base = pd.read_csv(folder / "base.csv", dtype=str, keep_default_na=False).iloc[:600]
    base.loc[base.index[::5], "category"] = base["category"].iloc[::5].map({"fresh": "rotten", "rotten": "fresh"})
    base.to_csv(folder / "again.csv", index=False)
    return folder


def source(path: Path) -> RawSource:
    # A frame-held source, cut into chunks by RawSource.chunks: the rows a streamed file would give.
    return RawSource(read_labelled_file(path, DATA), f"{path.name}@test", str(path))


def ingest_all(corpora: Path, data_dir: Path, chunk_rows: int) -> list:
    store = DataStore(data_dir)
    return [ingest_batch(source(corpora / name), DATA, store, base=name == "base.csv", chunk_rows=chunk_rows)
            for name in ("base.csv", "more.csv", "again.csv")]


def files(data_dir: Path) -> dict[str, bytes]:
    found = {str(p.relative_to(data_dir)): p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file()}
    manifest = json.loads(found.pop("manifest.json"))
    for batch in manifest["batches"]:
        batch.pop("ingested_at")
    return found | {"manifest.json": json.dumps(manifest).encode()}


def test_chunked_ingest_writes_the_same_bytes_as_one_chunk(corpora, tmp_path):
    whole = ingest_all(corpora, tmp_path / "whole", chunk_rows=100_000)
    chunked = ingest_all(corpora, tmp_path / "chunked", chunk_rows=97)
    assert files(tmp_path / "whole") == files(tmp_path / "chunked")
    for one, other in zip(whole, chunked):
        assert (one.dataset_rows, one.label_counts) == (other.dataset_rows, other.label_counts)
    base, more, again = chunked
    for result in chunked:  # every row in exactly one place
        batch = result.batch
        assert batch.rows_read == batch.accepted + batch.quarantined + batch.duplicates
    assert base.batch.pii["rows_with_pii"] > 0 and base.batch.duplicates > 0
    quarantined = pd.read_csv(tmp_path / "chunked" / again.batch.quarantine_file, keep_default_na=False)
    conflicting = quarantined[quarantined["check"] == "conflicting_labels"]
    # Every 5th of 600 rows took the other label: each is set aside, and its reason names the dataset's label.
    assert conflicting["reason"].str.contains("in the dataset already").sum() >= 100
    assert again.batch.duplicates > 300


def test_a_failing_batch_leaves_no_files_and_no_scratch(corpora, tmp_path):
    strict = DATA.model_copy(update={"max_quarantine_fraction": 0.001})
    store = DataStore(tmp_path / "data")
    with pytest.raises(Exception, match="max_quarantine_fraction"):
        ingest_batch(source(corpora / "base.csv"), strict, store, base=True, chunk_rows=200)
    assert not (tmp_path / "data" / "batches").exists() and not store.batches()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # the scratch folder beside data/ is gone


@pytest.mark.parametrize("seed,block", [(0, 3), (1, 7), (2, 1 << 20)])
def test_repeat_verdicts_on_hashes_are_the_rules_on_frames(seed, block, monkeypatch):
    # Small blocks: groups of equal texts run across the blocks that sorted_groups and spread_over_groups take.
    monkeypatch.setattr(duplicates, "GROUP_BLOCK", block)
    rng = np.random.default_rng(seed)
    texts = [f"text {i}" for i in range(40)]

    def frame(rows: int) -> pd.DataFrame:
        chosen = rng.choice(texts, size=rows)
        return pd.DataFrame({"id": [f"{abs(hash(t)) % 16**16:016x}" for t in chosen], "text": chosen,
                             "label": rng.choice(["a", "b"], size=rows, p=[0.9, 0.1]),
                             "source_row": np.arange(2, rows + 2)})

    batch, existing = frame(120), frame(30)
    expected = separate_repeated_texts(batch, existing, token_task=False)
    index = DatasetIndex(value_hashes(existing["id"]), value_hashes(existing["label"]), None, len(existing))
    repeats = RepeatHashes()
    for start in range(0, len(batch), 50):  # gathered in chunks, as ingest gathers them
        repeats.add(batch.iloc[start:start + 50], token_task=False)
    verdicts = repeats.verdicts(index)
    assert list(np.flatnonzero(verdicts == UNIQUE)) == list(expected.unique.index)
    assert list(np.flatnonzero(verdicts == DUPLICATE)) == list(expected.duplicates.index)
    assert 0 < len(expected.conflicting) < len(batch)
    flags = duplicates.flag_arrays(*duplicates.flag_inputs(batch)[:2])
    expected_flags = duplicates.with_duplicate_flags(batch)
    assert list(flags[duplicates.DUPLICATE_FLAG]) == list(expected_flags[duplicates.DUPLICATE_FLAG])
    assert list(flags[duplicates.CONFLICT_FLAG]) == list(expected_flags[duplicates.CONFLICT_FLAG])
