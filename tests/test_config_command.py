"""`tunegate config` through the real CLI: the resolved configuration, each value commented with its source
(default, params.yaml, environment), in the loader's precedence."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

from components.config import load_params
from tunegate.cli import main

PARAMS = """\
data:
  source: reviews.csv
  labels: [negative, positive]
  min_rows: 50
model:
  base_model: builtin:all-minilm-l6-v2
train:
  epochs: 3
  lora: {r: 4}
serve:
  port: 8001
  host: 0.0.0.0
"""


def write_params(tmp_path: Path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(PARAMS, encoding="utf-8")
    return path


def sources(text: str) -> dict[str, tuple[str, str]]:
    """dotted key -> (value text, source comment) of every setting line."""
    found, stack = {}, []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.match(r"^( *)([A-Za-z0-9_]+):(?: (.*?)  # (.*))?$", line)
        assert match, f"not a setting line: {line!r}"
        depth = len(match.group(1)) // 2
        stack[depth:] = [match.group(2)]
        if match.group(3) is not None:
            found[".".join(stack)] = (match.group(3), match.group(4))
    return found


def run_config(capsys, *argv: str) -> str:
    assert main(["config", *argv]) == 0
    return capsys.readouterr().out


def test_each_value_names_its_source_in_the_loader_s_precedence(tmp_path, capsys, monkeypatch):
    params = write_params(tmp_path)
    monkeypatch.setenv("TUNEGATE_SERVE__PORT", "9100")  # over params.yaml's 8001
    monkeypatch.setenv("TUNEGATE_APPROVAL__TIMEOUT_S", "60")  # over the default

    out = run_config(capsys, "--params", str(params))
    found = sources(out)

    assert found["serve.port"] == ("9100", "env TUNEGATE_SERVE__PORT")
    assert found["approval.timeout_s"] == ("60", "env TUNEGATE_APPROVAL__TIMEOUT_S")
    assert found["serve.host"] == ("0.0.0.0", "params.yaml")
    assert found["train.epochs"] == ("3", "params.yaml")
    assert found["train.lora.r"] == ("4", "params.yaml")
    assert found["train.lora.alpha"] == ("16", "default")
    assert found["data.min_rows"] == ("50", "params.yaml")
    assert found["data.max_quarantine_fraction"] == ("0.1", "default")
    assert found["model.max_length"] == ("64", "default")
    assert found["serve.max_batch_size"] == ("64", "default")
    # Valid YAML that reads back as the configuration the loader makes from the same file and environment.
    resolved = load_params(params, env={"TUNEGATE_SERVE__PORT": "9100", "TUNEGATE_APPROVAL__TIMEOUT_S": "60"})
    assert yaml.safe_load(out) == resolved.model_dump(mode="json")
    assert len(found) == len([line for line in out.splitlines() if "  # " in line])


def test_a_section_or_setting_alone(tmp_path, capsys, monkeypatch):
    params = write_params(tmp_path)
    monkeypatch.delenv("TUNEGATE_SERVE__PORT", raising=False)

    train = sources(run_config(capsys, "train", "--params", str(params)))
    assert set(key.split(".")[0] for key in train) == {"train"}
    assert train["train.learning_rate"] == ("0.0001", "default")

    port = sources(run_config(capsys, "serve.port", "--params", str(params)))
    assert port == {"serve.port": ("8001", "params.yaml")}


def test_the_project_s_params_file_and_a_wrong_key(tmp_path, capsys, monkeypatch):
    write_params(tmp_path)
    monkeypatch.delenv("TUNEGATE_SERVE__PORT", raising=False)
    assert main(["--project", str(tmp_path), "config", "data.source"]) == 0
    assert "source: reviews.csv  # params.yaml" in capsys.readouterr().out

    assert main(["--project", str(tmp_path), "config", "train.epoch"]) == 2
    error = capsys.readouterr().err
    assert "'train.epoch' is not a setting" in error and "epochs" in error


def test_an_environment_variable_setting_a_whole_section_field(tmp_path, capsys, monkeypatch):
    params = write_params(tmp_path)
    monkeypatch.setenv("TUNEGATE_REGISTRY__SIGNING", "{public_key: keys/k.pub}")
    found = sources(run_config(capsys, "registry", "--params", str(params)))
    assert found["registry.signing.public_key"] == ("keys/k.pub", "env TUNEGATE_REGISTRY__SIGNING")
    assert found["registry.signing.private_key_env"] == ("TUNEGATE_SIGNING_KEY", "default")


def test_the_installed_command(tmp_path):
    params = write_params(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "TUNEGATE_SERVE__PORT": "9200"}
    done = subprocess.run([sys.executable, "-m", "tunegate", "config", "serve", "--params", str(params)],
                          capture_output=True, text=True, env=env, cwd=Path(__file__).resolve().parents[1],
                          timeout=120)
    assert done.returncode == 0, done.stderr
    found = sources(done.stdout)
    assert found["serve.port"] == ("9200", "env TUNEGATE_SERVE__PORT")
    assert found["serve.host"] == ("0.0.0.0", "params.yaml")
    assert found["serve.replicas"] == ("1", "default")
