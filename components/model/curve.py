"""Learning curves: how the test metric grows with the number of training labels, per method.

Plain Python; flows/curve.py runs the points as Prefect tasks and records them in MLflow.

- Subsets are nested and fixed by seed: one seeded order of the training split per seed, and a size's
  subset is the first `size` rows of it, so the 256 rows contain the 64. For classification the order
  is stratified: every prefix holds each class in its share of the whole split (within one row). For
  token classification (NER) a sentence holds many tags, so the order is a seeded shuffle of sentences.
- Each point trains as a sweep trial does (components/model/sweep.py train_trial: a child process with
  its own threads and RNG) inside a project-shaped workspace whose training split is the subset and
  whose validation and test splits are the project's own, then the evaluate stage's code scores it.
- A point's result is stored under a key over everything that shapes it (the splits' content, the
  training params after the method's overrides, size and seed): a re-run skips finished points, and a
  run killed half way resumes at the first unfinished one.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import shutil
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from components.config import ConfigError, Params
from components.config.curve import ALL
from components.config.model import DEFAULT_BATCH_SIZE
from components.layout import ProjectLayout

CURVE_DIR = "curve"
POINTS_DIR = "points"
RESULT_FILE = "result.json"
# Bump when what a stored result means changes (the subset order, the metrics): old results are then
# not taken for new ones.
CURVE_FORMAT = "1"
# The evaluate stage draws a confusion-matrix PNG with pyplot, which is not thread-safe; scoring is
# short next to training, so points score one at a time.
_scoring = threading.Lock()


# --- the subsets ----------------------------------------------------------------------------------
def stratified_order(labels: list, seed: int) -> list[int]:
    """A seeded permutation of the rows whose every prefix holds each class in its share of all rows
    (within one row): each class's rows shuffled, then at each position the class furthest below its
    share so far goes next (ties: the first class in sorted order)."""
    rng = random.Random(f"tunegate-curve:{seed}")
    groups: dict[Any, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(label, []).append(index)
    classes = sorted(groups)
    for label in classes:
        rng.shuffle(groups[label])
    total, taken, order = len(labels), dict.fromkeys(classes, 0), []
    for position in range(1, total + 1):
        label = max(classes, key=lambda c: position * len(groups[c]) / total - taken[c])
        order.append(groups[label][taken[label]])
        taken[label] += 1
    return order


def sentence_order(count: int, seed: int) -> list[int]:
    """Token classification: a seeded shuffle of the sentences (each holds many tags of many types)."""
    order = list(range(count))
    random.Random(f"tunegate-curve:{seed}").shuffle(order)
    return order


def subset_order(labels, seed: int) -> list[int]:
    """labels: a split's (a list, or the array and rows load_tokenized gives)."""
    from components.data.ragged import holds_token_labels

    return sentence_order(len(labels), seed) if holds_token_labels(labels) else stratified_order(labels, seed)


def subset(order: list[int], size: int) -> list[int]:
    """The first `size` rows of the order, in the split's own order."""
    return sorted(order[:size])


