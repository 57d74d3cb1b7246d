"""Train: fine-tune a sequence classifier with a plain torch loop.

Batches are grouped by length and padded only to their own longest example, which on short
texts is several times cheaper than padding everything to max_length.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from components.config import TrainParams
from components.metrics import classification_metrics
from components.preprocess import TokenizedSplit


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    validation_loss: float
    validation_accuracy: float
    validation_macro_f1: float
    seconds: float
    examples_per_second: float


@dataclass(frozen=True)
class TrainResult:
    history: list[EpochRecord]
    best_epoch: int
    train_examples: int

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"best_epoch": self.best_epoch, "train_examples": self.train_examples,
                   "history": [asdict(r) for r in self.history]}
        path.write_text(json.dumps(payload, indent=2) + "\n")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, then sort within windows of 50 batches so each batch holds similar lengths."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def collate(split: TokenizedSplit, indices: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    width = max(len(split.input_ids[i]) for i in indices)
    input_ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(indices), width), dtype=torch.long)
    for row, i in enumerate(indices):
        ids = split.input_ids[i]
        input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, :len(ids)] = 1
    labels = torch.tensor([split.labels[i] for i in indices], dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def subsample(split: TokenizedSplit, limit: int | None, seed: int) -> TokenizedSplit:
    if limit is None or limit >= len(split):
        return split
    chosen = sorted(random.Random(seed).sample(range(len(split)), limit))
    return TokenizedSplit([split.input_ids[i] for i in chosen], [split.labels[i] for i in chosen])


def _optimizer(model: torch.nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    # Biases and LayerNorm weights are not decayed: decaying them only hurts.
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": params.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=params.learning_rate)


@torch.no_grad()
def evaluate_split(model, split: TokenizedSplit, labels: list[str], batch_size: int, pad_id: int) -> dict:
    model.eval()
    order = sorted(range(len(split)), key=lambda i: len(split.input_ids[i]))
    total_loss, predictions = 0.0, [0] * len(split)
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        output = model(**collate(split, indices, pad_id))
        total_loss += output.loss.item() * len(indices)
        for i, p in zip(indices, output.logits.argmax(-1).tolist()):
            predictions[i] = p
    scores = classification_metrics([labels[y] for y in split.labels], [labels[p] for p in predictions], labels)
    return {"loss": total_loss / max(len(split), 1), "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}


def train_classifier(model, train: TokenizedSplit, validation: TokenizedSplit, labels: list[str],
                     params: TrainParams, pad_id: int) -> tuple[TrainResult, dict[str, torch.Tensor]]:
    """Fine-tune `model` in place; returns the history and the weights of the best validation epoch."""
    from transformers import get_linear_schedule_with_warmup

    seed_everything(params.seed)
    if params.num_threads:
        torch.set_num_threads(params.num_threads)
    train = subsample(train, params.max_train_examples, params.seed)
    rng = random.Random(params.seed)
    steps_per_epoch = math.ceil(len(train) / params.batch_size)
    optimizer = _optimizer(model, params)
    total_steps = steps_per_epoch * params.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(params.warmup_ratio * total_steps), total_steps)
    history: list[EpochRecord] = []
    best_state, best_score, best_epoch = None, -1.0, 0
    for epoch in range(1, params.epochs + 1):
        model.train()
        started, running = time.perf_counter(), 0.0
        batches = length_grouped_batches([len(x) for x in train.input_ids], params.batch_size, rng)
        progress = tqdm(batches, desc=f"epoch {epoch}/{params.epochs}", unit="batch", leave=True)
        for step, indices in enumerate(progress, start=1):
            loss = model(**collate(train, indices, pad_id)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), params.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            running += loss.item()
            progress.set_postfix(loss=f"{running / step:.4f}")
        seconds = time.perf_counter() - started
        scores = evaluate_split(model, validation, labels, params.eval_batch_size, pad_id)
        record = EpochRecord(epoch, running / max(len(batches), 1), scores["loss"], scores["accuracy"],
                             scores["macro_f1"], seconds, len(train) / seconds)
        history.append(record)
        tqdm.write(f"epoch {epoch}: train_loss={record.train_loss:.4f} val_loss={record.validation_loss:.4f} "
                   f"val_accuracy={record.validation_accuracy:.4f} val_macro_f1={record.validation_macro_f1:.4f}")
        if record.validation_macro_f1 > best_score:
            best_score, best_epoch = record.validation_macro_f1, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return TrainResult(history, best_epoch, len(train)), best_state


def save_model(model, tokenizer, best_state: dict[str, torch.Tensor], output_dir: Path) -> None:
    model.load_state_dict(best_state)
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)  # safetensors
    tokenizer.save_pretrained(output_dir)
