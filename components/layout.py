"""Where each step reads and writes inside a project. dvc.yaml names the same paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

SPLITS = ("train", "validation", "test")


def read_split_csv(path: Path) -> pd.DataFrame:
    """A split's rows as every step reads them: each column text, an empty cell an empty string (not NaN),
    so an id like "007" or a text like "NA" comes back as written."""
    import pandas as pd  # here, not at the top: the layout is read by every command, most never touch a split

    return pd.read_csv(path, dtype=str, keep_default_na=False)


@dataclass(frozen=True)
class ProjectLayout:
    root: Path

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def validation_report(self) -> Path:
        return self.artifacts / "validation" / "report.json"

    @property
    def validation_docs(self) -> Path:
        return self.artifacts / "validation" / "docs"

    @property
    def splits_dir(self) -> Path:
        return self.artifacts / "splits"

    def split_file(self, split: str) -> Path:
        return self.splits_dir / f"{split}.csv"

    def read_split(self, split: str) -> pd.DataFrame:
        """The rows of one split (train, validation, test), as read_split_csv reads them."""
        return read_split_csv(self.split_file(split))

    @property
    def tokenized_dir(self) -> Path:
        return self.artifacts / "tokenized"

    def tokenized_file(self, split: str) -> Path:
        return self.tokenized_dir / f"{split}.arrow"

    @property
    def adapted_dir(self) -> Path:
        """The base model after domain-adaptive pretraining (or a card saying it was skipped)."""
        return self.artifacts / "adapted"

    @property
    def start_dir(self) -> Path:
        """Where fine-tuning starts: a card naming the base model, or the champion's weights."""
        return self.artifacts / "start"

    @property
    def checkpoints_dir(self) -> Path:
        # Outside artifacts/: DVC deletes a stage's outputs before running it, checkpoints included.
        return self.root / ".tunegate" / "checkpoints"

    @property
    def sweep_dir(self) -> Path:
        return self.artifacts / "sweep"

    @property
    def model_dir(self) -> Path:
        return self.artifacts / "model"

    @property
    def train_history(self) -> Path:
        return self.artifacts / "train_history.json"

    @property
    def eval_dir(self) -> Path:
        return self.artifacts / "eval"

    @property
    def metrics_file(self) -> Path:
        return self.eval_dir / "metrics.json"

    @property
    def onnx_dir(self) -> Path:
        return self.artifacts / "onnx"

    @property
    def parity_file(self) -> Path:
        return self.artifacts / "export" / "parity.json"

    # The stages after export, and distillation's: their outputs that the gate and tracking read.
    @property
    def robustness_dir(self) -> Path:
        return self.artifacts / "robustness"

    @property
    def robustness_metrics(self) -> Path:
        return self.robustness_dir / "metrics.json"

    @property
    def robustness_flipped(self) -> Path:
        return self.robustness_dir / "flipped.csv"

    @property
    def explain_dir(self) -> Path:
        return self.artifacts / "explain"

    @property
    def explain_report(self) -> Path:
        return self.explain_dir / "report.html"

    @property
    def explain_summary(self) -> Path:
        return self.explain_dir / "summary.json"

    @property
    def faithfulness_file(self) -> Path:
        return self.explain_dir / "faithfulness.json"

    @property
    def teacher_dir(self) -> Path:
        return self.artifacts / "teacher"

    @property
    def teacher_card(self) -> Path:
        """{"enabled": false} when the teacher stage skipped; the teacher's settings when it trained one."""
        return self.teacher_dir / "tunegate-teacher.json"

    @property
    def teacher_metrics(self) -> Path:
        return self.teacher_dir / "metrics.json"

    @property
    def mlflow_dir(self) -> Path:
        return self.root / "mlflow"

    @property
    def run_lock(self) -> Path:
        return self.root / ".tunegate" / "run.lock"
