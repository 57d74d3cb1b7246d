"""Batches of a tokenized split: the epoch's length-grouped plan, padding to the batch's longest row, and the
inputs the model is called with. Shared by the training loop and batch_size: auto's trial steps."""

from __future__ import annotations

import random

import numpy as np
import torch

from components.data.preprocess import IGNORE_INDEX, TokenizedSplit
from components.data.ragged import RaggedRows, row_lengths

# The teacher's logits of a distilled training split (components/model/distill.py) travel in the batch
# under this name; NaN rows are positions without a target.
TEACHER_LOGITS = "teacher_logits"


def length_grouped_batches(lengths: np.ndarray | list[int], batch_size: int, rng: random.Random) -> list[np.ndarray]:
    """Shuffle, then sort within windows of 50 batches so each batch holds similar lengths.

    The order lives in numpy arrays (4 bytes a row, not a Python int's 36), shuffled by `rng` itself, so that
    a seed gives the same batches it always gave. The sort within a window is stable: ties keep shuffled order.
    """
    lengths = np.asarray(lengths)
    order = np.arange(len(lengths), dtype=np.int32 if len(lengths) < 2**31 else np.int64)
    rng.shuffle(order)  # random.shuffle's draws on an array: the permutation a list of the same length gets
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def epoch_batches(split: TokenizedSplit, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    # Each epoch's order is a function of (seed, epoch) alone, so a resumed run can rebuild it.
    return length_grouped_batches(row_lengths(split.input_ids), batch_size, random.Random(f"{seed}:{epoch}"))


def collate(split: TokenizedSplit, indices, pad_id: int) -> dict[str, torch.Tensor]:
    lengths = torch.tensor([len(split.input_ids[i]) for i in indices])
    width = int(lengths.max())

    def padded(rows, fill: int) -> torch.Tensor:
        """The rows at `indices`, each padded with `fill` to the batch's longest example."""
        out = torch.full((len(indices), width), fill, dtype=torch.long)
        for slot, i in enumerate(indices):
            row = np.array(rows[i], dtype=np.int64)  # a copy: a memory-mapped row is read-only
            out[slot, :len(row)] = torch.from_numpy(row)
        return out

    batch = {
        "input_ids": padded(split.input_ids, pad_id),
        "attention_mask": (torch.arange(width) < lengths[:, None]).long(),
        "labels": (padded(split.labels, IGNORE_INDEX) if split.token_level
                   else torch.tensor([split.labels[i] for i in indices], dtype=torch.long)),
    }
    if split.token_type_ids is not None:
        batch["token_type_ids"] = padded(split.token_type_ids, 0)
    teacher = getattr(split, TEACHER_LOGITS, None)
    if teacher is not None:
        batch[TEACHER_LOGITS] = _teacher_targets(teacher, indices, width, split.token_level)
    return batch


def _teacher_targets(teacher: list, indices: list[int], width: int, token_level: bool) -> torch.Tensor:
    if not token_level:
        return torch.tensor(np.stack([teacher[i] for i in indices]), dtype=torch.float32)
    out = torch.full((len(indices), width, teacher[indices[0]].shape[-1]), float("nan"))
    for slot, i in enumerate(indices):
        out[slot, :len(teacher[i])] = torch.from_numpy(np.asarray(teacher[i], dtype=np.float32))
    return out


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the model is called with: everything collate made except the labels."""
    return {name: tensor for name, tensor in batch.items() if name not in ("labels", TEACHER_LOGITS)}


def subsample(split: TokenizedSplit, limit: int | None, seed: int) -> TokenizedSplit:
    if limit is None or limit >= len(split):
        return split
    return split.select(sorted(random.Random(seed).sample(range(len(split)), limit)))


def class_weights(split: TokenizedSplit, num_labels: int) -> torch.Tensor:
    """n / (k * count_c): each class contributes as much loss as if classes were balanced."""
    if isinstance(split.labels, RaggedRows):
        flat = np.concatenate([values for values, _ in split.labels.chunks])
    else:
        flat = np.asarray([y for ys in split.labels for y in ys] if split.token_level else split.labels, dtype=np.int64)
    counts = np.bincount(flat[flat != IGNORE_INDEX], minlength=num_labels).astype(np.float64)
    present = counts > 0
    weights = np.ones(num_labels)
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)
