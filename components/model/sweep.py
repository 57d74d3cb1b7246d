"""Hyperparameter sweep: the trials params.yaml's `sweep:` section declares, one trial's training run,
and how the best trial becomes the train stage's result without training again.

Plain Python: flows/sweep.py runs the trials as parallel Prefect tasks and records them in MLflow.
Each trial trains in a child process (`python -m components.model.sweep TRIAL_DIR`), so trials running
side by side have their own torch thread pool and their own global RNG: a trial gives the same
model whether it ran alone or next to others.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from components.config import SWEEPABLE, ConfigError, Params, SweepParams, is_sweepable, parse_params
from components.config.params_file import set_param
from components.layout import ProjectLayout

SWEEP_DIR = "sweep"
SUMMARY_FILE = "summary.json"
TRIAL_PARAMS = "params.json"
TRIAL_RESULT = "result.json"
TRIAL_LOG = "train.log"
# Settings that say how a trial runs, not what it learns: never taken over from a trial.
RUNTIME_TRAIN_KEYS = {"train.num_threads"}


# --- the trials ---------------------------------------------------------------------------------
def _distinct(values: list[Any]) -> list[Any]:
    seen, kept = set(), []
    for value in values:
        key = json.dumps(value, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            kept.append(value)
    return kept


def trial_overrides(sweep: SweepParams) -> list[dict[str, Any]]:
    """The trials' train.* overrides, in a stable order.

    grid: every combination, the first key varying slowest, values in the order given.
    random: `sweep.trials` distinct combinations drawn with `sweep.seed` (every combination, in grid
    order, when the space has no more than that).
    """
    keys = list(sweep.space)
    if not keys:
        return []
    choices = [_distinct(list(sweep.space[key])) for key in keys]
    sizes = [len(c) for c in choices]
    total = 1
    for size in sizes:
        total *= size

    def combination(index: int) -> dict[str, Any]:
        picked = {}
        for key, values, size in reversed(list(zip(keys, choices, sizes))):
            index, digit = divmod(index, size)
            picked[key] = values[digit]
        return {key: picked[key] for key in keys}

    if sweep.method == "grid" or sweep.trials >= total:
        return [dict(zip(keys, values)) for values in itertools.product(*choices)]
    # Indices into the grid, drawn without replacement: no enumeration of a large space.
    return [combination(i) for i in random.Random(sweep.seed).sample(range(total), sweep.trials)]


def params_with(params: Params, overrides: dict[str, Any]) -> Params:
    """A validated copy of `params` with the given dotted values replaced (train.*, distill.temperature,
    distill.alpha); ConfigError if one is bad."""
    raw = params.model_dump(mode="json")
    for key, value in overrides.items():
        if not is_sweepable(key):
            raise ConfigError(f"sweep override {key!r}: only {SWEEPABLE} can be swept")
        section, _, name = key.partition(".")
        raw[section][name] = value
    described = ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or "no overrides"
    # env={}: runtime settings from the environment are already in `params`.
    return parse_params(raw, source=f"sweep trial ({described})", env={})


def check_trials(params: Params) -> list[dict[str, Any]]:
    """Every trial's overrides, each checked against the config schema before anything trains."""
    trials = trial_overrides(params.sweep)
    if not trials:
        raise ConfigError("sweep.space is empty: nothing to sweep")
    for overrides in trials:
        params_with(params, overrides)
    return trials


def threads_per_trial(max_concurrency: int, n_trials: int, cores: int | None = None) -> int:
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, min(max_concurrency, n_trials)))


# --- one trial ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialResult:
    index: int
    overrides: dict[str, Any]
    best_score: float
    metric: str
    best_epoch: int
    model_dir: Path
    history_file: Path
    run_id: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(model_dir=str(self.model_dir), history_file=str(self.history_file))
        return data


@dataclass(frozen=True)
class TrialFailure:
    index: int
    overrides: dict[str, Any]
    error: str
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SweepFailed(RuntimeError):
    """Every trial failed; the message holds each trial's error."""


def trial_name(index: int) -> str:
    return f"trial-{index:02d}"


def sweep_dir(layout: ProjectLayout) -> Path:
    return layout.artifacts / SWEEP_DIR  # layout.sweep_dir


def trial_dir(layout: ProjectLayout, index: int) -> Path:
    return sweep_dir(layout) / trial_name(index)


def trial_outputs(directory: Path):
    from components.model.training_run import TrainOutputs

    return TrainOutputs(model_dir=directory / "model", history_file=directory / "train_history.json",
                        checkpoint_dir=directory / "checkpoints")


def trial_command(directory: Path, root: Path, threads: int) -> list[str]:
    return [sys.executable, "-m", "components.model.sweep", str(directory), str(root), str(threads)]


