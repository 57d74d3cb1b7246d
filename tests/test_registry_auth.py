"""Approvals and alias moves act with the caller's own MLflow login, against a real
`mlflow server --app-name basic-auth` (SQLite, local artifacts, 127.0.0.1): a caller without the
permission is refused with a message that says who, which model, what is missing and how to get
it, and nothing changes; the approver recorded is the authenticated user, not a typed name; the
service shows no credentials."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from components.lifecycle.registry import CHAMPION, PREVIOUS_CHAMPION, ModelRegistry
from tests.fixtures_classifier import tiny_classifier, tiny_onnx_export  # noqa: F401 - fixtures
from tests.project import REPO_ROOT, write_params
from tests.servers import free_port, wait_until_answers
from tunegate.cli import main

pytestmark = pytest.mark.slow
pytest.importorskip("flask_wtf", reason="`mlflow server --app-name basic-auth` needs Flask-WTF: "
                                        "pip install 'mlflow[auth]'")

CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


@dataclass(frozen=True)
class AuthServer:
    url: str
    passwords: dict[str, str]
    log: Path

    def login(self, user: str) -> None:
        """From now on this process's MLflow clients (and the CLI) act as `user`."""
        os.environ["MLFLOW_TRACKING_USERNAME"] = user
        os.environ["MLFLOW_TRACKING_PASSWORD"] = self.passwords[user]

    def admin_client(self):
        self.login("admin")
        from mlflow.server import get_app_client

        return get_app_client("basic-auth", tracking_uri=self.url)


@contextlib.contextmanager
def kept_environment():
    saved = {name: os.environ.get(name) for name in CREDENTIAL_VARIABLES}
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("mlflow-basic-auth")
    passwords = {user: secrets.token_urlsafe(12) for user in ("admin", "alice", "bob", "runner")}
    config = root / "basic_auth.ini"
    config.touch(mode=0o600)
    # NO_PERMISSIONS: a user sees and changes only the models they are granted.
    config.write_text("[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
                      f"database_uri = sqlite:///{root}/auth.db\nadmin_username = admin\n"
                      f"admin_password = {passwords['admin']}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                      # A login is checked once a minute, not on every request (a slow password hash each).
                      "auth_cache_ttl_seconds = 60\n")
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key not in CREDENTIAL_VARIABLES}
    env.update(MLFLOW_AUTH_CONFIG_PATH=str(config), MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
               # no job runner processes: not needed here, and they double the start-up time
               MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    log_path = root / "server.log"
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--app-name", "basic-auth",
               "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts"),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log_path.open("w") as log:
        # Its own session: stopping it stops the uvicorn worker it starts too.
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        request.getfixturevalue("tiny_onnx_export")  # built while the server starts
        wait_until_answers(f"{url}/health", server, timeout_s=240, log=log_path.read_text)
        running = AuthServer(url, passwords, log_path)
        with kept_environment():
            admin = running.admin_client()
            for user in ("alice", "bob", "runner"):
                admin.create_user(user, passwords[user])
        yield running
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def grant_experiment_read(admin, user: str, experiment: str) -> None:
    """READ on the tests' shared experiment; kept as it is when an earlier test's model granted it already."""
    from mlflow.exceptions import MlflowException

    try:
        admin.grant_user_permission(user, "experiment", experiment, "READ")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


