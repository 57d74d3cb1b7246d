"""`tunegate stack connect`: point a project at a team stack, in each tool's own configuration.

What is shared and harmless goes where git carries it to teammates (the DVC remote's URL in .dvc/config,
the tracking URL in params.yaml); keys go only where each tool keeps secrets on this machine (DVC's
.dvc/config.local, never committed). The retraining deployment is registered on the stack's work pool.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from components.config.params_file import set_param
from components.lifecycle.versioning import run_dvc, tool_env
from tunegate.stack.services import StackError, tool
from tunegate.stack.settings import WORK_POOL, StackSecrets, StackSettings

REMOTE = "team"


@dataclass(frozen=True)
class S3Keys:
    access_key_id: str
    secret_access_key: str
    source: str  # where they came from, for the message (never the keys themselves)


def s3_keys(stack_home: Path | None) -> S3Keys | None:
    """The caller's AWS keys from the environment, else the local stack's own; None: leave DVC to its
    usual lookup (an AWS profile, an instance role)."""
    if os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return S3Keys(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"], "the environment")
    if stack_home is not None and (stack_home / "secrets.json").is_file():
        keys = StackSecrets.load_or_create(stack_home)
        return S3Keys(keys.s3_access_key_id, keys.s3_secret_access_key, f"the stack in {stack_home}")
    return None


def configure_dvc_remote(root: Path, stack: StackSettings, keys: S3Keys | None) -> None:
    run_dvc(root, "remote", "add", "--force", "--default", REMOTE, stack.dvc_remote_url, capture=True)
    run_dvc(root, "remote", "modify", REMOTE, "endpointurl", stack.s3_endpoint, capture=True)
    run_dvc(root, "remote", "modify", REMOTE, "region", "us-east-1", capture=True)
    if keys is not None:
        run_dvc(root, "remote", "modify", "--local", REMOTE, "access_key_id", keys.access_key_id, capture=True)
        run_dvc(root, "remote", "modify", "--local", REMOTE, "secret_access_key", keys.secret_access_key, capture=True)


def deploy_retraining(root: Path, stack: StackSettings) -> None:
    """`prefect deploy --all` of the project's prefect.yaml onto the stack's work pool."""
    if not (root / "prefect.yaml").is_file():
        raise StackError(f"{root / 'prefect.yaml'}: missing; it declares the retraining deployment")
    # prefect.yaml names the project folder as {{ $PWD }}: the shell's variable, which a child process
    # inherits unchanged from its parent whatever its cwd. Set it, or the worker runs another folder.
    env = {**tool_env(), "PREFECT_API_URL": stack.prefect_api_url, "PWD": str(root)}
    done = subprocess.run([tool("prefect"), "--no-prompt", "deploy", "--all"],
                          cwd=root, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        raise StackError(f"`prefect deploy --all` in {root} failed:\n{(done.stdout + done.stderr).strip()[-2000:]}")


def connect(root: Path, stack: StackSettings, stack_home: Path | None, deploy: bool = True) -> list[str]:
    """Configure the project and return what was done, one line each."""
    keys = s3_keys(stack_home)
    configure_dvc_remote(root, stack, keys)
    done = [f"DVC remote '{REMOTE}' (default): {stack.dvc_remote_url} at {stack.s3_endpoint} (.dvc/config)",
            f"S3 keys from {keys.source} -> .dvc/config.local (not committed)" if keys else
            "S3 keys: none given; DVC uses your AWS profile or role"]
    set_param(root / "params.yaml", "registry.tracking_uri", stack.mlflow_uri)
    done.append(f"registry.tracking_uri: {stack.mlflow_uri} (params.yaml)")
    if deploy:
        deploy_retraining(root, stack)
        done.append(f"retraining deployed to work pool '{WORK_POOL}' at {stack.prefect_api_url}")
    return done
