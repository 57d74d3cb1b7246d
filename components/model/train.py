"""Train: fine-tune a sequence or token classifier with a plain torch loop.

Batches are grouped by length and padded only to their own longest example, which on short
texts is several times cheaper than padding everything to max_length. Options (all in params'
`train:` section): frozen embeddings and lower layers, LoRA adapters (merged before saving) or a soft
prompt (prefix / p-tuning, components/model/prompts.py: saved beside the plain model), class
weights, warmup with linear or cosine decay, gradient clipping, early stopping, and checkpoints
after every epoch and every K steps from which a killed run resumes to the same result.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from components.config import TrainParams
from components.config.peft import PROMPT_METHODS
from components.data.preprocess import IGNORE_INDEX, TokenizedSplit
from components.data.ragged import row_lengths
from components.model.auto_batch import AUTO, pick_batch_sizes, scaled_learning_rate
from components.model.batches import (
    TEACHER_LOGITS,
    class_weights,
    collate,
    epoch_batches,
    model_inputs,
    subsample,
)
from components.model.checkpoints import Checkpointer, TrainingState
from components.model.compute import Compute, resolve_compute
from components.model.distributed import (
    Ranks,
    barrier,
    gather_rng_states,
    launched_ranks,
    mean_over_ranks,
    min_over_ranks,
    process_group,
    shard,
    wrap,
)
from components.model.trainable import add_lora, freeze, merge_lora

StepHook = Callable[[int], None]  # called with the global step after each optimizer step


@dataclass(frozen=True)
class DistilledSplit(TokenizedSplit):
    """A training split with a teacher's logits per row (components/model/distill.py): [classes], or
    (token classification) [sub-tokens, tags] in the student's own sub-tokens, NaN where there is no
    target (a word's later sub-tokens, special tokens). Rows without a true label carry IGNORE_INDEX."""

    teacher_logits: list[np.ndarray] | None = None

    def select(self, indices: list[int]) -> DistilledSplit:
        base = super().select(indices)
        picked = None if self.teacher_logits is None else [self.teacher_logits[i] for i in indices]
        return DistilledSplit(**{f.name: getattr(base, f.name) for f in fields(TokenizedSplit)}, teacher_logits=picked)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    validation_loss: float | None  # None: no validation pass after this epoch (train.validate_every)
    validation_accuracy: float | None
    validation_macro_f1: float | None
    seconds: float
    examples_per_second: float
    validation_entity_f1: float | None = None


@dataclass(frozen=True)
class TrainResult:
    history: list[EpochRecord]
    best_epoch: int
    train_examples: int
    metric: str = "macro_f1"  # the validation metric that picked the best epoch
    best_score: float = 0.0
    stopped_early: bool = False
    resumed_from_step: int | None = None
    trainable_parameters: int = 0
    total_parameters: int = 0
    extra: dict = field(default_factory=dict)
    compute: dict = field(default_factory=dict)  # device, device_name, precision
    batch_sizes: dict = field(default_factory=dict)  # what train.batch_size / eval_batch_size: auto picked, and how
    peft: str = "none"  # train.peft: what trained

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"best_epoch": self.best_epoch, "train_examples": self.train_examples, "metric": self.metric,
                   "best_score": self.best_score, "stopped_early": self.stopped_early,
                   "resumed_from_step": self.resumed_from_step, "trainable_parameters": self.trainable_parameters,
                   "total_parameters": self.total_parameters, "peft": self.peft,
                   # Logged to MLflow for every method (components/lifecycle/tracking.py logs every number).
                   "trainable_share": self.trainable_parameters / max(self.total_parameters, 1),
                   "seconds_per_epoch": (sum(r.seconds for r in self.history) / len(self.history)
                                         if self.history else 0.0),
                   **self.compute, **self.batch_sizes, **self.extra,
                   "history": [asdict(r) for r in self.history]}
        path.write_text(json.dumps(payload, indent=2) + "\n")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to `threads` (None: left alone) inside the block, restored after."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(model: torch.nn.Module, params: TrainParams) -> torch.optim.Optimizer:
    # Biases and LayerNorm weights are not decayed: decaying them only hurts. Frozen weights stay out.
    decay, no_decay = [], []
    for _, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": params.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=params.learning_rate)