@pytest.fixture
def model(auth_server, tmp_path, request) -> str:
    """A registered model of its own per test, two versions of the tiny int8 classifier (registered by
    the admin, as the retraining flow's account would), alice MANAGE and bob READ on it."""
    name = f"tiny-auth-{uuid.uuid4().hex[:8]}"
    export_dir = request.getfixturevalue("tiny_onnx_export").out_dir
    admin = auth_server.admin_client()  # logs this process in as admin until a test logs in as someone else
    registry = ModelRegistry(auth_server.url, name)  # artifacts go through the server's proxy
    for _ in range(2):
        run_id = registry.start_run("tunegate-auth-tests", "r", {})
        registry.register(run_id, export_dir, {"gate": "passed"})
        registry.end_run(run_id)
    admin.grant_user_permission("alice", "registered_model", name, "MANAGE")
    admin.grant_user_permission("bob", "registered_model", name, "READ")
    # Promotion reads a version's files to check them against its manifest: READ on the experiment of its runs.
    for user in ("alice", "runner"):
        grant_experiment_read(admin, user, registry.experiment_id("tunegate-auth-tests"))
    write_params(tmp_path, {"data": {"source": "x.csv", "labels": ["a", "b"]}, "model": {"base_model": "org/m"},
                            "registry": {"model_name": name, "tracking_uri": auth_server.url}})
    return name


def state(auth_server: AuthServer, name: str) -> dict:
    """Everything a refused verb must leave as it was: aliases, model tags (the history), version tags."""
    auth_server.login("admin")
    client = ModelRegistry(auth_server.url, name).client
    found = client.get_registered_model(name)
    return {"aliases": dict(found.aliases), "model_tags": dict(found.tags),
            "versions": {v: dict(client.get_model_version(name, v).tags) for v in ("1", "2")}}


def tunegate(project: Path, *args: str) -> int:
    return main(["--project", str(project), *args])


def assert_no_secret(auth_server: AuthServer, text: str) -> None:
    for password in auth_server.passwords.values():
        assert password not in text


def champion_and_a_pending_version(auth_server: AuthServer, model: str) -> tuple[ModelRegistry, dict]:
    """As the admin: v1 champion, v2 waiting for approval; the registry's state before anyone answers."""
    admin = ModelRegistry(auth_server.url, model)
    admin.promote("1", by="admin", reason="first")
    admin.tag_version("2", {"approval": "pending"})
    return admin, state(auth_server, model)


def test_bob_with_read_only_is_refused_and_nothing_changes(auth_server, model, tmp_path, capsys):
    admin, before = champion_and_a_pending_version(auth_server, model)

    auth_server.login("bob")
    assert tunegate(tmp_path, "approve", "--comment", "looks fine") == 2
    refusal = capsys.readouterr().err
    assert (f"bob may not approve v2 of registered model '{model}': that needs EDIT permission on the model and bob "
            "has READ") in refusal
    assert "Nothing was changed" in refusal
    assert f"grant_user_permission('bob', 'registered_model', '{model}', 'EDIT')" in refusal
    assert_no_secret(auth_server, refusal)
    assert state(auth_server, model) == before

    for verb in (["reject"], ["promote", "2"], ["promote", "2", "--force", "--reason", "hotfix"]):
        auth_server.login("bob")
        assert tunegate(tmp_path, *verb) == 2, verb
        assert "bob may not" in capsys.readouterr().err
        assert state(auth_server, model) == before, verb

    # Rolling back to a version that leaves no previous champion deletes that alias: MANAGE.
    admin.promote("2", by="admin", reason="second")
    before = state(auth_server, model)
    auth_server.login("bob")
    assert tunegate(tmp_path, "rollback", "--reason", "bad outputs") == 2
    assert "that needs MANAGE permission on the model and bob has READ" in capsys.readouterr().err
    assert state(auth_server, model) == before


def test_an_approver_who_may_not_read_the_version_s_files_is_refused_and_nothing_changes(auth_server, model,
                                                                                      tmp_path, capsys):
    """Approving promotes, and promotion checks the version's files first: without READ on the experiment of its
    run the approver is told so, before anything is written."""
    admin, before = champion_and_a_pending_version(auth_server, model)
    experiment = ModelRegistry(auth_server.url, model).experiment_id("tunegate-auth-tests")
    auth_server.admin_client().revoke_user_permission("alice", "experiment", experiment)
    try:
        auth_server.login("alice")
        assert tunegate(tmp_path, "approve", "--comment", "looks fine") == 2
        refusal = capsys.readouterr().err
        assert "alice may not read the files of v2" in refusal and "Nothing was changed" in refusal, refusal
        assert "grant_user_permission('alice', 'experiment'" in refusal
        assert state(auth_server, model) == before
    finally:
        grant_experiment_read(auth_server.admin_client(), "alice", experiment)


