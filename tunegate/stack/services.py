"""The stack's servers as processes: how each is started, when it is ready, and how it is stopped.

Each part is the upstream tool's own server (moto's S3, `mlflow server`, `prefect server start`,
`prefect worker start`); tunegate only wires their addresses and credentials together.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tunegate.quiet import QUIET_DEFAULTS
from tunegate.stack.settings import WORK_POOL, StackSecrets, StackSettings

# Variables a server must not inherit from the shell that started the stack: a client setting there
# (a tracking URI, a Prefect API, someone's keys) would make a server talk to itself or leak.
CLIENT_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_URL",
                    "PREFECT_API_KEY", "PREFECT_HOME", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                    "AWS_SESSION_TOKEN", "AWS_PROFILE", "MLFLOW_S3_ENDPOINT_URL", "TUNEGATE_STACK_DATABASE_URI")
WORKER_USER = "tunegate-worker"


class StackError(RuntimeError):
    """A part of the stack did not start; the message names it and quotes its log."""


def tool(name: str) -> str:
    """A console script of this environment (moto_server, mlflow, prefect), found beside the interpreter."""
    return str(Path(sys.executable).parent / name)


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_VARIABLES}
    env.update(QUIET_DEFAULTS)
    env.update(extra)
    return env


def answers(url: str, accept: tuple[int, ...] = (200,)) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status in accept
    except urllib.error.HTTPError as error:
        return error.code in accept
    except (OSError, ValueError):
        return False


@dataclass
class Service:
    name: str
    command: list[str]
    env: dict[str, str]
    ready: Callable[[], bool]
    timeout_s: float = 90.0
    process: subprocess.Popen | None = field(default=None, repr=False)

    def start(self, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        log = (logs / f"{self.name}.log").open("ab")
        # Its own session: a Ctrl-C in the terminal reaches the supervisor, which stops parts in order.
        self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.timeout_s
        while not self.ready():
            if self.process.poll() is not None:
                raise StackError(f"{self.name} exited with code {self.process.returncode} while starting:\n"
                                 f"{tail(logs / f'{self.name}.log')}")
            if time.monotonic() > deadline:
                self.stop()
                raise StackError(f"{self.name} was not ready after {self.timeout_s:.0f} s:\n"
                                 f"{tail(logs / f'{self.name}.log')}")
            time.sleep(0.3)

    def stop(self, grace_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def tail(log: Path, lines: int = 25) -> str:
    if not log.is_file():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def s3_server(stack: StackSettings) -> Service:
    return Service("s3", [tool("moto_server"), "-H", stack.host, "-p", str(stack.s3_port)], base_env(),
                   ready=lambda: answers(f"{stack.s3_endpoint}/moto-api/"))


def s3_client(stack: StackSettings, keys: StackSecrets):
    import boto3

    return boto3.client("s3", endpoint_url=stack.s3_endpoint, region_name="us-east-1",
                        aws_access_key_id=keys.s3_access_key_id, aws_secret_access_key=keys.s3_secret_access_key)


def create_bucket(stack: StackSettings, keys: StackSecrets) -> None:
    client = s3_client(stack, keys)
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    if stack.bucket not in existing:
        client.create_bucket(Bucket=stack.bucket)


def auth_config(stack: StackSettings, keys: StackSecrets, database_uri: str) -> Path:
    """MLflow basic-auth's config: its users live in the same PostgreSQL; the admin password is the stack's."""
    path = stack.home / "basic_auth.ini"
    path.touch(mode=0o600)
    path.write_text("[mlflow]\ndefault_permission = READ\n"
                    f"database_uri = {database_uri}\n"
                    "admin_username = admin\n"
                    f"admin_password = {keys.mlflow_admin_password}\n"
                    "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                    # Without a cache every request re-checks a password hash: calls took 10x longer.
                    "auth_cache_ttl_seconds = 60\n")
    return path


def mlflow_server(stack: StackSettings, keys: StackSecrets, backend_uri: str, auth_uri: str | None) -> Service:
    command = [tool("mlflow"), "server", "--backend-store-uri", backend_uri,
               "--artifacts-destination", stack.artifacts_destination,
               "--host", stack.host, "--port", str(stack.mlflow_port), "--workers", "1"]
    # The S3 keys are the server's alone: clients upload and download through its artifact proxy.
    env = base_env(MLFLOW_S3_ENDPOINT_URL=stack.s3_endpoint, AWS_ACCESS_KEY_ID=keys.s3_access_key_id,
                   AWS_SECRET_ACCESS_KEY=keys.s3_secret_access_key, AWS_DEFAULT_REGION="us-east-1",
                   # MLflow 3's job runner (huey consumers for its GenAI jobs) is not used here; off, the
                   # server starts in a third of the time.
                   MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    if auth_uri is not None:
        command += ["--app-name", "basic-auth"]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(auth_config(stack, keys, auth_uri))
        env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = keys.mlflow_flask_secret
    return Service("mlflow", command, env, ready=lambda: answers(f"{stack.mlflow_uri}/health"), timeout_s=120)


def prefect_server(stack: StackSettings) -> Service:
    command = [tool("prefect"), "server", "start", "--host", stack.host, "--port", str(stack.prefect_port)]
    # Leases of the model locks (flows/team_lock.py) on disk: with the default in-memory storage a server
    # restart forgets a lease but not its taken slot, and the model stays locked.
    env = base_env(PREFECT_HOME=str(stack.home / "prefect"),
                   PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE="prefect.server.concurrency.lease_storage.filesystem")
    return Service("prefect", command, env, ready=lambda: answers(f"{stack.prefect_api_url}/health"), timeout_s=120)


def create_work_pool(stack: StackSettings) -> None:
    env = base_env(PREFECT_API_URL=stack.prefect_api_url, PREFECT_HOME=str(stack.home / "prefect-client"))
    done = subprocess.run([tool("prefect"), "work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"],
                          env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise StackError(f"`prefect work-pool create {WORK_POOL}` failed: {(done.stderr or done.stdout).strip()}")


def worker(stack: StackSettings, credentials: dict[str, str]) -> Service:
    """A process worker of the pool: it runs the flow runs of every deployment on the pool, each in the
    project folder its deployment names, with that project's own params.yaml and DVC remote."""
    command = [tool("prefect"), "worker", "start", "--pool", WORK_POOL, "--type", "process",
               "--install-policy", "never", "--name", f"tunegate-worker-{os.uname().nodename}"]
    env = base_env(PREFECT_API_URL=stack.prefect_api_url, PREFECT_HOME=str(stack.home / "worker"),
                   PREFECT_WORKER_QUERY_SECONDS="2", **credentials)
    marker = stack.logs / "worker.log"
    return Service("worker", command, env, ready=lambda: "started" in tail(marker, 200).lower(), timeout_s=90)
