"""Signed, verified models through a real MLflow store: a registered version's manifest (every file's sha256)
signed with a key pair; a byte flipped or a file swapped in the artifact store is refused by `tunegate
serve`, a running service's hot reload, the pyfunc loader, `tunegate predict` (its Dask workers too) and
promotion; a wrong key is refused; unsigned versions follow registry.require_signature."""

from __future__ import annotations

import io
import json
import logging
import shutil
import tarfile
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import pandas as pd
import pytest
import yaml

import mlflow
from components.config import ServiceSettings
from components.export.integrity import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    ModelIntegrityError,
    TrustPolicy,
    file_sha256,
    listed_below,
    verify_model_dir,
)
from components.export.mlflow_model import onnx_dir_in
from components.lifecycle.registry import CHAMPION, ModelRegistry
from components.lifecycle.signing import generate_key_pair
from components.serving.dask_scoring import pack_model, score_on_worker
from components.serving.deployment import build_service_app, load_served_model
from components.serving.server import BackgroundServer
from tests.fixtures_classifier import held_out, tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures
from tests.signed_models import NAME, register
from tunegate.cli import main as tunegate_main

CPU = ["CPUExecutionProvider"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    return generate_key_pair(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory) -> tuple[Path, Path]:
    return generate_key_pair(tmp_path_factory.mktemp("other-keys"))


@pytest.fixture
def store(tmp_path, tiny_onnx_export, keys) -> tuple[ModelRegistry, str, str]:
    """A SQLite registry holding two signed versions of the tiny classifier; v1 is champion. Checked with `keys`."""
    private_key, public_key = keys
    registry = ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", NAME, artifact_root=tmp_path / "artifacts",
                             trust=TrustPolicy(public_key.read_bytes(), require_signature=True))
    first = register(registry, tiny_onnx_export.out_dir, tmp_path / "staged-1", private_key)
    second = register(registry, tiny_onnx_export.out_dir, tmp_path / "staged-2", private_key)
    registry.promote(first, by="test", reason="first")
    return registry, first, second


def stored_file(registry: ModelRegistry, version: str, relative: str) -> Path:
    """A file of a version where the artifact store keeps it (a local folder here)."""
    return Path(unquote(urlparse(registry.version(version).source).path)) / relative