def test_alice_approves_as_herself_and_moves_the_alias(auth_server, model, tmp_path, capsys):
    admin, before = champion_and_a_pending_version(auth_server, model)

    auth_server.login("alice")
    assert tunegate(tmp_path, "approve", "--by", "carol", "--comment", "typed another name") == 2
    mismatch = capsys.readouterr().err
    assert "--by carol does not match your MLflow login 'alice'" in mismatch and "Nothing was changed" in mismatch
    assert state(auth_server, model) == before

    auth_server.login("alice")
    assert tunegate(tmp_path, "approve", "--comment", "checked the confusion matrix") == 0
    assert "approved v2" in capsys.readouterr().out
    after = state(auth_server, model)
    assert after["aliases"] == {CHAMPION: "2", PREVIOUS_CHAMPION: "1"}
    tags = after["versions"]["2"]
    assert (tags["approval"], tags["approval_by"], tags["approval_how"]) == ("approved", "alice", "person")
    assert tags["promoted_by"] == "alice"
    assert [(e["action"], e["version"], e["by"]) for e in admin.history()][-1] == ("promote", "2", "alice")

    # alice holds MANAGE: she may also roll back (deleting previous_champion) and promote.
    auth_server.login("alice")
    assert tunegate(tmp_path, "rollback", "--reason", "latency spike") == 0
    assert state(auth_server, model)["aliases"] == {CHAMPION: "1"}
    auth_server.login("alice")
    assert tunegate(tmp_path, "promote", "2", "--by", "alice", "--reason", "fixed") == 0
    assert [(e["action"], e["by"]) for e in admin.history()][-2:] == [("rollback", "alice"), ("promote", "alice")]


