"""`tunegate compare`: two registered versions (or folders) on the same labelled rows, their difference with its
paired bootstrap interval, through the real CLI, registry and onnxruntime."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from components.export.to_onnx import export_onnx
from components.lifecycle.registry import CHAMPION, ModelRegistry
from tests.fixtures_classifier import (  # noqa: F401 - fixtures
    held_out,
    save_untrained_classifier,
    tiny_classifier,
    tiny_onnx_export,
)
from tests.signed_models import NAME, register
from tunegate.cli import main as tunegate_main


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_onnx_export, tiny_base_model):
    """A project whose registry holds the tiny classifier (v1, champion) and an untrained one (v2), and rows to
    compare them on."""
    root = tmp_path_factory.mktemp("compare")
    registry = ModelRegistry(f"sqlite:///{root}/mlflow.db", NAME, artifact_root=root / "artifacts")
    untrained = export_onnx(save_untrained_classifier(tiny_base_model, root / "untrained"), root / "untrained-onnx")
    trained_version = register(registry, tiny_onnx_export.out_dir, root / "staged-1", private_key=None)
    register(registry, untrained.out_dir, root / "staged-2", private_key=None)
    registry.set_alias(CHAMPION, trained_version)
    texts, labels = held_out(300, seed=11)
    pd.DataFrame({"id": [f"r{i}" for i in range(len(texts))], "text": texts, "label": labels}).to_csv(
        root / "rows.csv", index=False)
    params = {"data": {"source": "x.csv", "labels": ["negative", "positive"]},
              "model": {"base_model": "builtin:all-minilm-l6-v2"},
              "registry": {"model_name": NAME, "tracking_uri": registry.tracking_uri}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root, untrained.out_dir


def compared(root, capsys, *args: str) -> dict:
    assert tunegate_main(["--project", str(root), "compare", *args, "--rows", str(root / "rows.csv"), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_model_against_itself_differs_by_nothing(project, capsys):
    root, _ = project
    result = compared(root, capsys, "champion", "1")
    assert result["difference"] == 0 and result["low"] == 0 and result["high"] == 0 and result["n"] == 300
    assert result["metric"] == "macro_f1" and result["first"] == "v1 (champion)" and result["second"] == "v1"


def test_a_trained_model_beats_an_untrained_one_beyond_the_interval(project, capsys):
    root, untrained_folder = project
    result = compared(root, capsys, "1", "2", "--metric", "accuracy")
    assert result["champion"] > 0.9 and result["difference"] > 0.2
    assert 0 < result["low"] <= result["difference"] <= result["high"]  # the interval excludes a tie
    assert result["challenger_only_right"] < result["champion_only_right"] and result["mcnemar_p"] < 1e-6
    assert compared(root, capsys, "1", str(untrained_folder), "--metric", "accuracy")["difference"] == pytest.approx(
        result["difference"])  # a folder is the same model as its registered version

    assert tunegate_main(["--project", str(root), "compare", "1", "2", "--rows", str(root / "rows.csv"),
                          "--metric", "accuracy"]) == 0
    text = capsys.readouterr().out
    assert "v1 − v2: +" in text and "95% interval [" in text and "McNemar:" in text
