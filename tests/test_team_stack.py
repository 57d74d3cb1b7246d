"""The team stack end to end, every part a real server: PostgreSQL (pgserver), S3 (moto), an MLflow server on
both (basic-auth on), a Prefect server with a process work pool and its worker. A project connected to it
is retrained by the worker; a teammate approves from a second clone with her own MLflow login (refused
until granted EDIT), then pulls the champion's data, reproduces the model and serves it; no secret
reaches MLflow, Prefect's logs or a committed file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures_classifier import tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures
from tests.project import GIT_IDENTITY, REPO_ROOT, git, make_project
from tests.servers import free_port, wait_until_answers

pytestmark = pytest.mark.slow

MODEL = "tiny-sentiment"


def tunegate(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "tunegate", "--project", str(cwd), *args], cwd=cwd,
                          env={**os.environ, **GIT_IDENTITY, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
    return done


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from tunegate.stack.settings import StackSecrets, StackSettings

    home = tmp_path_factory.mktemp("team") / "stack"
    here = tmp_path_factory.mktemp("cwd")
    ports: list[str] = []
    while len(ports) < 3:  # three different ports, even if the kernel hands one out twice
        port = str(free_port())
        ports += [port] if port not in ports else []
    started = tunegate("stack", "up", "--detach", "--auth", "--dir", str(home), "--s3-port", ports[0],
                       "--mlflow-port", ports[1], "--prefect-port", ports[2], cwd=here, timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield StackSettings.load(home), StackSecrets.load_or_create(home)
    finally:
        stopped = tunegate("stack", "down", "--dir", str(home), cwd=here, timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def team_project(root: Path, base_model: Path) -> Path:
    """A user's checkout: the project files and the flow code the worker runs (flows/, prefect.yaml)."""
    make_project(root, base_model)  # the production approval profile: a person answers
    shutil.copytree(REPO_ROOT / "flows", root / "flows", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO_ROOT / "prefect.yaml", root / "prefect.yaml")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "flows")
    return root