def test_metadata_shows_no_credentials(auth_server, model, tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    from components.serving.deployment import build_service_app
    from components.serving.server import BackgroundServer

    # The service needs READ only: on the model, and on the experiment whose runs hold the artifacts.
    auth_server.admin_client().grant_user_permission(
        "bob", "experiment", ModelRegistry(auth_server.url, model).experiment_id("tunegate-auth-tests"), "READ")
    auth_server.login("bob")
    login = f"bob:{auth_server.passwords['bob']}@"
    app = build_service_app(ModelRegistry(auth_server.url.replace("//", f"//{login}"), model), tmp_path / "cache",
                            ["CPUExecutionProvider"], version="1")
    # A registry the service cannot reach: MLflow's error repeats the URI it failed on, login included.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException) as unreachable:
        ModelRegistry(f"http://{login}127.0.0.1:{free_port()}", model).client.get_registered_model(model)
    assert login in str(unreachable.value)
    app.state.model_holder.record_registry_error(unreachable.value)
    with BackgroundServer(app) as server:
        answer = httpx.get(f"{server.url}/metadata")
    assert answer.status_code == 200
    metadata = answer.json()
    assert metadata["tracking_uri"] == auth_server.url
    assert metadata["reloads"]["registry_errors"] == 1 and "127.0.0.1" in metadata["reloads"]["last_error"]
    assert_no_secret(auth_server, answer.text)
    assert "bob:" not in answer.text


def test_a_paused_run_is_answered_with_the_callers_login(auth_server, model, tmp_path, capsys, prefect_api):
    """The waiting run's own account may tag the version pending, then loses its write permission: the
    answer must be written by the answerer's client, and the resumed run writes nothing."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL

    admin = auth_server.admin_client()
    admin.grant_user_permission("runner", "registered_model", model, "EDIT")
    env = {key: value for key, value in os.environ.items() if key not in CREDENTIAL_VARIABLES}
    env.update(MLFLOW_TRACKING_USERNAME="runner", MLFLOW_TRACKING_PASSWORD=auth_server.passwords["runner"],
               PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_HOME=str(tmp_path / ".prefect-run"),
               PYTHONPATH=str(REPO_ROOT))
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        run = subprocess.Popen([sys.executable, "-m", "tests.approval_wait_job", str(tmp_path), auth_server.url, model,
                                "2"], cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    registry = ModelRegistry(auth_server.url, model)
    try:
        deadline = time.monotonic() + 180
        flow_run_id = None
        while True:  # until the run is paused, waiting for the answer
            assert run.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            auth_server.login("admin")
            flow_run_id = flow_run_id or registry.version("2").tags.get("approval_flow_run")
            if flow_run_id:
                with get_client(sync_client=True) as client:
                    if client.read_flow_run(uuid.UUID(flow_run_id)).state.name == "Paused":
                        break
            time.sleep(0.5)
        admin.revoke_user_permission("runner", "registered_model", model)  # a grant is not overwritten
        admin.grant_user_permission("runner", "registered_model", model, "READ")
        assert admin.get_user_permission("runner", "registered_model", model).permission == "READ"
        before = state(auth_server, model)

        auth_server.login("bob")
        assert tunegate(tmp_path, "approve") == 2
        assert f"bob may not approve v2 of registered model '{model}'" in capsys.readouterr().err
        assert state(auth_server, model) == before
        with get_client(sync_client=True) as client:
            assert client.read_flow_run(uuid.UUID(flow_run_id)).state.name == "Paused"  # not resumed, not closed

        auth_server.login("alice")
        assert tunegate(tmp_path, "approve", "--comment", "ship it") == 0
        assert f"approved v2 by alice; its waiting run {flow_run_id} goes on" in capsys.readouterr().out
        assert run.wait(timeout=120) == 0, log_path.read_text()[-3000:]
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
    result = json.loads(log_path.read_text().split("RESULT ", 1)[1].splitlines()[0])
    assert result == {"approved": True, "by": "alice", "applied": True, "previous": None}
    after = state(auth_server, model)
    assert after["aliases"] == {CHAMPION: "2"}
    assert (after["versions"]["2"]["approval"], after["versions"]["2"]["approval_by"]) == ("approved", "alice")
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(uuid.UUID(flow_run_id)).state.name == "Completed"


def test_the_flow_does_not_apply_a_persons_answer_with_its_own_login(auth_server, model):
    """An answer from the Prefect UI form carries no MLflow login: the flow's account (which may write)
    does not apply it, nor an answer that claims to be written already but is not in the registry."""
    from flows.approval import Approval, ApprovalNotApplied, apply_decision

    admin = auth_server.admin_client()
    admin.grant_user_permission("runner", "registered_model", model, "EDIT")
    ModelRegistry(auth_server.url, model).tag_version("2", {"approval": "pending"})
    before = state(auth_server, model)
    auth_server.login("runner")
    flow_registry = ModelRegistry(auth_server.url, model)
    with pytest.raises(ApprovalNotApplied, match="without an MLflow login .* v2 still waits: answer with `tunegate"):
        apply_decision(flow_registry, "2", Approval(True, by="mallory", comment="from the UI", how="person"))
    with pytest.raises(ApprovalNotApplied, match="registry shows approval='pending'"):
        apply_decision(flow_registry, "2", Approval(True, by="mallory", comment="", how="person", applied=True))
    assert state(auth_server, model) == before

    # Its own decisions it does write, under its own name: auto-approval by policy.
    auth_server.login("runner")
    apply_decision(flow_registry, "2", Approval(True, by="someone (auto)", comment="policy", how="auto-local-profile"))
    after = state(auth_server, model)
    assert after["aliases"] == {CHAMPION: "2"} and after["versions"]["2"]["approval_by"] == "runner (auto)"
