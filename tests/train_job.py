"""One small training job on the tiny model, runnable in-process or as `python -m tests.train_job`
(which the kill-and-resume test SIGKILLs mid-run)."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from tests.tiny import ner_records, sentiment_frame

LABELS = ["negative", "positive"]
ENTITY_TYPES = ["PER", "LOC", "ORG"]


def sentiment_splits(tokenizer, n_train: int = 640, n_validation: int = 160):
    from components.data.preprocess import tokenize_split

    frame = sentiment_frame(n_train + n_validation, seed=3).rename(columns={"review": "text", "sentiment": "label"})
    frame["batch_id"] = ["old"] * (n_train // 2) + ["new"] * (len(frame) - n_train // 2)
    train, validation = frame.iloc[:n_train], frame.iloc[n_train:]
    return (tokenize_split(train, tokenizer, LABELS, 32), tokenize_split(validation, tokenizer, LABELS, 32))


def ner_splits(tokenizer, n_train: int = 400, n_validation: int = 100):
    import pandas as pd

    from components.config import iob2_tags
    from components.data.preprocess import tokenize_tagged_split

    records = ner_records(n_train + n_validation, seed=5)
    frame = pd.DataFrame({"text": [" ".join(r["tokens"]) for r in records],
                          "label": [" ".join(r["tags"]) for r in records]})
    tags = iob2_tags(ENTITY_TYPES)
    return (tokenize_tagged_split(frame.iloc[:n_train], tokenizer, tags, 48),
            tokenize_tagged_split(frame.iloc[n_train:], tokenizer, tags, 48))


def train_params(**overrides):
    from components.config import TrainParams

    values = {"epochs": 3, "batch_size": 16, "learning_rate": 3e-3, "warmup_ratio": 0.1, "seed": 11,
              "num_threads": 1, "checkpoint_every_steps": 5}
    values.update(overrides)
    return TrainParams(**values)


def run(base_dir: Path, checkpoint_dir: Path | None, kill_at_step: int | None = None, **overrides):
    """Train the tiny classifier; with kill_at_step the process SIGKILLs itself after that step."""
    from components.model.checkpoints import Checkpointer
    from components.model.modeling import load_classifier, load_tokenizer
    from components.model.train import seed_everything, train_classifier

    tokenizer = load_tokenizer(str(base_dir))
    train, validation = sentiment_splits(tokenizer)
    seed_everything(11)
    model = load_classifier(str(base_dir), LABELS)

    def hard_kill(step: int) -> None:
        if step == kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: as the OOM killer would

    return train_classifier(model, train, validation, LABELS, train_params(**overrides), tokenizer.pad_token_id,
                            checkpoints=Checkpointer(checkpoint_dir) if checkpoint_dir else None,
                            on_step=hard_kill if kill_at_step else None)


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]), kill_at_step=int(sys.argv[3]))