def _scheduler(optimizer, params: TrainParams, total_steps: int):
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    warmup = int(params.warmup_ratio * total_steps)
    if params.lr_schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    build = get_cosine_schedule_with_warmup if params.lr_schedule == "cosine" else get_linear_schedule_with_warmup
    return build(optimizer, warmup, total_steps)


def _loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                             weight=weights, ignore_index=IGNORE_INDEX)


@dataclass(frozen=True)
class Distillation:
    """The student's loss when a teacher's logits ride in the batch: (1 - alpha) * cross-entropy on the
    true labels + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)). Rows (or positions)
    without a true label count in the KD term only; positions without a teacher target in CE only."""

    temperature: float = 2.0
    alpha: float = 0.5

    def loss(self, logits: torch.Tensor, batch: dict[str, torch.Tensor], weights: torch.Tensor | None) -> torch.Tensor:
        classes = logits.shape[-1]
        student, teacher = logits.reshape(-1, classes), batch[TEACHER_LOGITS].reshape(-1, classes)
        labels = batch["labels"].reshape(-1)
        total = logits.sum() * 0.0  # a zero on the graph: a batch may lack either term
        if (labels != IGNORE_INDEX).any():
            total = total + (1 - self.alpha) * _loss(student, labels, weights)
        has_target = ~torch.isnan(teacher).any(-1)
        if self.alpha > 0 and has_target.any():
            t = self.temperature
            teacher_log = torch.log_softmax(teacher[has_target] / t, dim=-1)
            student_log = torch.log_softmax(student[has_target] / t, dim=-1)
            kl = torch.nn.functional.kl_div(student_log, teacher_log, log_target=True, reduction="batchmean")
            total = total + self.alpha * t * t * kl  # T^2 keeps the gradients' scale as T changes
        return total


