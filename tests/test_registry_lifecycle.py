"""Promotion history, rollback and manual promotion on a real MLflow SQLite registry."""

from __future__ import annotations

import pytest

from components.lifecycle.registry import CHAMPION, PREVIOUS_CHAMPION, ModelRegistry
from tests.project import write_params
from tunegate.cli import main


@pytest.fixture
def registry(tmp_path) -> ModelRegistry:
    registry = ModelRegistry(f"sqlite:///{tmp_path}/mlflow/mlflow.db", "lifecycle", artifact_root=tmp_path / "art")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.onnx").write_bytes(b"not a real model: the registry does not read it")
    for gate in ("passed", "passed", "failed", "passed"):
        run_id = registry.start_run("lifecycle", "r", {})
        registry.register(run_id, model_dir, {"gate": gate})
    return registry


def test_promotions_and_rollbacks_are_recorded_in_order(registry):
    registry.promote("1", by="ada", reason="first")
    registry.promote("2", by="bob", reason="better")
    registry.promote("4", by="cy", reason="newest")
    assert registry.aliases() == {CHAMPION: "4", PREVIOUS_CHAMPION: "2"}

    assert registry.rollback(by="ops", reason="latency spike") == ("4", "2")
    assert registry.aliases() == {CHAMPION: "2", PREVIOUS_CHAMPION: "1"}
    assert registry.rollback(by="ops", reason="still bad") == ("2", "1")
    assert registry.aliases() == {CHAMPION: "1"}
    with pytest.raises(LookupError, match="no previous champion"):
        registry.rollback(by="ops", reason="nothing left")

    history = registry.history()
    assert [(e["action"], e["version"], e["previous"], e["by"]) for e in history] == [
        ("promote", "1", None, "ada"), ("promote", "2", "1", "bob"), ("promote", "4", "2", "cy"),
        ("rollback", "2", "4", "ops"), ("rollback", "1", "2", "ops")]
    assert registry.version("1").tags["promotion_action"] == "rollback"


def cli(registry: ModelRegistry, tmp_path, *args: str) -> int:
    write_params(tmp_path, {"data": {"source": "x.csv", "labels": ["a", "b"]}, "model": {"base_model": "org/m"},
                            "registry": {"model_name": registry.model_name, "tracking_uri": registry.tracking_uri}})
    return main(["--project", str(tmp_path), *args])


def test_cli_promote_refuses_a_version_that_failed_its_gates_unless_forced(registry, tmp_path, capsys):
    assert cli(registry, tmp_path, "promote", "3") == 2
    assert "did not pass its gates" in capsys.readouterr().err
    assert CHAMPION not in registry.aliases()
    assert cli(registry, tmp_path, "promote", "3", "--force", "--reason", "hotfix for a known bug") == 0
    assert registry.aliases()[CHAMPION] == "3"
    assert registry.version("3").tags["forced_promotion"] == "hotfix for a known bug"


def test_cli_history_and_rollback(registry, tmp_path, capsys):
    assert cli(registry, tmp_path, "promote", "1", "--by", "ada") == 0
    assert cli(registry, tmp_path, "promote", "2", "--by", "bob", "--reason", "better f1") == 0
    assert cli(registry, tmp_path, "rollback", "--by", "ops", "--reason", "bad outputs") == 0
    capsys.readouterr()
    assert cli(registry, tmp_path, "history") == 0
    out = capsys.readouterr().out
    assert "champion v1" in out
    lines = [line for line in out.splitlines() if line[:4].isdigit()]
    assert len(lines) == 3
    assert "rollback" in lines[2] and "v1" in lines[2] and "bad outputs" in lines[2] and "ops" in lines[2]