def stored_export_file(registry: ModelRegistry, version: str, name: str) -> Path:
    """A file of the version's ONNX export (the MLflow Model's artifact) in the artifact store."""
    return onnx_dir_in(stored_file(registry, version, "")) / name


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def project_for(registry: ModelRegistry, root: Path, public_key: Path) -> Path:
    """A project folder whose params.yaml points at the registry, with signatures required."""
    root.mkdir(parents=True, exist_ok=True)
    params = {"data": {"source": "incoming/reviews.csv", "labels": ["negative", "positive"]},
              "model": {"base_model": "builtin:all-minilm-l6-v2"},
              "registry": {"model_name": NAME, "tracking_uri": registry.tracking_uri,
                           "signing": {"public_key": str(public_key)}, "require_signature": True}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def test_registration_signs_a_manifest_of_every_file(store, keys):
    registry, first, _ = store
    info = registry.version(first)
    checked = registry.verify(first)
    assert checked.status == "signed" and checked.key_id == TrustPolicy(keys[1].read_bytes()).key_id
    assert info.tags["signature"] == checked.key_id and info.tags["manifest_sha256"] == checked.manifest_sha256
    manifest = json.loads(stored_file(registry, first, MANIFEST_FILE).read_text())
    listed = {entry["path"] for entry in manifest["files"]}
    onnx = stored_export_file(registry, first, "model.onnx").relative_to(stored_file(registry, first, "")).as_posix()
    assert {"MLmodel", "README.md", onnx, "code/components/export/integrity.py"} <= listed
    assert checked.files == len(listed) and SIGNATURE_FILE not in listed
    assert all(len(entry["sha256"]) == 64 for entry in manifest["files"])
    assert manifest["files"][0]["size"] == stored_file(registry, first, manifest["files"][0]["path"]).stat().st_size


def test_a_flipped_byte_in_the_store_is_refused_at_serve_predict_pyfunc_and_promote(store, keys, tmp_path, monkeypatch,
                                                                                     capsys):
    registry, first, second = store
    onnx = stored_export_file(registry, second, "model.onnx")
    registered = file_sha256(onnx)
    flip_a_byte(onnx)
    tampered = file_sha256(onnx)

    with pytest.raises(ModelIntegrityError) as refused:
        load_served_model(registry, tmp_path / "cache", CPU, version=second)
    assert "model.onnx" in str(refused.value) and registered in str(refused.value) and tampered in str(refused.value)
    assert not (tmp_path / "cache" / NAME / second).exists()  # the bad copy is not kept for the next try

    project = project_for(registry, tmp_path / "project", keys[1])
    texts = project / "texts.csv"
    pd.DataFrame({"text": ["a fine film"]}).to_csv(texts, index=False)
    for command in (["serve", "--version", second, "--port", "1"],
                    ["predict", str(texts), str(project / "out.csv"), "--version", second]):
        assert tunegate_main(["--project", str(project), *command]) == 2
        error = capsys.readouterr().err
        assert "model.onnx" in error and registered in error and tampered in error, error
    assert not (project / "out.csv").exists()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.setenv("TUNEGATE_SIGNING_PUBLIC_KEY", str(keys[1]))
    with pytest.raises(ModelIntegrityError, match="model.onnx"):
        mlflow.pyfunc.load_model(f"models:/{NAME}/{second}")

    with pytest.raises(ModelIntegrityError, match="model.onnx"):
        registry.promote(second, by="test", reason="tampered")
    assert registry.aliases()[CHAMPION] == first
    assert [event["version"] for event in registry.history()] == [first]


def test_a_running_service_keeps_its_champion_when_the_new_one_was_tampered_with(store, tmp_path, caplog):
    registry, first, second = store
    app = build_service_app(registry, tmp_path / "serving", CPU, ServiceSettings(poll_interval_s=0.2))
    flip_a_byte(stored_export_file(registry, second, "tokenizer.json"))
    with BackgroundServer(app) as server, caplog.at_level(logging.ERROR, logger="tunegate.deployment"):
        # The alias moved outside tunegate's promotion (which would refuse): straight through MLflow.
        registry.set_alias(CHAMPION, second)
        deadline = time.monotonic() + 60
        while app.state.model_holder.stats().failed_loads == 0:
            assert time.monotonic() < deadline, "the watcher never tried the new champion"
            time.sleep(0.1)
        answer = httpx.post(f"{server.url}/predict", json={"texts": ["a fine film"]}, timeout=30)
        metrics = httpx.get(f"{server.url}/metrics", timeout=10).text
        metadata = httpx.get(f"{server.url}/metadata", timeout=10).json()
    assert "tokenizer.json" in app.state.model_holder.stats().last_error
    assert answer.status_code == 200 and answer.headers["x-model-version"] == first
    assert "tunegate_model_integrity_refusals_total 1.0" in metrics
    assert metadata["model_version"] == first and metadata["integrity"]["status"] == "signed"
    assert metadata["reloads"]["integrity_refusals"] == 1
    assert any("tokenizer.json" in record.getMessage() and f"still serving version {first}" in record.getMessage()
               for record in caplog.records)


def test_a_wrong_key_is_refused(store, other_keys, tmp_path, monkeypatch):
    registry, first, _ = store
    registry.trust = TrustPolicy(other_keys[1].read_bytes(), require_signature=True)
    with pytest.raises(ModelIntegrityError, match="does not verify with the public key"):
        load_served_model(registry, tmp_path / "cache", CPU, version=first)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.setenv("TUNEGATE_SIGNING_PUBLIC_KEY", other_keys[1].read_text())
    with pytest.raises(ModelIntegrityError, match="does not verify with the public key"):
        mlflow.pyfunc.load_model(f"models:/{NAME}/{first}")


def test_files_and_manifest_swapped_together_are_caught_by_the_signature_and_the_registry(store):
    registry, _, second = store
    folder = stored_file(registry, second, "")
    onnx = stored_export_file(registry, second, "model.onnx")
    flip_a_byte(onnx)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())  # the manifest rewritten to match the new bytes
    for entry in manifest["files"]:
        if entry["path"] == onnx.relative_to(folder).as_posix():
            entry["sha256"] = file_sha256(folder / entry["path"])
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelIntegrityError, match="the registry recorded"):  # the version's manifest_sha256 tag
        registry.verify(second)
    with pytest.raises(ModelIntegrityError, match="does not verify"):  # without the registry's tag: the signature
        verify_model_dir(folder, registry.trust)


