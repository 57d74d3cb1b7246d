"""Training throughput: tunegate's loop (length-grouped batches, dynamic padding) vs transformers'
Trainer with fixed-length padding to max_length, same model, data and hyperparameters, in one run.
Not a test.

    .venv/bin/python bench/train_throughput.py                         # 3000 train examples, 1 epoch, 1 thread
    .venv/bin/python bench/train_throughput.py --train-examples 10195 --epochs 2 --threads 2 --json out.json

What it does:

- model (model.base_model), max_length and the hyperparameters (learning_rate, batch_size, epochs,
  warmup_ratio, weight_decay, max_grad_norm, lr_schedule, seed) come from params.yaml
  (`--params`); `--epochs` overrides the epochs (default 1). Options that only tunegate's loop has
  (LoRA, frozen layers, class weights, early stopping, checkpoints, init from the champion) are
  set back to their defaults, so both sides do plain full fine-tuning; a note says when params.yaml
  had them otherwise.
- data: the first `--train-examples` of a seeded sample of artifacts/splits/train.csv (written by
  `dvc repro`), and all of artifacts/splits/validation.csv. Both sides get exactly these rows,
  tokenized by the base model's tokenizer with truncation at max_length: unpadded for tunegate
  (components.data.preprocess.tokenize_split; batches are padded at training time), padding="max_length"
  for the Trainer. The script checks that the two tokenizations hold the same tokens.
- model: each side loads a fresh copy of the base model after seeding with train.seed, so both start
  from the same weights, new classifier head included (checked).
- tunegate: components.model.train.train_classifier(...) with a copy of params.train
  (max_train_examples = the sample size, num_threads = --threads).
  Trainer: TrainingArguments with the same learning rate, batch size, epochs, warmup steps
  (int(warmup_ratio * total steps), as tunegate counts them), weight decay (not on biases and
  LayerNorm weights, on both sides), max_grad_norm, schedule and seed; no evaluation or saving
  during training, report_to none, no dataloader workers, CPU; its default optimizer
  (AdamW, fused) is kept: the baseline at its best.
- timing: examples/s over the training epochs only: tunegate's own per-epoch timer (EpochRecord.seconds,
  which stops before its per-epoch validation), and for the Trainer a callback between on_epoch_begin
  and on_epoch_end. Model loading, tokenization and evaluation are outside both. CPU seconds of
  this process are reported too: on shared cores they move much less than wall time when someone
  else's job competes, so a large gap between the two hints at contention.
- quality: both final models (the weights after the last epoch, not tunegate's best epoch, which
  is chosen on this same validation split) are scored by the same code,
  components.model.evaluate.predict_proba_torch + evaluate_frame, on the whole validation split.

Targets (from the issue): tunegate >= 1.3x the Trainer's examples/s, and validation accuracy within
0.5 points of the Trainer's. The sides run one after the other, tunegate first, so a colleague's job
on the shared cores can slow one more than the other: the load averages before and after each side
are printed. Two fine-tuning runs that differ only in batch order and dropout differ in accuracy by
about a point on ~1,250 validation examples, so the accuracy target is a sanity check on small
samples, not a test of equivalence.

One thread by default (as bench/model_speed.py): on shared cores, PyTorch's spinning threads meeting
another process's work slow down many-fold. Pass --threads 2 on an idle machine. About 5 minutes with
the defaults on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPEED_TARGET = 1.3  # tunegate examples/s over Trainer examples/s
ACCURACY_TARGET_POINTS = 0.5  # |accuracy difference| in percentage points
# TrainParams fields that change what tunegate's loop does beyond the Trainer's plain fine-tuning,
# or that make it write into the project; the bench uses their defaults.
TUNEGATE_ONLY_OPTIONS = ("peft", "lora", "prompt", "freeze_embeddings", "freeze_layers", "class_weights",
                         "early_stopping_patience", "init_from", "replay_fraction")
# Reset too, but not worth a note: without a Checkpointer passed (the bench passes none) it does nothing.
QUIET_RESETS = ("checkpoint_every_steps", "precision")
TRAINER_SCHEDULES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def quiet_environment() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("WANDB_DISABLED", "true")


def load_avg() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


@dataclass
class SideResult:
    name: str
    examples: int = 0
    epochs: int = 0
    train_seconds: float = 0.0  # wall, training epochs only
    train_cpu_seconds: float | None = None  # this process's CPU time over the same span
    threads_seen: int | None = None
    load_before: float = float("nan")
    load_after: float = float("nan")
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def examples_per_second(self) -> float:
        return self.examples * self.epochs / self.train_seconds

    @property
    def examples_per_cpu_second(self) -> float | None:
        if not self.train_cpu_seconds:
            return None
        return self.examples * self.epochs / self.train_cpu_seconds


# --- setup ----------------------------------------------------------------------------------------

def bench_train_params(params, train_examples: int, epochs: int, threads: int):
    """params.train with the cap, the epochs and the threads; tunegate-only options at their defaults."""
    from components.config import TrainParams

    fields = TrainParams.model_fields
    update = {"max_train_examples": train_examples, "epochs": epochs, "num_threads": threads}
    changed = []
    defaults = TrainParams()
    for name in TUNEGATE_ONLY_OPTIONS + QUIET_RESETS:
        if name in fields:
            default = getattr(defaults, name)
            if getattr(params.train, name) != default and name not in QUIET_RESETS:
                changed.append(name)
            update[name] = default
    return params.train.model_copy(update=update), changed


def read_split(path: Path):
    import pandas as pd

    if not path.is_file():
        raise SystemExit(f"no {path}: run `make repro` (or `dvc repro`) first")
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def sample_rows(frame, n: int, seed: int):
    """n rows chosen with the seed, kept in file order (components.model.train.subsample's choice)."""
    if n >= len(frame):
        return frame.reset_index(drop=True)
    chosen = sorted(random.Random(seed).sample(range(len(frame)), n))
    return frame.iloc[chosen].reset_index(drop=True)


def fixed_length_features(frame, tokenizer, labels: list[str], max_length: int) -> list[dict]:
    encoded = tokenizer(frame["text"].tolist(), truncation=True, max_length=max_length, padding="max_length")
    label_ids = {label: i for i, label in enumerate(labels)}
    return [{"input_ids": ids, "attention_mask": mask, "labels": label_ids[y]}
            for ids, mask, y in zip(encoded["input_ids"], encoded["attention_mask"], frame["label"])]


def check_same_examples(dynamic, fixed: list[dict]) -> None:
    """The padded examples hold exactly the tokens and labels of the unpadded ones."""
    assert len(dynamic) == len(fixed)
    for ids, label, features in zip(dynamic.input_ids, dynamic.labels, fixed):
        kept = [t for t, m in zip(features["input_ids"], features["attention_mask"]) if m]
        if kept != list(ids) or features["labels"] != label:
            raise SystemExit("the fixed-length tokenization does not hold the same tokens as the unpadded one")


def fresh_model(source: str, labels: list[str], seed: int):
    from components.model import modeling
    from components.model.train import seed_everything

    seed_everything(seed)  # before the new head is initialised, as components.stages does
    if hasattr(modeling, "load_classifier"):
        return modeling.load_classifier(source, labels, token_level=False)
    return modeling.load_sequence_classifier(source, labels)


def weights_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


# --- the two sides --------------------------------------------------------------------------------

def run_tunegate(model, train, validation, labels, train_params, pad_id: int):
    """Train with components.model.train.train_classifier; returns the side's figures and the model holding
    the weights after the last step (train_classifier itself hands back its best epoch's weights)."""
    import inspect
    import math

    import torch

    import components.model.train as tunegate_train

    # The loop scores the validation split after each epoch, outside its own epoch timer; the CPU
    # time spent there is taken out here the same way (only this process's reference is wrapped).
    evaluation_cpu = [0.0]
    original_evaluate = getattr(tunegate_train, "evaluate_split", None)
    if original_evaluate is not None:
        def timed_evaluate(*args, **kwargs):
            started = time.process_time()
            try:
                return original_evaluate(*args, **kwargs)
            finally:
                evaluation_cpu[0] += time.process_time() - started
        tunegate_train.evaluate_split = timed_evaluate

    # The weights after the last optimizer step, through the loop's on_step hook where it has one.
    final: dict = {}
    kwargs = {}
    last_step = math.ceil(len(train) / train_params.batch_size) * train_params.epochs
    if "on_step" in inspect.signature(tunegate_train.train_classifier).parameters:
        def on_step(global_step: int) -> None:
            if global_step == last_step:
                final["weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        kwargs["on_step"] = on_step

    side = SideResult("tunegate", load_before=load_avg())
    cpu_started, wall_started = time.process_time(), time.perf_counter()
    try:
        result, returned = tunegate_train.train_classifier(model, train, validation, labels, train_params,
                                                           pad_id=pad_id, **kwargs)
    finally:
        if original_evaluate is not None:
            tunegate_train.evaluate_split = original_evaluate
    call_cpu, call_wall = time.process_time() - cpu_started, time.perf_counter() - wall_started
    side.load_after = load_avg()
    side.threads_seen = torch.get_num_threads()
    side.examples, side.epochs = result.train_examples, len(result.history)
    side.train_seconds = sum(record.seconds for record in result.history)
    if original_evaluate is not None:
        side.train_cpu_seconds = call_cpu - evaluation_cpu[0]
    if isinstance(returned, dict):  # an older loop: the model is trained in place, returned = best weights
        trained, scored = model, "last step"
    else:  # the model with the best epoch's weights loaded
        trained = returned
        if "weights" in final:
            trained.load_state_dict(final["weights"])
            scored = "last step"
        else:
            scored = f"best epoch ({result.best_epoch} of {len(result.history)})"
    side.extra = {"call_wall_seconds": call_wall, "best_epoch": result.best_epoch, "scored_weights": scored,
                  "train_loss_last_epoch": result.history[-1].train_loss}
    return side, trained


def run_trainer(model, features: list[dict], train_params, output_dir: Path) -> SideResult:
    import math

    import torch
    from transformers import (
        Trainer,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    steps = math.ceil(len(features) / train_params.batch_size) * train_params.epochs
    schedule = getattr(train_params, "lr_schedule", "linear")
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=train_params.batch_size,
        num_train_epochs=train_params.epochs,
        learning_rate=train_params.learning_rate,
        weight_decay=train_params.weight_decay,
        warmup_steps=int(train_params.warmup_ratio * steps),  # tunegate's count (int, not ceil)
        max_grad_norm=train_params.max_grad_norm,
        lr_scheduler_type=TRAINER_SCHEDULES[schedule],
        seed=train_params.seed,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        use_cpu=True,
    )

    side = SideResult("Trainer")

    class EpochTimer(TrainerCallback):
        def on_epoch_begin(self, args, state, control, **kwargs):
            self.wall, self.cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, args, state, control, **kwargs):
            side.train_seconds += time.perf_counter() - self.wall
            side.train_cpu_seconds = (side.train_cpu_seconds or 0.0) + time.process_time() - self.cpu
            side.epochs += 1
            side.threads_seen = torch.get_num_threads()

    trainer = Trainer(model=model, args=args, train_dataset=features, data_collator=default_data_collator,
                      callbacks=[EpochTimer()])
    side.load_before = load_avg()
    output = trainer.train()
    side.load_after = load_avg()
    side.examples = len(features)
    side.extra = {"train_runtime_seconds": output.metrics.get("train_runtime"),
                  "train_loss": output.metrics.get("train_loss"), "optimizer": getattr(args.optim, "value", str(args.optim)),
                  "warmup_steps": args.warmup_steps, "total_steps": output.global_step}
    return side


def score(model, tokenizer, frame, labels: list[str], max_length: int, batch_size: int) -> dict:
    from components.model.evaluate import evaluate_frame, predict_proba_torch

    started = time.perf_counter()
    probabilities = predict_proba_torch(model, tokenizer, frame["text"].tolist(), max_length, batch_size)
    metrics, predictions = evaluate_frame(frame, probabilities, labels)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "n": metrics["n"],
            "seconds": time.perf_counter() - started, "predicted": predictions["predicted"].tolist()}


