"""Who writes to the registry, and may they: MLflow's basic-auth app seen from a client.

With `mlflow server --app-name basic-auth` every request carries the caller's own login (MLflow's
client reads MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) and the server checks each write
against the caller's permission on the registered model: version tags and `set alias` need EDIT,
deleting an alias needs MANAGE. Before a write a person answers for (approve, reject, promote,
rollback) tunegate asks that server two questions: who is this (`users/current`), and what may
they do on this model (`users/permissions/get`, which every user may ask about themselves). A
caller without the permission is refused before the first write, so a refusal changes nothing.

Without authentication (a SQLite or file store, or a server without the auth app) there is no one
to ask: the caller is trusted with the name they give, as before.

The REST endpoints are called directly: importing mlflow.server.auth would load the server app.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from components.redact import redact_secrets, redact_uri

EDIT, MANAGE = "EDIT", "MANAGE"
# MLflow's permission levels, weakest first (mlflow/server/auth/permissions.py); DENY ranks below all.
_RANK = {"DENY": -1, "NO_PERMISSIONS": 0, "READ": 1, "USE": 2, "EDIT": 3, "MANAGE": 4}
CURRENT_USER_ENDPOINT = "/api/2.0/mlflow/users/current"
USER_PERMISSION_ENDPOINT = "/api/3.0/mlflow/users/permissions/get"
REGISTERED_MODEL = "registered_model"


class RegistryAccessError(PermissionError):
    """The MLflow server would not let this caller make this change; the message says how to get access."""


@dataclass(frozen=True)
class Identity:
    """The MLflow user the server authenticated, as it answered `users/current`."""

    username: str
    is_admin: bool = False


def _get(tracking_uri: str, endpoint: str, params: dict | None = None):
    from mlflow.exceptions import MlflowException
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    try:
        # The same credentials MLflow's own client sends with every registry call.
        return http_request(get_default_host_creds(tracking_uri), endpoint, "GET", params=params,
                            max_retries=2, backoff_factor=1, timeout=30)
    except MlflowException as error:  # MLflow's text repeats the URI, login included
        raise RegistryAccessError(f"could not reach the MLflow server at {redact_uri(tracking_uri)}: "
                                  f"{redact_secrets(error.message)}. Nothing was changed.") from None


def authenticated_user(tracking_uri: str) -> Identity | None:
    """The MLflow user this process's credentials log in as; None when the store checks no logins."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None  # a database or file store: whoever can open it can write it
    response = _get(tracking_uri, CURRENT_USER_ENDPOINT)
    if response.status_code == 401:
        named = os.environ.get("MLFLOW_TRACKING_USERNAME")
        who = f"user {named!r} (MLFLOW_TRACKING_USERNAME) with that password" if named else "a request without a login"
        raise RegistryAccessError(
            f"the MLflow server at {redact_uri(tracking_uri)} checks logins and refused {who}: set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to your own MLflow user (an MLflow admin "
            "creates it, see README 'Who may do what'). Nothing was changed.")
    if response.status_code != 200:
        return None  # no auth app: the endpoint does not exist
    try:
        user = response.json()["user"]
        return Identity(str(user["username"]), bool(user.get("is_admin", False)))
    except (ValueError, KeyError, TypeError):
        return None


def permission_on_model(tracking_uri: str, identity: Identity, model_name: str) -> str:
    """The user's effective permission on the registered model, as the server resolves it for a write
    (its own grant, else the server's default_permission): READ, EDIT, MANAGE..."""
    if identity.is_admin:
        return MANAGE
    response = _get(tracking_uri, USER_PERMISSION_ENDPOINT, params={
        "username": identity.username, "resource_type": REGISTERED_MODEL, "resource_id": model_name})
    if response.status_code != 200:
        raise RegistryAccessError(f"could not read the permission of {identity.username} on registered model "
                                  f"{model_name!r} from {redact_uri(tracking_uri)}: HTTP {response.status_code}. "
                                  "Nothing was changed.")
    return str(response.json().get("permission", "NO_PERMISSIONS"))


def grant_hint(username: str, model_name: str, needed: str) -> str:
    return (f"an MLflow admin grants it with: mlflow.server.get_app_client('basic-auth', tracking_uri=...)"
            f".grant_user_permission('{username}', '{REGISTERED_MODEL}', '{model_name}', '{needed}')")


def require_permission(tracking_uri: str, identity: Identity, model_name: str, needed: str, action: str) -> None:
    """Refuse (RegistryAccessError) unless the user holds `needed` or more on the registered model."""
    have = permission_on_model(tracking_uri, identity, model_name)
    if _RANK.get(have, -1) >= _RANK[needed]:
        return
    raise RegistryAccessError(
        f"{identity.username} may not {action} of registered model {model_name!r}: that needs {needed} permission "
        f"on the model and {identity.username} has {have} (MLflow server {redact_uri(tracking_uri)}). "
        f"Nothing was changed; {grant_hint(identity.username, model_name, needed)}")


def resolve_actor(claimed: str | None, identity: Identity | None) -> str:
    """The name recorded for a change: the authenticated MLflow user when there is one, never a typed name
    that differs from it; without authentication the name given, else the login name."""
    if identity is None:
        return claimed or getpass.getuser()
    if claimed and claimed != identity.username:
        raise RegistryAccessError(
            f"--by {claimed} does not match your MLflow login {identity.username!r}: with MLflow authentication on, "
            "the name recorded is the user whose credentials make the change. Leave out --by, or set "
            f"MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD to {claimed}'s own login. Nothing was changed.")
    return identity.username


@contextmanager
def refusals_explained(tracking_uri: str, identity: Identity | None, model_name: str, action: str) -> Iterator[None]:
    """A write the server refuses although the check before it passed (a grant revoked meanwhile, a finer
    grant on single versions) still gets a message that names who, what and how to fix it."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as error:
        if error.error_code != "PERMISSION_DENIED":
            raise
        who = identity.username if identity else "this MLflow login"
        raise RegistryAccessError(
            f"the MLflow server {redact_uri(tracking_uri)} refused a write of {who} while trying to {action} of "
            f"registered model {model_name!r} ({error.message}); writes before it stay (see `tunegate history`). "
            f"{grant_hint(who, model_name, EDIT)}") from error


@contextmanager
def artifact_reads_explained(identity: Identity | None, model_name: str, version: str, run_id: str | None,
                             action: str) -> Iterator[None]:
    """A version's files that the server will not let this caller read (MLflow checks reads of artifacts on the
    experiment of the version's run, not on the registered model): a message saying who needs what, and why."""
    try:
        yield
    except Exception as error:
        from mlflow.exceptions import MlflowException

        status = getattr(getattr(error, "response", None), "status_code", None)
        denied = status == 403 or (isinstance(error, MlflowException) and error.error_code == "PERMISSION_DENIED")
        if not denied:
            raise
        who = identity.username if identity else "this MLflow login"
        raise RegistryAccessError(
            f"{who} may not read the files of v{version} of registered model {model_name!r}, and they are checked "
            f"against the version's manifest before it may {action}. Nothing was changed. An admin can grant READ on "
            f"the experiment of its run {run_id}: grant_user_permission('{who}', 'experiment', <its id>, 'READ')"
            ) from None