@torch.no_grad()
def evaluate_split(model, split: TokenizedSplit, labels: list[str], batch_size: int, pad_id: int,
                   entity_types: list[str] | None, compute: Compute) -> dict:
    """Validation loss and scores: accuracy/macro-F1 for classes, entity F1 (CoNLL) for tags."""
    from components.entities import entity_scores
    from components.model.metrics import classification_metrics

    model.eval()
    order = np.argsort(row_lengths(split.input_ids), kind="stable")  # shortest first, ties in split order
    total_loss = 0.0
    predictions: list = [None] * len(split)
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        batch = compute.batch(collate(split, indices, pad_id))
        with compute.autocast():
            logits = model(**model_inputs(batch)).logits
        logits = logits.float()
        total_loss += _loss(logits, batch["labels"], None).item() * len(indices)
        best = logits.argmax(-1).tolist()
        for row, i in enumerate(indices):
            predictions[i] = best[row]
    loss = total_loss / max(len(split), 1)
    if not split.token_level:
        scores = classification_metrics([labels[y] for y in split.labels], [labels[p] for p in predictions], labels)
        return {"loss": loss, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}
    gold, predicted = [], []
    for i, ys in enumerate(split.labels):  # word-level: the positions that carry a label (first sub-tokens)
        kept = [(y, p) for y, p in zip(ys, predictions[i]) if y != IGNORE_INDEX]
        gold.append([labels[y] for y, _ in kept])
        predicted.append([labels[p] for _, p in kept])
    scores = entity_scores(gold, predicted, entity_types or [])
    return {"loss": loss, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"], "entity_f1": scores["entity_f1"]}


def _state_copy(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_classifier(model, train: TokenizedSplit, validation: TokenizedSplit, labels: list[str],
                     params: TrainParams, pad_id: int, *, entity_types: list[str] | None = None,
                     checkpoints: Checkpointer | None = None,
                     on_step: StepHook | None = None,
                     distillation: Distillation | None = None) -> tuple[TrainResult, object]:
    """Fine-tune `model`; returns the history and the model holding the best validation epoch's weights
    (LoRA adapters merged in, so it saves as a plain transformers model; with train.peft prefix or p-tuning,
    a PromptedModel: the plain model and its trained prompt, components/model/prompted.py).

    With `checkpoints`, state is saved after every epoch (and every train.checkpoint_every_steps) and a
    matching checkpoint left by a killed run is resumed from, reaching the same weights.

    Launched by torchrun (several ranks), each rank trains on its shard of every epoch's batches under
    DistributedDataParallel; only rank 0 writes checkpoints and prints (components/model/distributed.py).

    With `distillation`, `train` carries the teacher's logits (components/model/distill.py DistilledSplit)
    and the loss is Distillation.loss.
    """
    ranks = launched_ranks()
    compute = resolve_compute(params.device, params.precision, ranks.local_rank)
    # The thread count is the caller's process-wide setting: set for this run, then given back, so
    # that what runs next (another test, another trial) starts from the state it expects.
    with torch_threads(params.num_threads), process_group(ranks, compute):
        return _train(model, _TrainingJob(train, validation, labels, params, pad_id, entity_types=entity_types,
                                          checkpoints=checkpoints, on_step=on_step, compute=compute, ranks=ranks,
                                          token_level=train.token_level, distillation=distillation))


@dataclass(frozen=True)
class _TrainingJob:
    """What one training run reads and never changes: the splits, the settings, where it runs and its hooks."""

    train: TokenizedSplit
    validation: TokenizedSplit
    labels: list[str]
    params: TrainParams
    pad_id: int
    entity_types: list[str] | None
    checkpoints: Checkpointer | None
    on_step: StepHook | None
    compute: Compute
    ranks: Ranks
    token_level: bool  # of the whole training split, before train.max_train_examples takes a subsample
    distillation: Distillation | None = None

    @property
    def metric(self) -> str:
        return "entity_f1" if self.token_level else "macro_f1"

    @property
    def steps_per_epoch(self) -> int:
        return max(math.ceil(len(self.train) / self.params.batch_size), 1)

    @property
    def epochs(self) -> int:
        """train.epochs, or with train.max_steps the passes its steps start (the last one cut short)."""
        if self.params.max_steps is None:
            return self.params.epochs
        return math.ceil(self.params.max_steps / self.steps_per_epoch)

    @property
    def total_steps(self) -> int:
        return self.params.max_steps or self.steps_per_epoch * self.params.epochs

    def done(self, state: TrainingState) -> bool:
        return state.stopped or state.epoch > self.epochs or state.global_step >= self.total_steps

    def say(self, line: str) -> None:
        """Rank 0 speaks for all."""
        (tqdm.write if self.ranks.is_main else _silent)(line)


@dataclass
class _Loop:
    """What the training loop changes as it goes: the model and its optimizer, and the state a checkpoint holds."""

    model: object
    step_model: object  # the model, or its DistributedDataParallel wrapper with several ranks
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: object
    weights: torch.Tensor | None  # class weights of the loss (train.class_weights)
    state: TrainingState
    best_state: dict | None
    resumed_from: int | None
    micro_batch: int | None = None  # after an out-of-memory error: the most rows one forward pass takes


def _train(model, job: _TrainingJob) -> tuple[TrainResult, object]:
    params, compute, ranks = job.params, job.compute, job.ranks
    seed_everything(params.seed)
    job = replace(job, train=subsample(job.train, params.max_train_examples, params.seed))
    model = _with_trainable_parts(model, job)
    model.to(compute.device)
    job, picked = _with_batch_sizes(model, job)
    step_model = wrap(model, ranks, compute)  # DDP when there are several ranks
    if ranks.distributed:
        torch.manual_seed(params.seed + ranks.rank)  # each rank its own dropout draws
    scaler = compute.grad_scaler()
    parallel = f", rank 0 of {ranks.world_size} data-parallel processes" if ranks.distributed else ""
    job.say(f"training on {compute.device.type} ({compute.device_name}), {compute.precision}{parallel}")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    job.say(f"train.peft {params.peft}: {trainable:,} of {total:,} parameters train ({trainable / max(total, 1):.2%})")
    weights = (class_weights(job.train, len(job.labels)).to(compute.device)
               if params.class_weights == "balanced" else None)
    loop = _start_loop(model, step_model, scaler, weights, job)

    while not job.done(loop.state):
        _run_epoch(loop, job)

    model = _best_model(loop, params)
    state = loop.state
    result = TrainResult(
        history=[EpochRecord(**r) for r in state.history], best_epoch=state.best_epoch, train_examples=len(job.train),
        metric=job.metric, best_score=state.best_score, stopped_early=state.stopped,
        resumed_from_step=loop.resumed_from, trainable_parameters=trainable, total_parameters=total,
        compute=compute.describe(), peft=params.peft, batch_sizes=picked,
    )
    return result, model


def _with_batch_sizes(model, job: _TrainingJob) -> tuple[_TrainingJob, dict]:
    """The job with train.batch_size / eval_batch_size: auto replaced by the sizes trial steps picked (a resumed
    run's earlier picks), and the record of the picks for the training history."""
    params = job.params
    if AUTO not in (params.batch_size, params.eval_batch_size):
        return job, {}
    picked = job.checkpoints.load_batch_sizes() if job.checkpoints else None
    if picked is None:
        picked = pick_batch_sizes(model, params, job.train, job.validation, pad_id=job.pad_id, compute=job.compute,
                                  loss=lambda logits, batch: _batch_loss(logits, batch, None, job),
                                  agree=lambda size: min_over_ranks(size, job.ranks), say=job.say)
        if job.checkpoints and job.ranks.is_main:
            job.checkpoints.save_batch_sizes(picked)
    update: dict = {}
    if params.batch_size == AUTO:
        update["batch_size"] = picked["batch_size"]
        update["learning_rate"] = scaled_learning_rate(params.learning_rate, picked["batch_size"], params.auto_batch_lr)
        picked = {**picked, "learning_rate": update["learning_rate"], "learning_rate_rule": params.auto_batch_lr}
    if params.eval_batch_size == AUTO:
        update["eval_batch_size"] = picked["eval_batch_size"]
    job.say("batch_size auto: " + ", ".join(f"{name} {picked[name]}" for name in ("batch_size", "eval_batch_size")
                                             if getattr(params, name) == AUTO)
            + f" within {picked['memory_budget_bytes'] / 2**30:.2f} GiB ({picked['memory']})")
    return replace(job, params=params.model_copy(update=update)), picked


def _with_trainable_parts(model, job: _TrainingJob):
    """The model with train.freeze_* applied and its LoRA adapters or soft prompt (train.peft) added."""
    params = job.params
    freeze(model, embeddings=params.freeze_embeddings, layers=params.freeze_layers)
    if params.peft == "lora":
        return add_lora(model, params, job.token_level)
    if params.peft in PROMPT_METHODS:
        from components.model.prompts import add_prompt

        longest = max((int(row_lengths(s.input_ids).max(initial=0)) for s in (job.train, job.validation)), default=0)
        return add_prompt(model, params.peft, params.prompt, longest)
    return model


def _start_loop(model, step_model, scaler, weights: torch.Tensor | None, job: _TrainingJob) -> _Loop:
    """The optimizer and schedule, from scratch or resumed from a matching checkpoint."""
    params, checkpoints = job.params, job.checkpoints
    optimizer = _optimizer(model, params)
    scheduler = _scheduler(optimizer, params, job.total_steps)
    state = TrainingState()
    resumed = checkpoints.restore(model, optimizer, scheduler, state, job.ranks.rank) if checkpoints else False
    if resumed:
        job.say(f"resuming from the checkpoint at epoch {state.epoch}, step {state.step_in_epoch} "
                f"(global step {state.global_step})")
    best_state = checkpoints.load_best() if resumed and checkpoints and state.best_epoch else None
    return _Loop(model, step_model, optimizer, scheduler, scaler, weights, state, best_state,
                 resumed_from=state.global_step if resumed else None)


def _run_epoch(loop: _Loop, job: _TrainingJob) -> None:
    """One epoch (the rest of it, when resumed mid-epoch), its validation pass when due, and its checkpoint."""
    params, state = job.params, loop.state
    epoch = state.epoch
    loop.model.train()
    started, seconds_before = time.perf_counter(), state.seconds_in_epoch  # a resumed epoch counts its first part
    batches = shard(epoch_batches(job.train, params.batch_size, params.seed, epoch), job.ranks)
    steps_left = job.total_steps - state.global_step  # train.max_steps may end the run inside this epoch
    batches_left = batches[state.step_in_epoch:state.step_in_epoch + steps_left]
    progress = tqdm(batches, desc=f"epoch {epoch}/{job.epochs}", unit="batch", leave=True,
                    initial=state.step_in_epoch, total=state.step_in_epoch + len(batches_left),
                    disable=not job.ranks.is_main)
    for indices in batches_left:
        _step(loop, job, indices)
        progress.update(1)
        progress.set_postfix(loss=f"{state.running_loss / state.step_in_epoch:.4f}")
        if job.checkpoints and params.checkpoint_every_steps and state.global_step % params.checkpoint_every_steps == 0:
            state.seconds_in_epoch = seconds_before + time.perf_counter() - started
            _save_checkpoint(job.checkpoints, loop.model, loop.optimizer, loop.scheduler, state, job.ranks)
        if job.on_step is not None:
            job.on_step(state.global_step)
    progress.close()
    seconds = seconds_before + time.perf_counter() - started
    train_loss = mean_over_ranks(state.running_loss / max(state.step_in_epoch, 1), job.ranks)
    last = epoch >= job.epochs or state.global_step >= job.total_steps
    if epoch % params.validate_every and not last:
        state.history.append(asdict(EpochRecord(epoch, train_loss, None, None, None, seconds,
                                                len(job.train) / seconds)))
        job.say(f"epoch {epoch}: train_loss={train_loss:.4f} (validation every {params.validate_every} epochs)")
    else:
        _validate(loop, job, epoch, train_loss, seconds)
    state.epoch, state.step_in_epoch, state.running_loss, state.seconds_in_epoch = epoch + 1, 0, 0.0, 0.0
    if job.checkpoints:
        _save_checkpoint(job.checkpoints, loop.model, loop.optimizer, loop.scheduler, state, job.ranks)


def _step(loop: _Loop, job: _TrainingJob, indices) -> None:
    """One optimizer step on one batch. A batch that runs out of memory is run again in halves whose gradients
    add up to the batch's (a longer batch than the trial steps saw, a GPU shared with another job); the halving
    holds for the rest of the run."""
    while True:
        try:
            loss = _accumulate(loop, job, indices, loop.micro_batch or len(indices))
            break
        except Exception as error:  # noqa: BLE001 - only running out of memory is retried, in halves
            from components.model.batch_size import free_memory, is_out_of_memory

            micro = loop.micro_batch or len(indices)
            if not is_out_of_memory(error) or micro <= 1:
                raise
            loop.optimizer.zero_grad(set_to_none=True)
            free_memory(job.compute.device)
            loop.micro_batch = micro // 2
            job.say(f"out of memory on a batch of {len(indices)} at step {loop.state.global_step + 1}: "
                    f"its gradients now add up over parts of at most {loop.micro_batch}")
    optimizer, model = loop.optimizer, loop.model
    loop.scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], job.params.max_grad_norm)
    loop.scaler.step(optimizer)
    loop.scaler.update()
    loop.scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    loop.state.running_loss += loss
    loop.state.step_in_epoch += 1
    loop.state.global_step += 1