def paired_difference(a: list[str], b: list[str], gold: list[str]) -> tuple[float, float]:
    """Share of examples where the two models disagree, and the standard error (in points) of their
    accuracy difference on these examples (paired: only disagreements move it)."""
    n = len(gold)
    disagree = sum(x != y for x, y in zip(a, b)) / n
    per_example = [(x == g) - (y == g) for x, y, g in zip(a, b, gold)]
    mean = sum(per_example) / n
    variance = sum((d - mean) ** 2 for d in per_example) / max(n - 1, 1)
    return disagree, 100 * (variance / n) ** 0.5


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# --- main -----------------------------------------------------------------------------------------

def prepare(args: argparse.Namespace):
    """params, the train params of the bench, the model source and tokenizer, and the two splits."""
    import torch
    import transformers

    from components.config import load_params
    from components.data.preprocess import tokenize_split
    from components.model.modeling import load_tokenizer, resolve_model_source

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    labels, max_length = params.data.labels, params.model.max_length
    train_params, reset = bench_train_params(params, args.train_examples, args.epochs, args.threads)
    source = resolve_model_source(params.model.base_model)
    tokenizer = load_tokenizer(source)
    train_frame = sample_rows(read_split(args.splits_dir / "train.csv"), args.train_examples, train_params.seed)
    validation_frame = read_split(args.splits_dir / "validation.csv")
    train_dynamic = tokenize_split(train_frame, tokenizer, labels, max_length)
    validation_dynamic = tokenize_split(validation_frame, tokenizer, labels, max_length)
    train_params = train_params.model_copy(update={"max_train_examples": len(train_dynamic)})
    return (params, reset, train_params, source, tokenizer, labels, max_length, train_frame, validation_frame,
            train_dynamic, validation_dynamic)


