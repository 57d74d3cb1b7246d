"""What a team stack is made of and where its parts listen: typed once, saved beside the stack so that
`down`, `env` and `connect` read what `up` started instead of guessing."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from pydantic import BaseModel, Field

STATE_FILE = "stack.json"
SECRETS_FILE = "secrets.json"
WORK_POOL = "tunegate"


class StackSettings(BaseModel):
    """One local team stack: PostgreSQL, an S3 store, an MLflow server on both, a Prefect server and a
    process work pool with its worker. Every address is on `host`; every part is a real server."""

    home: Path
    host: str = "127.0.0.1"
    s3_port: int = 9000
    mlflow_port: int = 5000
    prefect_port: int = 4200
    bucket: str = "tunegate"
    auth: bool = Field(False, description="MLflow's basic-auth app: every client needs MLflow credentials")
    # No database URI here: a PostgreSQL of the team's own comes from the environment only (it holds a
    # password; tunegate/stack/commands.py), else one is started from the pgserver wheel under `home`.

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.s3_port}"

    @property
    def mlflow_uri(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}/api"

    @property
    def artifacts_destination(self) -> str:
        return f"s3://{self.bucket}/mlflow-artifacts"

    @property
    def dvc_remote_url(self) -> str:
        return f"s3://{self.bucket}/dvc"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    def client_env(self) -> dict[str, str]:
        """What a client machine needs: URLs only. Credentials stay in each tool's own place."""
        return {"MLFLOW_TRACKING_URI": self.mlflow_uri, "PREFECT_API_URL": self.prefect_api_url}

    def save(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / STATE_FILE).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, home: Path) -> StackSettings:
        state = home / STATE_FILE
        if not state.is_file():
            raise FileNotFoundError(f"{state}: no stack here; start one with `tunegate stack up --dir {home}`")
        return cls.model_validate_json(state.read_text())


class StackSecrets(BaseModel):
    """The local stack's own keys, generated once and kept in a file only its owner can read. Production
    stacks take theirs from the environment (AWS profiles, the DVC remote's config.local) instead."""

    s3_access_key_id: str
    s3_secret_access_key: str
    mlflow_admin_password: str
    # The worker's own MLflow user when basic-auth is on: flows it runs act as this service account.
    mlflow_worker_password: str = Field(default_factory=lambda: secrets.token_hex(16))
    # basic-auth's Flask app signs its sessions with it (the server refuses to start without one).
    mlflow_flask_secret: str = Field(default_factory=lambda: secrets.token_hex(16))

    @classmethod
    def load_or_create(cls, home: Path) -> StackSecrets:
        path = home / SECRETS_FILE
        if path.is_file():  # a key added since it was written is made now and kept
            kept = cls.model_validate_json(path.read_text())
            path.write_text(kept.model_dump_json(indent=2) + "\n")
            return kept
        # Hex, not urlsafe base64: a secret starting with '-' reads as an option to the commands it is
        # passed to (`dvc remote modify --local team secret_access_key -...` failed 1 time in 32).
        made = cls(s3_access_key_id="tunegate-" + secrets.token_hex(6), s3_secret_access_key=secrets.token_hex(20),
                   mlflow_admin_password=secrets.token_hex(16))
        home.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(made.model_dump(), indent=2) + "\n")
        return made

    def __repr__(self) -> str:  # never show a key in a traceback or a log line
        return "StackSecrets(<hidden>)"

    __str__ = __repr__
