"""train.batch_size / eval_batch_size: auto for a training run: trial steps on the split's longest rows, measured
by components/model/batch_size.py, and what the learning rate does about the picked size."""

from __future__ import annotations

import contextlib
import math
import random
from typing import Callable, Iterator

import numpy as np
import torch

from components.config import TrainParams
from components.config.model import DEFAULT_BATCH_SIZE
from components.data.preprocess import TokenizedSplit
from components.data.ragged import row_lengths
from components.model.batches import collate, model_inputs
from components.model.compute import Compute

AUTO = "auto"
# The loss of one batch: (logits, the batch collate made) -> a scalar on the graph.
BatchLoss = Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]


def scaled_learning_rate(learning_rate: float, batch_size: int, rule: str) -> float:
    """train.learning_rate for a batch size batch_size: auto picked (train.auto_batch_lr)."""
    ratio = batch_size / DEFAULT_BATCH_SIZE
    return learning_rate * {"unchanged": 1.0, "sqrt": math.sqrt(ratio), "linear": ratio}[rule]


def pick_batch_sizes(model, params: TrainParams, train: TokenizedSplit, validation: TokenizedSplit, *, pad_id: int,
                     compute: Compute, loss: BatchLoss, agree: Callable[[int], int] = lambda size: size,
                     say: Callable[[str], None] | None = None) -> dict:
    """Trial steps on the longest rows at sizes 1, 2, 4, ...: for each of train.batch_size and eval_batch_size
    that says auto, the largest that stays within train.memory_budget, and the trials that found it.
    `agree` turns this process's pick into the one every process takes (the smallest, under torchrun).

    The trials leave the weights, gradients and random state as they found them: the run that follows trains
    as one given the picked size would."""
    from components.model.batch_size import default_budget, pick_batch_size

    device = compute.device
    budget = params.memory_budget_bytes or default_budget(device)
    # Held in the run but in no trial: AdamW's two fp32 moments per trainable weight (from the first step)
    # and the copy of the best weights (from the first validation pass), on the training device.
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    held = 2 * 4 * trainable + sum(t.numel() * t.element_size() for t in model.state_dict().values())
    picked: dict = {"memory_budget_bytes": budget}
    with _kept_random_state():
        try:
            if params.batch_size == AUTO:
                choice = pick_batch_size(_training_trial(model, train, pad_id, compute, loss), device=device,
                                         budget_bytes=budget, largest=len(train), extra_bytes=held, progress=say)
                picked.update(batch_size=agree(choice.size), batch_size_trials=choice.record(), memory=choice.memory)
            if params.eval_batch_size == AUTO:
                scored = validation if len(validation) else train
                choice = pick_batch_size(_scoring_trial(model, scored, pad_id, compute), device=device,
                                         budget_bytes=budget, largest=len(scored), extra_bytes=held, progress=say)
                picked.update(eval_batch_size=agree(choice.size), eval_batch_size_trials=choice.record(),
                              memory=choice.memory)
        finally:
            model.zero_grad(set_to_none=True)
            model.train()
    return picked


def _longest_rows(split: TokenizedSplit, size: int) -> np.ndarray:
    """The indices of the `size` longest rows (repeated when the split has fewer): the costliest batch."""
    longest = np.argsort(-row_lengths(split.input_ids), kind="stable")[:size]
    return np.resize(longest, size)


def _training_trial(model, split: TokenizedSplit, pad_id: int, compute: Compute,
                    loss: BatchLoss) -> Callable[[int], None]:
    def trial(size: int) -> None:
        model.train()
        batch = compute.batch(collate(split, _longest_rows(split, size), pad_id))
        try:
            with compute.autocast():
                logits = model(**model_inputs(batch)).logits
            loss(logits.float(), batch).backward()
        finally:
            del batch
            model.zero_grad(set_to_none=True)

    return trial


def _scoring_trial(model, split: TokenizedSplit, pad_id: int, compute: Compute) -> Callable[[int], None]:
    @torch.no_grad()
    def trial(size: int) -> None:
        model.eval()
        batch = compute.batch(collate(split, _longest_rows(split, size), pad_id))
        with compute.autocast():
            model(**model_inputs(batch))

    return trial


@contextlib.contextmanager
def _kept_random_state() -> Iterator[None]:
    """Python's, numpy's, torch's and CUDA's random states as they were before the block (dropout draws)."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    python, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