def _accumulate(loop: _Loop, job: _TrainingJob, indices, part_size: int) -> float:
    """The batch's loss and gradients, computed over parts of at most `part_size` rows. Each part's loss counts
    by its share of the batch's targets (rows; labelled tokens for tags), so the parts add up to the whole
    batch's mean loss (exactly without class weights or a teacher)."""
    parts = [indices[start:start + part_size] for start in range(0, len(indices), part_size)]
    batches = [collate(job.train, part, job.pad_id) for part in parts]
    targets = [_targets(batch, job.token_level) for batch in batches]
    total, loss_sum = max(sum(targets), 1), 0.0
    for batch, share in zip(batches, targets):
        batch = job.compute.batch(batch)
        with job.compute.autocast():
            logits = loop.step_model(**model_inputs(batch)).logits
        loss = _batch_loss(logits.float(), batch, loop.weights, job)
        scaled = loss * (share / total) if len(batches) > 1 else loss
        loop.scaler.scale(scaled).backward()
        loss_sum += scaled.item()
    return loss_sum


def _batch_loss(logits: torch.Tensor, batch: dict[str, torch.Tensor], weights: torch.Tensor | None,
                job: _TrainingJob) -> torch.Tensor:
    """Cross-entropy on the labels, or with a teacher the distillation loss."""
    if job.distillation is None:
        return _loss(logits, batch["labels"], weights)
    return job.distillation.loss(logits, batch, weights)