def ddp_worker(args: argparse.Namespace) -> int:
    """One rank of the data-parallel side (under torchrun): train, and on rank 0 score and write the figures."""
    from components.model.distributed import launched_ranks

    (params, _, train_params, source, tokenizer, labels, max_length, _, validation_frame, train_dynamic,
     validation_dynamic) = prepare(args)
    model = fresh_model(source, labels, train_params.seed)
    side, model = run_tunegate(model, train_dynamic, validation_dynamic, labels, train_params, tokenizer.pad_token_id)
    if launched_ranks().is_main:
        side.metrics = score(model, tokenizer, validation_frame, labels, max_length, train_params.eval_batch_size)
        side.metrics.pop("predicted")
        args.ddp_worker.write_text(json.dumps({"examples": side.examples, "epochs": side.epochs,
                                               "train_seconds": side.train_seconds, "metrics": side.metrics}))
    return 0


def run_ddp_side(args: argparse.Namespace, processes: int) -> SideResult:
    """The same training as `processes` DDP ranks of args.threads threads each, launched by torchrun."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix="train-throughput-ddp-") as scratch:
        figures = Path(scratch) / "ddp.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   str(Path(__file__).resolve()), "--params", str(args.params), "--splits-dir", str(args.splits_dir),
                   "--train-examples", str(args.train_examples), "--epochs", str(args.epochs),
                   "--threads", str(args.threads), "--ddp-worker", str(figures)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "GLOO_SOCKET_IFNAME": "lo"}
        side = SideResult(f"tunegate-ddp{processes}", load_before=load_avg())
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the DDP side failed:\n{done.stderr[-3000:]}")
        result = json.loads(figures.read_text())
    side.load_after = load_avg()
    side.examples, side.epochs, side.train_seconds = result["examples"], result["epochs"], result["train_seconds"]
    side.metrics, side.threads_seen = result["metrics"], args.threads
    return side


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--splits-dir", type=Path, default=REPO / "artifacts" / "splits")
    parser.add_argument("--train-examples", type=int, default=3000, help="training examples (default 3000)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs for both sides (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads for both sides (default 1)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--processes", type=int, default=2, help="DDP ranks of the data-parallel side (0: skip it)")
    parser.add_argument("--ddp-worker", type=Path, help=argparse.SUPPRESS)  # one rank of that side
    args = parser.parse_args(argv)
    quiet_environment()
    bench_started = time.perf_counter()

    import torch

    from components.model.compute import cpu_name

    if args.ddp_worker:
        return ddp_worker(args)
    (params, reset, train_params, source, tokenizer, labels, max_length, train_frame, validation_frame,
     train_dynamic, validation_dynamic) = prepare(args)
    train_fixed = fixed_length_features(train_frame, tokenizer, labels, max_length)
    check_same_examples(train_dynamic, train_fixed)
    real_tokens = sum(len(ids) for ids in train_dynamic.input_ids)

    # tunegate
    model = fresh_model(source, labels, train_params.seed)
    start_digest = weights_digest(model)
    tunegate, model = run_tunegate(model, train_dynamic, validation_dynamic, labels, train_params,
                                   tokenizer.pad_token_id)
    tunegate.metrics = score(model, tokenizer, validation_frame, labels, max_length, train_params.eval_batch_size)
    del model

    # tunegate with bf16 autocast: same data, hyperparameters and starting weights (train.precision)
    model = fresh_model(source, labels, train_params.seed)
    bf16, model = run_tunegate(model, train_dynamic, validation_dynamic, labels,
                               train_params.model_copy(update={"precision": "bf16"}), tokenizer.pad_token_id)
    bf16.name = "tunegate-bf16"
    bf16.metrics = score(model, tokenizer, validation_frame, labels, max_length, train_params.eval_batch_size)
    bf16.metrics.pop("predicted")
    del model

    # tunegate as data-parallel ranks under torchrun (train.processes), each with --threads threads
    ddp = run_ddp_side(args, args.processes) if args.processes > 1 else None

    # Trainer
    torch.set_num_threads(args.threads)
    model = fresh_model(source, labels, train_params.seed)
    if weights_digest(model) != start_digest:
        raise SystemExit("the two fresh models do not start from the same weights")
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as output_dir:
        trainer = run_trainer(model, train_fixed, train_params, Path(output_dir))
    trainer.metrics = score(model, tokenizer, validation_frame, labels, max_length, train_params.eval_batch_size)

    speed = tunegate.examples_per_second / trainer.examples_per_second
    cpu_speed = None
    if tunegate.examples_per_cpu_second and trainer.examples_per_cpu_second:
        cpu_speed = tunegate.examples_per_cpu_second / trainer.examples_per_cpu_second
    accuracy_points = 100 * (tunegate.metrics["accuracy"] - trainer.metrics["accuracy"])
    f1_points = 100 * (tunegate.metrics["macro_f1"] - trainer.metrics["macro_f1"])
    disagree, difference_se = paired_difference(tunegate.metrics.pop("predicted"), trainer.metrics.pop("predicted"),
                                                validation_frame["label"].tolist())
    total_seconds = time.perf_counter() - bench_started

    print(f"model: {params.model.base_model} ({source})")
    print(f"data: {len(train_dynamic)} train examples ({args.splits_dir / 'train.csv'}, seed {train_params.seed}), "
          f"{len(validation_frame)} validation examples; max_length {max_length}; "
          f"real tokens per example {real_tokens / len(train_dynamic):.1f} (Trainer pads to {max_length})")
    print(f"hyperparameters: epochs {train_params.epochs}, batch {train_params.batch_size}, "
          f"lr {train_params.learning_rate:g}, {getattr(train_params, 'lr_schedule', 'linear')} schedule, "
          f"warmup_ratio {train_params.warmup_ratio:g}, weight_decay {train_params.weight_decay:g}, "
          f"max_grad_norm {train_params.max_grad_norm:g}, seed {train_params.seed}; "
          f"threads {args.threads} (seen: tunegate {tunegate.threads_seen}, Trainer {trainer.threads_seen})")
    if reset:
        print(f"note: params.yaml sets {', '.join(reset)}; the bench uses their defaults (plain fine-tuning)")
    print(f"same starting weights: {start_digest}; Trainer optimizer {trainer.extra['optimizer']}, "
          f"{trainer.extra['total_steps']} steps, {trainer.extra['warmup_steps']} warmup; "
          f"tunegate scored at its {tunegate.extra['scored_weights']}, Trainer at its last step")
    print()
    header = f"{'':26}{'examples/s':>11}{'ex/CPU-s':>10}{'train s':>9}{'load avg':>14}{'val acc':>9}{'macro-F1':>10}"
    print(header)
    rows = [(tunegate, "tunegate (dynamic pad)"), (bf16, "tunegate bf16 autocast")]
    if ddp is not None:
        rows.append((ddp, f"tunegate DDP x{args.processes}"))
    for side, label in rows + [(trainer, "Trainer (pad max_length)")]:
        per_cpu = f"{side.examples_per_cpu_second:10.1f}" if side.examples_per_cpu_second else f"{'-':>10}"
        print(f"{label:26}{side.examples_per_second:11.1f}{per_cpu}{side.train_seconds:9.1f}"
              f"{f'{side.load_before:.2f}->{side.load_after:.2f}':>14}"
              f"{side.metrics['accuracy']:9.4f}{side.metrics['macro_f1']:10.4f}")
    print("(load avg: 1-minute load average before -> after the side's training, this bench's own threads included)")
    print()
    print(f"throughput tunegate/Trainer: {speed:.2f}x   (target >= {SPEED_TARGET}x)  {verdict(speed >= SPEED_TARGET)}")
    if cpu_speed is not None:
        print(f"  per CPU-second: {cpu_speed:.2f}x (less sensitive to other jobs on the shared cores)")
    print(f"bf16 autocast vs fp32 (tunegate's loop, this CPU: {cpu_name()}): "
          f"{bf16.examples_per_second / tunegate.examples_per_second:.2f}x examples/s, validation accuracy "
          f"{100 * (bf16.metrics['accuracy'] - tunegate.metrics['accuracy']):+.2f} points")
    if ddp is not None:
        print(f"DDP x{args.processes} ({args.threads} thread(s) each) vs 1 process: "
              f"{ddp.examples_per_second / tunegate.examples_per_second:.2f}x examples/s, validation accuracy "
              f"{100 * (ddp.metrics['accuracy'] - tunegate.metrics['accuracy']):+.2f} points")
    print(f"validation accuracy difference: {accuracy_points:+.2f} points   "
          f"(target within {ACCURACY_TARGET_POINTS})  {verdict(abs(accuracy_points) <= ACCURACY_TARGET_POINTS)}")
    print(f"  macro-F1 difference: {f1_points:+.2f} points")
    print(f"  the two models disagree on {disagree:.1%} of the validation examples: standard error of the "
          f"accuracy difference {difference_se:.2f} points (validation split only; a second seed adds its own)")
    print(f"whole bench: {total_seconds:.0f} s")

    if args.json:
        payload = {
            "model": params.model.base_model, "max_length": max_length, "threads": args.threads,
            "train_examples": len(train_dynamic), "validation_examples": len(validation_frame),
            "epochs": train_params.epochs, "mean_real_tokens": real_tokens / len(train_dynamic),
            "train_params": train_params.model_dump(mode="json"), "reset_options": reset,
            "sides": {side.name: {"examples_per_second": side.examples_per_second,
                                  "examples_per_cpu_second": side.examples_per_cpu_second,
                                  "train_seconds": side.train_seconds, "train_cpu_seconds": side.train_cpu_seconds,
                                  "load_before": side.load_before, "load_after": side.load_after,
                                  "threads_seen": side.threads_seen, "validation": side.metrics, **side.extra}
                      for side in (tunegate, bf16, trainer, *([ddp] if ddp else []))},
            "speed_ratio": speed, "speed_ratio_cpu": cpu_speed, "speed_target": SPEED_TARGET,
            "speed_pass": speed >= SPEED_TARGET,
            "accuracy_difference_points": accuracy_points, "macro_f1_difference_points": f1_points,
            "validation_disagreement": disagree, "accuracy_difference_standard_error_points": difference_se,
            "accuracy_target_points": ACCURACY_TARGET_POINTS,
            "accuracy_pass": abs(accuracy_points) <= ACCURACY_TARGET_POINTS,
            "bench_seconds": total_seconds,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