def s3_keys_under(stack, keys, prefix: str) -> list[str]:
    from tunegate.stack.services import s3_client

    listing = s3_client(stack, keys).list_objects_v2(Bucket=stack.bucket, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def wait_for(found, run: subprocess.Popen, settings, timeout_s: float):
    """Poll `found()` until it returns something, while the flow run's watcher lives."""
    deadline = time.monotonic() + timeout_s
    while not (result := found()):
        assert run.poll() is None, run.stdout.read() + (settings.logs / "worker.log").read_text()[-4000:]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(2)
    return result


def create_mlflow_user(settings, keys, username: str, password: str) -> None:
    answer = httpx.post(f"{settings.mlflow_uri}/api/2.0/mlflow/users/create", json={"username": username,
                        "password": password}, auth=("admin", keys.mlflow_admin_password), timeout=30)
    assert answer.status_code == 200, answer.text


def test_a_worker_retrains_on_the_stack_and_a_second_clone_reproduces_and_serves(stack, tiny_base_model, tmp_path,
                                                                                monkeypatch):
    settings, keys = stack
    client_env = settings.client_env()
    # basic-auth is on: this test reads the registry as the admin; a teammate logs in as carol (READ, the
    # stack's default permission); the worker's flows run as the stack's service account.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", keys.mlflow_admin_password)
    create_mlflow_user(settings, keys, "carol", "carol-password-1")
    carol = {**client_env, "MLFLOW_TRACKING_USERNAME": "carol", "MLFLOW_TRACKING_PASSWORD": "carol-password-1"}
    first = team_project(tmp_path / "first", tiny_base_model)

    connected = tunegate("stack", "connect", "--dir", str(settings.home), cwd=first, env=client_env)
    assert connected.returncode == 0, connected.stdout + connected.stderr
    assert "retraining deployed to work pool 'tunegate'" in connected.stdout
    git(first, "add", "-A")
    git(first, "commit", "-qm", "use the team stack")
    assert subprocess.run(["git", "grep", "-q", keys.s3_secret_access_key], cwd=first).returncode == 1  # not committed

    inspected = subprocess.run([str(Path(sys.executable).parent / "prefect"), "deployment", "inspect",
                                "tunegate-retrain/scheduled-retrain"], env={**os.environ, **client_env},
                               capture_output=True, text=True, timeout=60)
    # the worker runs this folder (rich wraps long lines: compare without whitespace)
    assert f"'project_dir':'{first}'" in "".join(inspected.stdout.split()), inspected.stdout

    # A teammate's clone: code from git, keys from the stack (their own in real life), data from S3 later.
    second = tmp_path / "second"
    subprocess.run(["git", "clone", "-q", str(first), str(second)], check=True, capture_output=True)
    assert not (second / "data").exists()
    keyed = tunegate("stack", "connect", "--dir", str(settings.home), "--no-deploy", cwd=second, env=carol)
    assert keyed.returncode == 0, keyed.stdout + keyed.stderr

    from components.lifecycle.registry import ModelRegistry

    registry = ModelRegistry(settings.mlflow_uri, MODEL)
    # The scheduled deployment, run now: the stack's worker runs it in the first project's folder, where
    # it trains, registers and then waits for a person's approval (the production profile).
    run = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "deployment", "run",
                            "tunegate-retrain/scheduled-retrain", "--watch", "--watch-timeout", "900"],
                           cwd=first, env={**os.environ, **client_env}, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        pending = wait_for(lambda: registry.find_versions(approval="pending"), run, settings, timeout_s=900)[0]
        # carol answers from her own clone, in another folder: first refused (READ), nothing changes...
        before = registry.version(pending.version).tags
        refused = tunegate("approve", "--comment", "looks fine", cwd=second, env=carol)
        assert refused.returncode == 2 and "carol" in refused.stderr and "EDIT" in refused.stderr, refused.stderr
        assert registry.version(pending.version).tags == before and "champion" not in registry.aliases()
        assert run.poll() is None  # ...and the run still waits
        import mlflow.server

        mlflow.server.get_app_client("basic-auth", tracking_uri=settings.mlflow_uri).grant_user_permission(
            "carol", "registered_model", MODEL, "EDIT")
        # ...then, granted EDIT, her answer resumes the run waiting on the worker (it holds the model's team
        # lock), instead of taking it for dead because her folder's lock is free.
        approved = tunegate("approve", "--comment", "checked the confusion matrix", cwd=second, env=carol)
        assert approved.returncode == 0, approved.stdout + approved.stderr
        assert "goes on" in approved.stdout, approved.stdout
        output, _ = run.communicate(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0 and "Completed" in output, output + (settings.logs / "worker.log").read_text()[-4000:]

    champion = registry.aliases()["champion"]
    version = registry.version(champion)
    assert champion == pending.version
    assert version.tags["approval_by"] == "carol"  # the login that approved, not a typed name
    assert version.source.startswith("mlflow-artifacts:"), version.source  # through the server's proxy...
    stored = s3_keys_under(settings, keys, "mlflow-artifacts/")
    assert any(key.endswith("/model/MLmodel") for key in stored), stored[:20]  # ...into S3
    assert s3_keys_under(settings, keys, "dvc/files/md5/"), "the data was not pushed to the DVC remote on S3"
    import psycopg2

    with psycopg2.connect(dbname="mlflow", user="postgres", host=str(settings.home / "postgres")) as connection:
        with connection.cursor() as cursor:
            cursor.execute("SELECT name FROM registered_models")
            assert (MODEL,) in cursor.fetchall()  # the registry lives in PostgreSQL

    # carol reproduces the champion in her clone: its lineage from MLflow, its data from S3.
    reproduced = tunegate("reproduce", cwd=second, env=carol)
    assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr
    assert f"v{champion}" in reproduced.stdout and "reproduced" in reproduced.stdout.splitlines()[-1]
    assert (second / "data.dvc").read_text() == (first / "data.dvc").read_text()

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "tunegate", "--project", str(second), "serve",
                               "--port", str(port)], cwd=second, env={**os.environ, **carol}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_answers(f"http://127.0.0.1:{port}/health", server)
        metadata = httpx.get(f"http://127.0.0.1:{port}/metadata", timeout=10).json()
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json={"texts": ["great wonderful film"]}, timeout=30)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert str(metadata["model_version"]) == champion
    assert metadata["data_hash"] == version.tags["data_hash"]
    assert answer.status_code == 200 and answer.json()["predictions"][0]["label"] in {"negative", "positive"}

    assert_no_secret_anywhere(settings, keys, registry, [first, second])


def assert_no_secret_anywhere(settings, keys, registry, projects: list[Path]) -> None:
    """The stack's keys and passwords appear in no MLflow param, tag or artifact, no log, no committed file."""
    import tempfile

    secrets = [keys.s3_secret_access_key, keys.mlflow_admin_password, keys.mlflow_worker_password]
    client = registry.client
    texts: list[str] = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id]):
            texts += [str(run.data.params), str(run.data.tags)]
            with tempfile.TemporaryDirectory() as scratch:
                for path in Path(client.download_artifacts(run.info.run_id, "", scratch)).rglob("*"):
                    if path.is_file() and path.suffix in {".json", ".yaml", ".lock", ".dvc", ".md", ".txt", ".csv",
                                                          ".html", ""}:
                        texts.append(path.read_text(errors="replace"))
    for found in client.search_model_versions(f"name = '{MODEL}'"):
        texts.append(str(found.tags))
    texts.append(str(client.get_registered_model(MODEL).tags))
    texts += [log.read_text(errors="replace") for log in settings.logs.glob("*.log")]
    texts.append((settings.home / "stack.log").read_text(errors="replace"))
    for project in projects:
        tracked = git(project, "ls-files").splitlines()
        texts += [(project / name).read_text(errors="replace") for name in tracked if (project / name).is_file()]
    for secret in secrets:
        assert not any(secret in text for text in texts), "a stack secret leaked"


