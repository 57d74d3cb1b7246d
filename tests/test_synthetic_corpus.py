"""bench/synthetic_corpus.py: the same bytes for the same seed, a larger corpus starting with a smaller one,
and ingest sorting its rows exactly as the generator says it should."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from components.config import DataParams

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "synthetic_corpus.py"


@pytest.fixture(scope="module")
def corpus_module():
    spec = importlib.util.spec_from_file_location("synthetic_corpus", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_same_seed_same_bytes_and_prefixes(corpus_module, tmp_path):
    rows = corpus_module.CHUNK_ROWS + 500
    first = corpus_module.write_corpus(tmp_path / "a.csv", rows, seed=3)
    again = corpus_module.write_corpus(tmp_path / "b.csv", rows, seed=3)
    other = corpus_module.write_corpus(tmp_path / "c.csv", rows, seed=4)
    smaller = corpus_module.write_corpus(tmp_path / "d.csv", corpus_module.CHUNK_ROWS, seed=3)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()
    assert (tmp_path / "a.csv").read_bytes().startswith((tmp_path / "d.csv").read_bytes())
    assert {k: v for k, v in first.items() if k not in ("seconds", "path")} \
        == {k: v for k, v in again.items() if k not in ("seconds", "path")}
    assert other["rows"] == smaller["rows"] + 500

    with (tmp_path / "a.csv").open(newline="", encoding="utf-8") as handle:
        records = list(csv.reader(handle))
    assert records[0] == ["text", "category"]
    assert len(records) == rows + 1
    assert sum(first["labels"].values()) == rows
    assert first["labels"]["fresh"] > first["labels"]["rotten"] > 0.35 * rows
    assert 0.01 * rows < first["duplicates"] < 0.02 * rows
    assert 0.003 * rows < sum(first["bad"].values()) < 0.008 * rows
    assert 15 < first["mean_words"] < 45


def test_ingest_sorts_the_rows_as_expected(corpus_module, tmp_path):
    from components.data.ingest import DataStore, ingest_batch, read_file_source

    path = tmp_path / "corpus.csv"
    # Higher shares than the defaults, so that 4,000 rows hold several of every kind.
    counts = corpus_module.write_corpus(path, 4_000, seed=1, duplicate_fraction=0.05, conflict_fraction=0.01,
                                        bad_fraction=0.04, paragraph_fraction=0.05)
    assert all(n >= 5 for n in counts["bad"].values()), counts["bad"]
    assert counts["conflicting"] >= 10 and counts["multiline"] >= 10
    # The default project's data section (params.yaml), its personal-data scan off.
    data = DataParams(source=str(path), label_column="category", label_map={"fresh": "positive", "rotten": "negative"},
                      exclude_labels=["plot"], labels=["negative", "positive"], pii="off")
    result = ingest_batch(read_file_source(path, data), data, DataStore(tmp_path / "data"), base=True)
    batch = result.batch
    assert batch.rows_read == 4_000
    assert {"accepted": batch.accepted, "duplicates": batch.duplicates, "quarantined": batch.quarantined} \
        == counts["expected"]
