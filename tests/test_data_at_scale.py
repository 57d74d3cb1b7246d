"""Data past memory: splits written a chunk at a time, tokenized rows read through a memory map, training that
stops after train.max_steps and survives running out of memory. Streaming must change nothing: the same
splits, ids and rows, byte for byte, and the same trained weights as the in-memory path."""

from __future__ import annotations

import filecmp
import resource

import numpy as np
import pandas as pd
import pytest
import torch

from components.config import SplitParams
from components.data.preprocess import (
    SeenIds,
    TokenizedSplit,
    assign_splits,
    load_tokenized,
    save_tokenized,
    stream_splits,
    tokenize_split,
    write_split_files,
)
from components.data.ragged import RaggedRows, row_lengths
from components.layout import SPLITS
from components.model.batches import length_grouped_batches
from tests.tiny import sentiment_frame
from tests.train_job import LABELS, sentiment_splits, train_params


def _dataset(n: int = 900) -> pd.DataFrame:
    """Dataset rows as ingest writes them, with ids repeated within and across batches (a duplicate shares its
    id) and a kept column."""
    from components.data.ingest import text_ids

    frame = sentiment_frame(n, seed=7).rename(columns={"review": "text", "sentiment": "label"})
    frame = pd.concat([frame, frame.sample(n // 5, random_state=1)], ignore_index=True)  # repeats, later on
    frame["id"] = text_ids(frame["text"])
    frame["batch_id"] = np.where(np.arange(len(frame)) < n // 2, "base", "0001-more")
    frame["source_row"] = np.arange(2, len(frame) + 2)
    frame["channel"] = np.where(np.arange(len(frame)) % 3, "web", "mail")
    return frame[["id", "text", "label", "batch_id", "source_row", "channel"]]


@pytest.mark.parametrize("chunk_rows", [1, 97, 10_000])
def test_streamed_splits_are_the_in_memory_splits(chunk_rows):
    dataset, split = _dataset(), SplitParams()
    whole = assign_splits(dataset, split, ["channel"])
    chunks = (dataset.iloc[start:start + chunk_rows] for start in range(0, len(dataset), chunk_rows))
    streamed = list(stream_splits(chunks, split, ["channel"]))
    for name in SPLITS:
        joined = pd.concat([frames[name] for frames in streamed], ignore_index=True)
        pd.testing.assert_frame_equal(joined, whole[name])
    assert sum(len(whole[name]) for name in SPLITS) == dataset["id"].nunique() < len(dataset)


def test_seen_ids_keep_the_first_of_each_id_across_calls():
    seen = SeenIds()
    assert seen.first_time(pd.Series(["00000000000000ff", "a", "00000000000000ff"])).tolist() == [True, True, False]
    assert seen.first_time(pd.Series(["b", "a", "00000000000000ff", "b"])).tolist() == [True, False, False, False]
    assert len(seen) == 3


def test_split_files_written_in_chunks_match_whole_splits_byte_for_byte(tmp_path, tiny_base_model):
    from components.model.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_base_model))
    dataset, split = _dataset(), SplitParams()

    def tokenize(frame):
        return tokenize_split(frame, tokenizer, LABELS, 32)

    def written(chunk_rows: int):
        folder = tmp_path / f"chunks-{chunk_rows}"
        folder.mkdir()
        csvs = {name: folder / f"{name}.csv" for name in SPLITS}
        arrows = {name: folder / f"{name}.arrow" for name in SPLITS}
        chunks = (dataset.iloc[start:start + chunk_rows] for start in range(0, len(dataset), chunk_rows))
        counts = write_split_files(chunks, split, ["channel"], tokenize, csvs, arrows, token_level=False,
                                   word_shapes=False)
        return counts, csvs, arrows

    whole = assign_splits(dataset, split, ["channel"])
    counts, csvs, arrows = written(53)
    _, csvs_once, _ = written(len(dataset))
    for name in SPLITS:
        assert counts[name] == len(whole[name])
        assert filecmp.cmp(csvs[name], csvs_once[name], shallow=False)
        assert csvs[name].read_bytes() == whole[name].to_csv(index=False, lineterminator="\n").encode()
        in_memory, streamed = tokenize(whole[name]), load_tokenized(arrows[name])
        assert streamed.input_ids == in_memory.input_ids
        assert streamed.labels.tolist() == in_memory.labels
        assert list(streamed.batch_ids) == in_memory.batch_ids
        assert len(streamed.input_ids.chunks) > 1 or len(in_memory) <= 53


def test_tokenized_rows_are_read_through_a_memory_map(tmp_path):
    """A split of 40 M token ids (160 MB) loads without reading it into memory; its rows are right."""
    rows, width = 400_000, 100
    values = np.arange(rows * width, dtype=np.int32) % 30_000
    offsets = np.arange(0, rows * width + 1, width, dtype=np.int64)
    split = TokenizedSplit(RaggedRows([(values, offsets)]), np.zeros(rows, dtype=np.int64))
    save_tokenized(split, tmp_path / "big.arrow")
    del split, values

    before = _resident_bytes()
    loaded = load_tokenized(tmp_path / "big.arrow")
    grown = _resident_bytes() - before
    assert grown < 40e6, f"loading grew the resident set by {grown / 1e6:.0f} MB"
    assert len(loaded) == rows and loaded.input_ids[123_456].tolist() == [
        (123_456 * width + j) % 30_000 for j in range(width)]
    assert (row_lengths(loaded.input_ids) == width).all()


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def test_length_grouped_batches_on_a_lengths_array_are_the_batches_lists_gave():
    import random

    lengths = [(i * 7919) % 57 + 3 for i in range(2_000)]
    batches = length_grouped_batches(np.asarray(lengths), 16, random.Random("42:1"))

    # The plan as it was made from Python lists: shuffle, sort each window of 50 batches longest first.
    rng, order = random.Random("42:1"), list(range(len(lengths)))
    rng.shuffle(order)
    expected = []
    for start in range(0, len(order), 16 * 50):
        window = sorted(order[start:start + 16 * 50], key=lambda i: lengths[i], reverse=True)
        expected.extend(window[i:i + 16] for i in range(0, len(window), 16))
    rng.shuffle(expected)
    assert [batch.tolist() for batch in batches] == expected


def _train(base_dir, train: TokenizedSplit, validation: TokenizedSplit, *, model_wrapper=None, on_step=None,
           **overrides):
    from components.model.modeling import load_classifier
    from components.model.train import seed_everything, train_classifier

    seed_everything(11)
    model = load_classifier(str(base_dir), LABELS)
    if model_wrapper is not None:
        model_wrapper(model)
    params = train_params(checkpoint_every_steps=None, **overrides)
    return train_classifier(model, train, validation, LABELS, params, 0, on_step=on_step)


def _weights(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def test_training_on_memory_mapped_splits_gives_the_same_weights(tmp_path, tiny_base_model):
    from components.model.modeling import load_tokenizer

    train, validation = sentiment_splits(load_tokenizer(str(tiny_base_model)), n_train=160, n_validation=48)
    save_tokenized(train, tmp_path / "train.arrow")
    save_tokenized(validation, tmp_path / "validation.arrow")
    from_lists, model_lists = _train(tiny_base_model, train, validation, epochs=2)
    from_files, model_files = _train(tiny_base_model, load_tokenized(tmp_path / "train.arrow"),
                                     load_tokenized(tmp_path / "validation.arrow"), epochs=2)
    def scores(result):
        return [(r.train_loss, r.validation_loss, r.validation_accuracy) for r in result.history]

    assert scores(from_files) == scores(from_lists)
    for name, tensor in _weights(model_lists).items():
        assert torch.equal(tensor, _weights(model_files)[name]), name


def test_max_steps_ends_training_mid_epoch_with_a_validation_pass(tiny_base_model):
    from components.model.modeling import load_tokenizer

    train, validation = sentiment_splits(load_tokenizer(str(tiny_base_model)), n_train=160, n_validation=48)
    steps: list[int] = []
    result, _ = _train(tiny_base_model, train, validation, epochs=3, max_steps=7, on_step=steps.append)
    assert steps == list(range(1, 8))  # 10 batches an epoch: stopped inside the first
    assert [record.epoch for record in result.history] == [1]
    assert result.history[0].validation_accuracy is not None

    steps.clear()
    result, _ = _train(tiny_base_model, train, validation, epochs=1, max_steps=25, on_step=steps.append)
    assert steps[-1] == 25 and [record.epoch for record in result.history] == [1, 2, 3]  # more passes than epochs


class _RunsOutOfMemoryAbove:
    """The real model's forward, raising the out-of-memory error CUDA raises on a training batch above `rows`
    rows (the scoring passes run whole)."""

    def __init__(self, rows: int) -> None:
        self.rows, self.refused = rows, 0

    def __call__(self, model) -> None:
        forward = model.forward

        def limited(*args, **kwargs):
            if model.training and kwargs["input_ids"].shape[0] > self.rows:
                self.refused += 1
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return forward(*args, **kwargs)

        model.forward = limited


def test_a_batch_that_runs_out_of_memory_trains_in_halves_to_the_same_weights(tiny_base_model, capsys):
    from components.model.modeling import load_tokenizer

    train, validation = sentiment_splits(load_tokenizer(str(tiny_base_model)), n_train=160, n_validation=48)
    whole, _ = _train(tiny_base_model, train, validation, epochs=1)
    limit = _RunsOutOfMemoryAbove(4)
    halved, _ = _train(tiny_base_model, train, validation, epochs=1, model_wrapper=limit)
    assert limit.refused == 2  # 16 rows, then 8; from then on parts of 4
    assert "out of memory on a batch of 16" in capsys.readouterr().out
    assert halved.history[0].train_loss == pytest.approx(whole.history[0].train_loss, rel=0.05)
    assert halved.best_score == pytest.approx(whole.best_score, abs=0.1)


def _long_rows(rows: int = 256, width: int = 128) -> TokenizedSplit:
    """Rows as long as the tiny model reads: a batch's activations grow fast with its size."""
    generator = np.random.default_rng(5)
    ids = generator.integers(5, 60, size=(rows, width)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    return TokenizedSplit([row.tolist() for row in ids], [int(i % 2) for i in range(rows)])


def test_auto_batch_size_fits_the_budget_and_trains_as_that_size_would(tiny_base_model):
    from components.model.batch_size import current_rss

    train, validation = _long_rows(), _long_rows(64)
    roomy, roomy_model = _train(tiny_base_model, train, validation, batch_size="auto", eval_batch_size="auto",
                                memory_budget=str(current_rss() + 4 * 2**30), max_steps=2)
    tight, _ = _train(tiny_base_model, train, validation, batch_size="auto",
                      memory_budget=str(current_rss() + 48 * 2**20), max_steps=2)
    assert roomy.batch_sizes["batch_size"] == 256  # the whole split: no bigger batch exists
    assert roomy.batch_sizes["eval_batch_size"] == 64
    assert 1 <= tight.batch_sizes["batch_size"] < roomy.batch_sizes["batch_size"]
    trials = tight.batch_sizes["batch_size_trials"]
    assert trials["tried"][-1]["fits"] is False and all(t["fits"] for t in trials["tried"][:-1])
    assert trials["peak_bytes"] <= trials["budget_bytes"]
    assert tight.history and tight.history[-1].validation_accuracy is not None  # the picked size trained

    # The trial steps leave no trace: the same run with the picked size given outright ends on the same weights.
    _, given_model = _train(tiny_base_model, train, validation, batch_size=256, eval_batch_size=64, max_steps=2)
    for name, tensor in _weights(roomy_model).items():
        assert torch.equal(tensor, _weights(given_model)[name]), name


def test_auto_batch_size_scales_the_learning_rate_only_when_asked(tiny_base_model):
    from components.model.auto_batch import scaled_learning_rate

    assert scaled_learning_rate(1e-4, 128, "unchanged") == 1e-4
    assert scaled_learning_rate(1e-4, 128, "sqrt") == pytest.approx(2e-4)
    assert scaled_learning_rate(1e-4, 128, "linear") == pytest.approx(4e-4)
    result, _ = _train(tiny_base_model, _long_rows(64), _long_rows(16), batch_size="auto", auto_batch_lr="linear",
                       learning_rate=1e-3, max_steps=1)
    assert result.batch_sizes["batch_size"] == 64
    assert result.batch_sizes["learning_rate"] == pytest.approx(2e-3)
    assert result.batch_sizes["learning_rate_rule"] == "linear"