def test_a_model_replaced_in_the_bucket_is_refused_at_serve_pyfunc_and_promote(stack, tiny_onnx_export, tmp_path,
                                                                              monkeypatch):
    """A signed version registered through the MLflow server lands in S3; its model.onnx replaced there, by
    anyone holding the bucket's keys, is refused by the service, the pyfunc loader and promotion."""
    import mlflow
    from components.export.integrity import ModelIntegrityError, TrustPolicy
    from components.lifecycle.registry import CHAMPION, ModelRegistry
    from components.lifecycle.signing import generate_key_pair
    from components.serving.deployment import load_served_model
    from tests.signed_models import register
    from tunegate.stack.services import s3_client

    settings, keys = stack
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", keys.mlflow_admin_password)
    private_key, public_key = generate_key_pair(tmp_path / "keys")
    registry = ModelRegistry(settings.mlflow_uri, "tamper-sentiment",
                             trust=TrustPolicy(public_key.read_bytes(), require_signature=True))
    first = register(registry, tiny_onnx_export.out_dir, tmp_path / "staged-1", private_key)
    second = register(registry, tiny_onnx_export.out_dir, tmp_path / "staged-2", private_key)
    registry.promote(first, by="admin", reason="first")
    assert registry.verify(second).status == "signed"

    run_id = registry.version(second).run_id
    bucket = s3_client(settings, keys)
    pages = bucket.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix="mlflow-artifacts/")
    stored = [item["Key"] for page in pages for item in page.get("Contents", [])
              if f"/{run_id}/" in item["Key"] and item["Key"].endswith("/model.onnx")]
    assert len(stored) == 1, stored
    data = bytearray(bucket.get_object(Bucket=settings.bucket, Key=stored[0])["Body"].read())
    data[len(data) // 2] ^= 0x01
    bucket.put_object(Bucket=settings.bucket, Key=stored[0], Body=bytes(data))

    with pytest.raises(ModelIntegrityError, match="model.onnx"):
        load_served_model(registry, tmp_path / "cache", ["CPUExecutionProvider"], version=second)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", settings.mlflow_uri)
    monkeypatch.setenv("TUNEGATE_SIGNING_PUBLIC_KEY", str(public_key))
    with pytest.raises(ModelIntegrityError, match="model.onnx"):
        mlflow.pyfunc.load_model(f"models:/tamper-sentiment/{second}")
    with pytest.raises(ModelIntegrityError, match="model.onnx"):
        registry.promote(second, by="admin", reason="replaced in the bucket")
    assert registry.aliases()[CHAMPION] == first
    served = load_served_model(registry, tmp_path / "cache", ["CPUExecutionProvider"], version=first)
    assert served.metadata["integrity"]["status"] == "signed"


def test_replicas_log_predictions_to_the_stacks_s3_and_monitoring_reads_their_window(stack, monkeypatch):
    """serve.prediction_log: s3://bucket/prefix on the team stack: each replica appends its own hourly object,
    and the window read (monitor.window) lists only the window's hours and returns every replica's rows."""
    from datetime import datetime, timedelta, timezone

    from components.serving.prediction_log import PredictionLog, prediction_log_files, read_prediction_log

    settings, keys = stack
    # s3fs reads the endpoint and keys as boto does: a replica's environment on the team stack.
    monkeypatch.setenv("AWS_ENDPOINT_URL", settings.s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys.s3_access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys.s3_secret_access_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    root = f"s3://{settings.bucket}/traffic"
    start = datetime(2026, 12, 1, 9, 15, tzinfo=timezone.utc)
    moment = {"now": start}
    writers = [PredictionLog(root, 1.0, replica=name, now=lambda: moment["now"]) for name in ("pod-a", "pod-b")]
    for hour in range(3):  # 09:15, 10:15, 11:15; twice an hour per replica: the second write appends
        for minute in (0, 30):
            moment["now"] = start + timedelta(hours=hour, minutes=minute)
            for writer in writers:
                writer.write("7", [f"{writer.replica} {hour} {minute}"], [{"label": "positive", "score": 0.9}])

    assert sorted(s3_keys_under(settings, keys, "traffic/")) == [
        f"traffic/date=2026-12-01/hour={hour:02d}/{pod}.jsonl" for hour in (9, 10, 11) for pod in ("pod-a", "pod-b")]
    since = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
    assert [path.rsplit("/", 2)[-2] for path in prediction_log_files(root, since)] == ["hour=10", "hour=10",
                                                                                       "hour=11", "hour=11"]
    frame = read_prediction_log(root, since=since)
    assert sorted(frame["text"]) == sorted(f"{pod} {hour} {minute}" for pod in ("pod-a", "pod-b")
                                           for hour in (1, 2) for minute in (0, 30))
    assert frame.attrs["files_read"] == 4 and set(frame["replica"]) == {"pod-a", "pod-b"}
    assert set(frame["version"]) == {"7"}