def _targets(batch: dict[str, torch.Tensor], token_level: bool) -> int:
    labels = batch["labels"]
    return int((labels != IGNORE_INDEX).sum()) if token_level else len(labels)


def _validate(loop: _Loop, job: _TrainingJob, epoch: int, train_loss: float, seconds: float) -> None:
    """The epoch's validation pass: its record, the best weights so far, early stopping."""
    params, state, metric = job.params, loop.state, job.metric
    scores = evaluate_split(loop.model, job.validation, job.labels, params.eval_batch_size, job.pad_id,
                            job.entity_types, job.compute)
    record = EpochRecord(epoch, train_loss, scores["loss"], scores["accuracy"],
                         scores["macro_f1"], seconds, len(job.train) / seconds, scores.get("entity_f1"))
    state.history.append(asdict(record))
    job.say(f"epoch {epoch}: train_loss={record.train_loss:.4f} val_loss={record.validation_loss:.4f} "
            f"val_accuracy={record.validation_accuracy:.4f} val_{metric}={scores[metric]:.4f}")
    if state.observe(scores[metric], epoch, params.early_stopping_patience):
        loop.best_state = _state_copy(loop.model)
        if job.checkpoints and job.ranks.is_main:
            job.checkpoints.save_best(loop.best_state)
    elif state.stopped:
        job.say(f"early stopping: no better val_{metric} for {state.epochs_without_improvement} "
                "validation pass(es)")


def _best_model(loop: _Loop, params: TrainParams):
    """The best validation epoch's weights, on the CPU, as a model that saves plainly."""
    model = loop.model
    model.load_state_dict(loop.best_state)
    model.to("cpu")  # saved, exported and served from the CPU, whatever trained it
    if params.peft == "lora":
        return merge_lora(model)
    if params.peft in PROMPT_METHODS:
        return model.frozen()  # the plain model + the trained prompt as constants (components/model/prompted.py)
    return model


def _save_checkpoint(checkpoints: Checkpointer, model, optimizer, scheduler, state: TrainingState,
                     ranks: Ranks) -> None:
    rng_by_rank = gather_rng_states(ranks)  # a collective: every rank takes part, rank 0 writes
    if ranks.is_main:
        checkpoints.save(model, optimizer, scheduler, state, rng_by_rank)
    barrier(ranks)  # no rank runs ahead of a checkpoint that a resume would start from


def _silent(*_: object, **__: object) -> None:
    """What ranks other than 0 print: nothing (rank 0 speaks for all)."""


def save_model(model, tokenizer, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)  # safetensors
    tokenizer.save_pretrained(output_dir)
