"""A tiny sentiment classifier trained for about a second, and its int8 ONNX export.

Import the fixtures into a test module (`from tests.fixtures_classifier import tiny_classifier`).
pytest registers an imported fixture once per importing module, so a session scope alone would
build them once per module; the builds are memoised here so the whole session shares one of each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from tests.tiny import sentiment_frame

LABELS = ["negative", "positive"]

_built: dict[tuple[str, Path], Any] = {}


def _once(key: tuple[str, Path], build: Callable[[], Any]) -> Any:
    if key not in _built:
        _built[key] = build()
    return _built[key]


def train_tiny_classifier(base_dir: Path, out_dir: Path, *, steps: int = 200, seed: int = 0) -> Path:
    """Fine-tune the tiny base on easy reviews and save model + tokenizer as a pipeline would."""
    import torch

    from components.model.modeling import load_classifier, load_tokenizer

    torch.manual_seed(seed)
    model = load_classifier(str(base_dir), LABELS)
    tokenizer = load_tokenizer(str(base_dir))
    frame = sentiment_frame(512, seed=seed + 1)
    texts = frame["review"].tolist()
    targets = torch.tensor([LABELS.index(label) for label in frame["sentiment"]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    batch_size = 32
    # Ops this small gain nothing from threads, and spinning threads slow down 4x when another
    # process holds the cores (seen on a shared 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for step in range(steps):
            start = (step * batch_size) % len(texts)
            batch = tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=64,
                              return_tensors="pt")
            loss = model(**batch, labels=targets[start:start + batch_size]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def save_untrained_classifier(base_dir: Path, out_dir: Path, *, seed: int = 0) -> Path:
    """Same architecture and labels with a fresh head: a model that must disagree with the trained one."""
    import torch

    from components.model.modeling import load_classifier, load_tokenizer

    torch.manual_seed(seed)
    load_classifier(str(base_dir), LABELS).save_pretrained(out_dir)
    load_tokenizer(str(base_dir)).save_pretrained(out_dir)
    return out_dir


def held_out(n: int = 200, seed: int = 7) -> tuple[list[str], list[str]]:
    frame = sentiment_frame(n, seed=seed)
    return frame["review"].tolist(), frame["sentiment"].tolist()


@pytest.fixture(scope="session")
def tiny_classifier(tiny_base_model: Path, tmp_path_factory) -> Path:
    return _once(("classifier", tiny_base_model),
                 lambda: train_tiny_classifier(tiny_base_model, tmp_path_factory.mktemp("tiny-classifier")))


@pytest.fixture(scope="session")
def tiny_onnx_export(tiny_classifier: Path, tmp_path_factory):
    """The ExportResult of an int8 export of `tiny_classifier`."""
    from components.export.to_onnx import export_onnx

    return _once(("onnx-int8", tiny_classifier),
                 lambda: export_onnx(tiny_classifier, tmp_path_factory.mktemp("tiny-onnx") / "export"))
