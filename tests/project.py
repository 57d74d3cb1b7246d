"""A throwaway tunegate project: a real git repo with DVC, the project's dvc.yaml and code deps,
a tiny model and easy data, as a user's checkout would hold them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.tiny import sentiment_frame

REPO_ROOT = Path(__file__).resolve().parents[1]
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "tunegate-test", "GIT_AUTHOR_EMAIL": "test@tunegate.invalid",
                "GIT_COMMITTER_NAME": "tunegate-test", "GIT_COMMITTER_EMAIL": "test@tunegate.invalid"}


# The explain and robustness stages on, with budgets that keep a tiny run quick.
SMALL_INSPECTIONS = {"explain": {"enabled": True, "max_evals": 40, "report_errors": 2, "report_correct": 1,
                                 "faithfulness_rows": 8},
                     "robustness": {"enabled": True, "max_rows": 40}}


def tiny_params(base_model: Path, **sections) -> dict:
    params = {
        "task": "sequence-classification",
        "data": {"source": "incoming/reviews.csv", "text_column": "review", "label_column": "sentiment",
                 "labels": ["negative", "positive"], "min_rows": 100, "max_chars": 500},
        "split": {"validation_fraction": 0.15, "test_fraction": 0.2},
        "model": {"base_model": str(base_model), "max_length": 32},
        "adapt": {"enabled": False},
        "train": {"epochs": 3, "batch_size": 16, "learning_rate": 0.002, "warmup_ratio": 0.0, "seed": 7,
                  "init_from": "base"},
        "gate": {"min_accuracy": 0.8, "min_macro_f1": 0.8, "max_regression": 0.02},
        "export": {"min_agreement": 0.95, "max_accuracy_drop": 0.03},
        "registry": {"model_name": "tiny-sentiment"},
        "approval": {"profile": "production", "timeout_s": 300, "poll_interval_s": 1},
        # Off in the tiny projects of tests about other things (the stages still run, and write that they
        # are off): importing shap and onnxruntime for them cost ~15 s per retrain. The end-to-end
        # pipeline tests turn them on with SMALL_INSPECTIONS.
        "explain": {"enabled": False},
        "robustness": {"enabled": False},
        "distill": {"enabled": False, "teacher_model": None, "teacher_train": {}},  # keys dvc.yaml's stages track
        "evaluate": {"slices": []},  # dvc.yaml's evaluate stage tracks the section: it must be there
    }
    for section, values in sections.items():
        params.setdefault(section, {}).update(values)
    return params


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, env={**os.environ, **GIT_IDENTITY},
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_project(root: Path, base_model: Path, rows: int = 600, **sections) -> Path:
    root.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "dvc.yaml", root / "dvc.yaml")
    # dvc.yaml lists the step code as dependencies; the stages themselves run the installed package.
    shutil.copytree(REPO_ROOT / "components", root / "components", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "incoming").mkdir()
    sentiment_frame(rows, seed=1).to_csv(root / "incoming" / "reviews.csv", index=False)
    write_params(root, tiny_params(base_model, **sections))
    (root / ".gitignore").write_text("/artifacts/\n/mlflow/\n/.prefect/\n")
    git(root, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "test project")
    return root


def write_params(root: Path, params: dict) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def read_params(root: Path) -> dict:
    return yaml.safe_load((root / "params.yaml").read_text())