def test_unsigned_versions_follow_require_signature(tmp_path, tiny_onnx_export, keys, caplog):
    registry = ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", NAME, artifact_root=tmp_path / "artifacts")
    unsigned = register(registry, tiny_onnx_export.out_dir, tmp_path / "staged", private_key=None)
    assert registry.version(unsigned).tags["signature"] == "unsigned"
    registry.trust = TrustPolicy(keys[1].read_bytes(), require_signature=True)
    with pytest.raises(ModelIntegrityError, match="not signed.*require_signature is true"):
        load_served_model(registry, tmp_path / "cache", CPU, version=unsigned)
    with pytest.raises(ModelIntegrityError, match="not signed"):
        registry.promote(unsigned, by="test", reason="unsigned")
    registry.trust = TrustPolicy(keys[1].read_bytes(), require_signature=False)  # the local profile
    with caplog.at_level(logging.WARNING, logger="tunegate.integrity"):
        served = load_served_model(registry, tmp_path / "cache", CPU, version=unsigned)
    assert served.metadata["integrity"]["status"] == "unsigned"
    assert any("is not signed" in record.getMessage() for record in caplog.records)
    # Unsigned, its files are still checked against its manifest.
    flip_a_byte(stored_export_file(registry, unsigned, "model.onnx"))
    with pytest.raises(ModelIntegrityError, match="model.onnx"):
        registry.verify(unsigned)