def train_trial(layout: ProjectLayout, params: Params, index: int, overrides: dict[str, Any], threads: int,
                run_id: str | None = None) -> TrialResult:
    """Train one trial into artifacts/sweep/trial-NN/ in a child process; raises with its log's tail."""
    directory = trial_dir(layout, index)
    if directory.exists():
        shutil.rmtree(directory)  # a stale checkpoint there would be resumed as if it were this trial's
    directory.mkdir(parents=True)
    trial_params = params_with(params, overrides)
    if not any(key in overrides for key in RUNTIME_TRAIN_KEYS):
        # Trials side by side share the cores; the threads setting does not change what is learnt.
        trial_params = params_with(trial_params, {"train.num_threads": threads})
    (directory / TRIAL_PARAMS).write_text(json.dumps(trial_params.model_dump(mode="json"), indent=2) + "\n")

    from components.lifecycle.versioning import tool_env

    env = {**tool_env(), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    with (directory / TRIAL_LOG).open("w") as log:
        # cwd is the trial directory: the child imports the installed components, not a project copy.
        done = subprocess.run(trial_command(directory, layout.root, threads), cwd=directory, env=env, check=False,
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = (directory / TRIAL_LOG).read_text(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"{trial_name(index)} {overrides} failed (exit {done.returncode}):\n" + "\n".join(tail))
    outcome = json.loads((directory / TRIAL_RESULT).read_text())
    outputs = trial_outputs(directory)
    return TrialResult(index, dict(overrides), float(outcome["best_score"]), outcome["metric"],
                       int(outcome["best_epoch"]), outputs.model_dir, outputs.history_file, run_id, seconds)


def _child_main(directory: Path, root: Path, threads: int) -> None:
    """In the child process: train with the trial's params into its directory."""
    import torch

    from components.model.training_run import train_model

    torch.set_num_threads(threads)
    params = parse_params(json.loads((directory / TRIAL_PARAMS).read_text()), source=str(directory), env={})
    result = train_model(ProjectLayout(root), params, trial_outputs(directory))
    (directory / TRIAL_RESULT).write_text(json.dumps({
        "best_score": float(result.best_score), "metric": result.metric, "best_epoch": result.best_epoch,
        "train_examples": result.train_examples}, indent=2) + "\n")


# --- picking and applying the best ----------------------------------------------------------------
def best_trial(results: list[TrialResult]) -> TrialResult:
    """Highest best_score; among equals the lowest index."""
    if not results:
        raise ValueError("no trial finished")
    return min(results, key=lambda r: (-r.best_score, r.index))


def all_failed(failures: list[TrialFailure]) -> SweepFailed:
    detail = "\n\n".join(f"{trial_name(f.index)} {f.overrides}:\n{f.error}" for f in failures)
    return SweepFailed(f"all {len(failures)} sweep trials failed:\n\n{detail}")


def _replace(source: Path, target: Path) -> None:
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    (shutil.copytree if source.is_dir() else shutil.copy2)(source, target)


def apply_trial(layout: ProjectLayout, params: Params, trial: TrialResult) -> dict[str, Any]:
    """Make the trial the train stage's result: its values into params.yaml, its model and history
    into the stage's outputs, and `dvc commit -f train` so that `dvc repro train` has nothing to do.

    Returns the values params.yaml held before, per key.
    """
    from components.lifecycle.versioning import run_dvc
    from components.model.training_run import train_outputs

    previous = {}
    current = params.model_dump(mode="json")
    for key, value in trial.overrides.items():
        if key in RUNTIME_TRAIN_KEYS:
            continue
        section, _, name = key.partition(".")
        previous[key] = current[section].get(name)
        if previous[key] != value:
            set_param(layout.params_file, key, value)
    outputs = train_outputs(layout, params_with(params, trial.overrides))
    source = trial_outputs(trial.model_dir.parent)
    _replace(source.model_dir, outputs.model_dir)
    _replace(source.history_file, outputs.history_file)
    run_dvc(layout.root, "commit", "--force", "--quiet", "train", capture=True)
    return previous


# --- a sweep that need not run again --------------------------------------------------------------
def train_lock(root: Path) -> dict | None:
    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    return ((yaml.safe_load(lock.read_text()) or {}).get("stages") or {}).get("train")


def train_stage_clean(root: Path) -> bool:
    from components.lifecycle.versioning import run_dvc

    done = run_dvc(root, "status", "--json", "train", capture=True, check=False)
    if done.returncode != 0:
        return False
    try:
        return not json.loads(done.stdout or "{}")
    except json.JSONDecodeError:
        return False


def sweep_settings(params: Params) -> dict[str, Any]:
    """The sweep settings that decide its result: not where the trials ran (sweep.runner, sweep.address)."""
    return params.sweep.model_dump(mode="json", exclude={"runner", "address"})


def previous_summary(layout: ProjectLayout, params: Params) -> dict | None:
    """The last sweep's summary when it still stands: the same sweep settings, and the train stage
    exactly as that sweep committed it (same data, code, params and model, per dvc.lock and DVC)."""
    path = sweep_dir(layout) / SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if summary.get("sweep") != sweep_settings(params):
        return None
    lock = train_lock(layout.root)
    if lock is None or summary.get("train_lock") != lock or not train_stage_clean(layout.root):
        return None
    return summary


@dataclass
class SweepSummary:
    method: str
    metric: str
    best: TrialResult
    trials: list[TrialResult]
    failures: list[TrialFailure] = field(default_factory=list)
    previous_values: dict[str, Any] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        rows = [{"trial": t.index, "status": "finished", **t.overrides, "best_score": t.best_score,
                 "best_epoch": t.best_epoch, "seconds": round(t.seconds, 1), "run_id": t.run_id,
                 "best": t.index == self.best.index} for t in self.trials]
        rows += [{"trial": f.index, "status": "failed", **f.overrides, "best_score": None, "run_id": f.run_id,
                  "error": f.error.splitlines()[-1] if f.error else "", "best": False} for f in self.failures]
        return sorted(rows, key=lambda r: r["trial"])

    def to_dict(self, params: Params, root: Path) -> dict[str, Any]:
        return {"method": self.method, "metric": self.metric, "best_trial": self.best.index,
                "best_score": self.best.best_score, "best_overrides": self.best.overrides,
                "best_run_id": self.best.run_id, "previous_values": self.previous_values,
                "trials": self.table(), "failed": len(self.failures),
                "sweep": sweep_settings(params), "train_lock": train_lock(root), "cached": False}


if __name__ == "__main__":
    _child_main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
