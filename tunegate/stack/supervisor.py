"""`tunegate stack up`: start the parts in dependency order, watch them, stop them in reverse.

In the foreground (Ctrl-C stops the stack) or detached (`--detach`: the same supervisor in the background,
`tunegate stack down` stops it). A part that dies takes the stack down with a message naming it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tunegate.stack.services import (
    WORKER_USER,
    Service,
    StackError,
    create_bucket,
    create_work_pool,
    mlflow_server,
    prefect_server,
    s3_server,
    tail,
    worker,
)
from tunegate.stack.settings import StackSecrets, StackSettings

RUNNING_FILE = "running.json"
DATABASES = ("mlflow", "mlflow_auth")


def postgres_dir(stack: StackSettings) -> Path:
    """PostgreSQL's data folder. As root, pgserver runs the database as an unprivileged OS user, which
    cannot enter a root-only folder (/root, pytest's temp): the data then lives in a folder it can reach,
    named after the stack, with a link to it from the stack's folder."""
    inside = stack.home / "postgres"
    if os.geteuid() != 0:
        return inside
    named = hashlib.sha256(str(stack.home).encode()).hexdigest()[:12]
    reachable = Path(tempfile.gettempdir()) / f"tunegate-stack-{named}"
    reachable.mkdir(mode=0o711, exist_ok=True)
    if not inside.is_symlink():
        inside.symlink_to(reachable / "postgres")
    return reachable / "postgres"


def start_postgres(stack: StackSettings):
    """A real PostgreSQL from the pgserver wheel, on a unix socket under the stack's folder."""
    import pgserver

    # "stop": cleanup() (and, as a safety net, interpreter exit) stops it; the data stays for the next `up`.
    server = pgserver.get_server(postgres_dir(stack), cleanup_mode="stop")
    for database in DATABASES:
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {database};")
    return server


def create_worker_user(stack: StackSettings, keys: StackSecrets) -> dict[str, str]:
    """The worker's MLflow account under basic-auth (it registers models, so it creates and manages them)."""
    token = base64.b64encode(f"admin:{keys.mlflow_admin_password}".encode()).decode()
    request = urllib.request.Request(
        f"{stack.mlflow_uri}/api/2.0/mlflow/users/create", method="POST",
        data=json.dumps({"username": WORKER_USER, "password": keys.mlflow_worker_password}).encode(),
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as error:
        if "RESOURCE_ALREADY_EXISTS" not in error.read().decode(errors="replace"):
            raise StackError(f"creating MLflow user {WORKER_USER} failed: HTTP {error.code}") from None
    return {"MLFLOW_TRACKING_USERNAME": WORKER_USER, "MLFLOW_TRACKING_PASSWORD": keys.mlflow_worker_password}


def run(stack: StackSettings, database_uris: tuple[str, str] | None, say: Callable[[str], None] = print) -> None:
    """Start every part, then supervise until SIGTERM/SIGINT or a part dies; always stop what started.
    `database_uris`: the team's own PostgreSQL databases (MLflow's, basic-auth's); None: a local one."""
    keys = StackSecrets.load_or_create(stack.home)
    stack.save()
    started: list[Service] = []
    postgres = None
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if database_uris is None:
            postgres = start_postgres(stack)
            database_uris = (postgres.get_uri("mlflow"), postgres.get_uri("mlflow_auth"))
            say(f"postgresql  {postgres_dir(stack)} (pgserver)")

        def start(service: Service) -> None:
            service.start(stack.logs)
            started.append(service)

        start(s3_server(stack))
        create_bucket(stack, keys)
        say(f"s3          {stack.s3_endpoint}  bucket {stack.bucket} (moto; in memory while the stack runs)")
        start(mlflow_server(stack, keys, database_uris[0], database_uris[1] if stack.auth else None))
        say(f"mlflow      {stack.mlflow_uri}  artifacts {stack.artifacts_destination}"
            + ("  basic-auth on" if stack.auth else ""))
        start(prefect_server(stack))
        create_work_pool(stack)
        say(f"prefect     {stack.prefect_api_url}  work pool 'tunegate'")
        credentials = create_worker_user(stack, keys) if stack.auth else {}
        start(worker(stack, credentials))
        say(f"worker      running the pool's flow runs (log: {stack.logs / 'worker.log'})")
        (stack.home / RUNNING_FILE).write_text(json.dumps({"pid": os.getpid(), "since": time.time()}) + "\n")
        say("ready. In a project: tunegate stack connect --dir " + str(stack.home))
        while True:
            for service in started:
                if service.process.poll() is not None:
                    raise StackError(f"{service.name} stopped (exit {service.process.returncode}); stopping the "
                                     f"stack:\n{tail(stack.logs / f'{service.name}.log')}")
            time.sleep(1)
    except KeyboardInterrupt:
        say("stopping")
    finally:
        (stack.home / RUNNING_FILE).unlink(missing_ok=True)
        for service in reversed(started):  # the worker before its server, the server before its database
            service.stop()
        if postgres is not None:
            postgres.cleanup()


def _interrupt(signum, frame) -> None:
    """SIGTERM (`tunegate stack down`) unwinds like Ctrl-C, through run()'s finally."""
    raise KeyboardInterrupt


def running_pid(home: Path) -> int | None:
    marker = home / RUNNING_FILE
    if not marker.is_file():
        return None
    pid = json.loads(marker.read_text())["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def detach(argv: list[str], home: Path, timeout_s: float = 240.0) -> int:
    """Run the supervisor in the background and return once the stack is ready (or say why it is not)."""
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "stack.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "tunegate", *argv], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while running_pid(home) != process.pid:
        if process.poll() is not None:
            raise StackError(f"the stack did not start (exit {process.returncode}):\n{tail(log_path)}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGTERM)
            raise StackError(f"the stack was not ready after {timeout_s:.0f} s:\n{tail(log_path)}")
        time.sleep(0.5)
    return process.pid


def stop(home: Path, timeout_s: float = 60.0) -> bool:
    """SIGTERM to the supervisor; it stops its parts in order. False when no stack was running."""
    pid = running_pid(home)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _exited(pid):
            return True
        time.sleep(0.3)
    raise StackError(f"the stack's supervisor (pid {pid}) did not stop within {timeout_s:.0f} s")


def _exited(pid: int) -> bool:
    try:  # our own child (a test that detached it): reap it, or it lingers as a zombie kill(0) still finds
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == pid
    except ChildProcessError:  # another's: gone once kill(0) fails
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