def test_a_dask_worker_checks_what_it_unpacked_against_the_manifest(store, tmp_path):
    registry, first, _ = store
    local = registry.download(first, tmp_path / "model")
    onnx_dir = onnx_dir_in(local)
    expected = listed_below(onnx_dir)
    assert expected and {"model.onnx", "tokenizer.json"} <= {entry["path"] for entry in expected}
    digest, packed = pack_model(onnx_dir)
    assert score_on_worker(digest, packed, tuple(CPU), 1, ["a fine film"], 8, expected)[0]["label"]
    # The same archive with one member's bytes changed (a swapped model on its way to the worker).
    changed = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(packed)) as source, tarfile.open(fileobj=changed, mode="w") as target:
        for member in source.getmembers():
            data = bytearray(source.extractfile(member).read())
            if member.name == "model.onnx":
                data[len(data) // 2] ^= 0x01
            target.addfile(member, io.BytesIO(bytes(data)))
    with pytest.raises(ModelIntegrityError, match="model.onnx"):
        score_on_worker("tampered-" + digest, changed.getvalue(), tuple(CPU), 1, ["a fine film"], 8, expected)


def test_a_signed_version_loads_everywhere_with_the_right_key(store, keys, tmp_path, monkeypatch):
    registry, _, second = store
    texts, _ = held_out(8, seed=3)
    served = load_served_model(registry, tmp_path / "cache", CPU, version=second)
    again = load_served_model(registry, tmp_path / "cache", CPU, version=second)  # the cached copy, checked again
    assert served.metadata["integrity"] == again.metadata["integrity"]
    assert served.metadata["integrity"]["status"] == "signed"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.setenv("TUNEGATE_SIGNING_PUBLIC_KEY", str(keys[1]))
    monkeypatch.setenv("TUNEGATE_REQUIRE_SIGNATURE", "true")
    answers = mlflow.pyfunc.load_model(f"models:/{NAME}/{second}").predict(pd.DataFrame({"text": texts}))
    assert answers["label"].tolist() == [p["label"] for p in served.predictor.predict(texts)]
    registry.promote(second, by="test", reason="signed and intact")
    assert registry.aliases()[CHAMPION] == second
    # MLflow's loader wrote its registered_model_meta into the (local) store: tolerated, not a tampered file.
    assert (stored_file(registry, second, "registered_model_meta")).is_file()
    assert registry.verify(second).status == "signed"


def test_a_deleted_manifest_or_signature_is_refused_even_when_signatures_are_not_required(store):
    registry, first, second = store
    registry.trust = TrustPolicy()  # the local profile: no key, nothing required
    stored_file(registry, first, MANIFEST_FILE).unlink()
    with pytest.raises(ModelIntegrityError, match="missing, but the registry recorded sha256"):
        registry.verify(first)
    stored_file(registry, second, SIGNATURE_FILE).unlink()
    with pytest.raises(ModelIntegrityError, match="missing, but the registry recorded .* as signed"):
        registry.verify(second)


def test_manifest_paths_cannot_leave_the_model(tmp_path):
    for path in ("/etc/hostname", "../outside.txt", "a/../../b", "a\\b", "a//b"):
        (tmp_path / MANIFEST_FILE).write_text(json.dumps({"files": [{"path": path, "size": 1, "sha256": "0" * 64}]}))
        with pytest.raises(ModelIntegrityError, match="not a plain relative path"):
            verify_model_dir(tmp_path, TrustPolicy())


def test_pyfunc_refuses_another_signed_version_swapped_in(store, keys, monkeypatch):
    """Every file of v2 replaced by v1's, manifest and signature included: all validly signed, so only the
    registry's record of v2 (its manifest_sha256 tag) tells them apart."""
    registry, first, second = store
    target = stored_file(registry, second, "")
    shutil.rmtree(target)
    shutil.copytree(stored_file(registry, first, ""), target)
    assert verify_model_dir(target, registry.trust).status == "signed"  # on its own it is a good model...
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.setenv("TUNEGATE_SIGNING_PUBLIC_KEY", str(keys[1]))
    with pytest.raises(ModelIntegrityError, match="the registry recorded sha256"):  # ...but not v2
        mlflow.pyfunc.load_model(f"models:/{NAME}/{second}")


def test_a_model_config_cannot_lift_the_environment_s_requirement(tmp_path, tiny_onnx_export, monkeypatch):
    registry = ModelRegistry(f"sqlite:///{tmp_path}/mlflow.db", NAME, artifact_root=tmp_path / "artifacts")
    unsigned = register(registry, tiny_onnx_export.out_dir, tmp_path / "staged", private_key=None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)
    monkeypatch.setenv("TUNEGATE_REQUIRE_SIGNATURE", "true")
    monkeypatch.setenv("TUNEGATE_SIGNING_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\nnot used\n-----END PUBLIC KEY-----")
    with pytest.raises(ModelIntegrityError, match="not signed"):
        mlflow.pyfunc.load_model(f"models:/{NAME}/{unsigned}", model_config={"require_signature": False})


def test_an_approval_of_a_tampered_version_is_refused_before_it_is_recorded(store):
    from flows.approval import Approval, record_decision

    registry, first, second = store
    flip_a_byte(stored_export_file(registry, second, "model.onnx"))
    with pytest.raises(ModelIntegrityError, match="model.onnx"):
        record_decision(registry, second, Approval(True, by="ada", comment="looks fine", how="person"))
    assert "approval" not in registry.version(second).tags and registry.aliases()[CHAMPION] == first


def test_continual_learning_checks_the_champion_s_pytorch_weights(tmp_path, tiny_classifier):
    from components.lifecycle.signing import check_pytorch_weights, pytorch_files_tag

    tags = pytorch_files_tag(tiny_classifier)
    copy = tmp_path / "weights"
    shutil.copytree(tiny_classifier, copy)
    check_pytorch_weights(tags, copy)  # as registered
    flip_a_byte(copy / "model.safetensors")
    with pytest.raises(ModelIntegrityError, match="model.safetensors"):
        check_pytorch_weights(tags, copy)