# --- the plan -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurvePoint:
    method: str
    overrides: dict[str, Any]  # the method's train.* overrides
    size: int | str  # as asked: a row count or "all"
    labels: int  # training rows (NER: sentences) it trains on
    seed: int
    epochs: int
    validate_every: int  # epochs between validation passes: as many passes as the method's own recipe makes
    key: str

    @property
    def name(self) -> str:
        return f"{self.method}-{self.size}-seed{self.seed}"

    def train_overrides(self) -> dict[str, Any]:
        """What the point trains with: the method's values, its seed and epochs; rows are chosen by the
        curve (max_train_examples would draw its own, un-nested sample) and no step checkpoints (a killed
        point starts again: its epoch checkpoints suffice)."""
        return {**self.overrides, "train.seed": self.seed, "train.epochs": self.epochs,
                "train.validate_every": self.validate_every, "train.max_train_examples": None,
                "train.checkpoint_every_steps": None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def curve_dir(layout: ProjectLayout) -> Path:
    return layout.artifacts / CURVE_DIR


def point_dir(layout: ProjectLayout, key: str) -> Path:
    return curve_dir(layout) / POINTS_DIR / key


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "-"


def require_splits(layout: ProjectLayout) -> None:
    missing = [str(p) for p in (layout.tokenized_file("train"), layout.tokenized_file("validation"),
                                layout.split_file("train"), layout.split_file("test")) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"the curve needs the preprocess stage's outputs, missing: {', '.join(missing)}; "
                                "run `dvc repro preprocess` (or let `tunegate curve` prepare them)")


def epochs_for(rows: int, batch_size: int, epochs: int, min_steps: int) -> int:
    steps_per_epoch = max(1, math.ceil(rows / batch_size))
    return max(epochs, math.ceil(min_steps / steps_per_epoch))


def validation_interval(epochs: int, recipe_epochs: int) -> int:
    """Epochs between validation passes, so that a point validates as often as the method's own recipe
    (train.epochs) does: 50 epochs over 64 rows would otherwise spend most of their time scoring the
    validation split."""
    return math.ceil(epochs / recipe_epochs)


def point_key(layout: ProjectLayout, params: Params, train_overrides: dict[str, Any], size: int | str,
              labels: int) -> str:
    """Everything a point's figures depend on: the training fingerprint the train stage keys its
    checkpoints with (task, model, adapt, train after the overrides, labels, the tokenized training and
    validation splits, the starting point), the test rows and the template they are read through,
    the subset (size, rows; the seed is train.seed) and this module's format."""
    from components.model.sweep import params_with
    from components.model.training_run import training_fingerprint

    # How a point runs (threads) does not change what it learns.
    shaped = params_with(params, {**train_overrides, "train.num_threads": None})
    digest = hashlib.sha256(training_fingerprint(layout, shaped).encode())
    digest.update(_file_digest(layout.split_file("test")).encode())
    digest.update(json.dumps({"format": CURVE_FORMAT, "size": size, "labels": labels,
                              "data": params.data.model_dump(mode="json", include={"labels", "template"})},
                             sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def plan_points(layout: ProjectLayout, params: Params) -> list[CurvePoint]:
    """Every point (method x size x seed), each method's overrides checked against the config schema
    before anything trains; sizes at or above the training split's rows are the "all" point."""
    from components.data.preprocess import load_tokenized
    from components.model.sweep import params_with

    require_splits(layout)
    curve = params.curve
    rows = len(load_tokenized(layout.tokenized_file("train"), batch_ids=False))
    sizes: list[tuple[int | str, int]] = []
    for size in curve.sizes:
        label, count = (ALL, rows) if size == ALL or size >= rows else (size, size)
        if all(label != seen for seen, _ in sizes):
            sizes.append((label, count))
    bases = {}
    for method, overrides in curve.methods.items():
        try:
            bases[method] = params_with(params, overrides)
        except ConfigError as error:
            raise ConfigError(f"curve.methods.{method}: {error}") from None
    # Smallest size first, every method and seed at it: a long curve stopped halfway has the whole
    # left part of every line (and the cheap points) rather than one method's line.
    points = []
    for label, count in sizes:
        for method, overrides in curve.methods.items():
            base = bases[method]
            batch_size = base.train.batch_size if base.train.batch_size != "auto" else DEFAULT_BATCH_SIZE
            epochs = epochs_for(count, batch_size, base.train.epochs, curve.min_steps)
            validate_every = validation_interval(epochs, base.train.epochs)
            for seed in curve.seeds:
                draft = CurvePoint(method, dict(overrides), label, count, seed, epochs, validate_every, key="")
                points.append(replace(draft, key=point_key(layout, params, draft.train_overrides(), label, count)))
    return points


# --- one point ------------------------------------------------------------------------------------
def cached_result(layout: ProjectLayout, point: CurvePoint) -> dict | None:
    path = point_dir(layout, point.key) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a torn write: train it again


def _link(target: Path, link: Path) -> None:
    if target.exists():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target.resolve(), target_is_directory=target.is_dir())


def prepare_workspace(layout: ProjectLayout, work: ProjectLayout, point: CurvePoint) -> None:
    """A project-shaped folder the train and evaluate stages read as they read the project: the point's
    subset as the training split (tokenized and as rows, in the same order), the project's own
    validation and test splits and starting point (links: nothing of the project is copied or changed)."""
    from components.data.preprocess import load_tokenized, save_tokenized

    full = load_tokenized(layout.tokenized_file("train"))
    rows = subset(subset_order(full.labels, point.seed), point.labels)
    work.tokenized_dir.mkdir(parents=True, exist_ok=True)
    save_tokenized(full.select(rows), work.tokenized_file("train"))
    frame = layout.read_split("train")
    work.splits_dir.mkdir(parents=True, exist_ok=True)
    frame.iloc[rows].to_csv(work.split_file("train"), index=False, lineterminator="\n")
    # Everything else the preprocess stage wrote (the other splits, a record of data.template ...) as is.
    for folder, mine in ((layout.tokenized_dir, work.tokenized_dir), (layout.splits_dir, work.splits_dir)):
        for entry in folder.iterdir():
            if not entry.name.startswith("train."):
                _link(entry, mine / entry.name)
    for name in ("adapted", "start", "teacher", "distill"):
        _link(layout.artifacts / name, work.artifacts / name)


def point_result(point: CurvePoint, history: dict, test: dict, seconds: float, run_id: str | None) -> dict:
    best = next(r for r in history["history"] if r["epoch"] == history["best_epoch"])
    epochs = history["history"]
    result = {**point.to_dict(), "run_id": run_id, "best_epoch": history["best_epoch"],
              "epochs_run": len(epochs), "train_seconds": round(seconds, 2),
              "seconds_per_epoch": round(sum(r["seconds"] for r in epochs) / max(len(epochs), 1), 3),
              "trainable_parameters": history.get("trainable_parameters", 0),
              "total_parameters": history.get("total_parameters", 0)}
    result["trainable_share"] = result["trainable_parameters"] / max(result["total_parameters"], 1)
    for name in ("accuracy", "macro_f1", "entity_f1"):
        if best.get(f"validation_{name}") is not None:
            result[f"val_{name}"] = best[f"validation_{name}"]
        if test.get(name) is not None:
            result[f"test_{name}"] = test[name]
    result["test_n"] = test.get("n")
    return result


KEPT_FILES = ("train_history.json", "train.log", "params.json")


def run_point(layout: ProjectLayout, params: Params, point: CurvePoint, threads: int,
              run_id: str | None = None) -> dict:
    """Train the point (a sweep trial in its workspace), score it on the test split with the evaluate
    stage's code, and store its result; the weights are not kept (a curve has dozens of points)."""
    from components.model.evaluation_run import evaluate_on_test
    from components.model.sweep import params_with, train_trial

    directory = point_dir(layout, point.key)
    if directory.exists():
        shutil.rmtree(directory)  # an unfinished earlier attempt
    work = ProjectLayout(directory / "work")
    prepare_workspace(layout, work, point)
    trial = train_trial(work, params, 0, point.train_overrides(), threads, run_id=run_id)
    shutil.move(trial.model_dir, work.model_dir)
    with _scoring:
        evaluate_on_test(work, params_with(params, point.train_overrides()))
    test = json.loads(work.metrics_file.read_text())
    history = json.loads(trial.history_file.read_text())
    for name in KEPT_FILES:
        if (trial.model_dir.parent / name).is_file():
            shutil.copy2(trial.model_dir.parent / name, directory / name)
    shutil.rmtree(work.root)
    result = point_result(point, history, test, trial.seconds, run_id)
    # Written last, whole: a point killed before this line has no result and trains again.
    partial = directory / (RESULT_FILE + ".tmp")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(directory / RESULT_FILE)
    return result
