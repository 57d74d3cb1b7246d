"""Keep credentials out of what tunegate shows: service answers (/metadata), logs, messages.

A tracking URI may carry a login (`http://alice:s3cret@mlflow:5000`, `postgresql://u:p@host/db`), and
MLflow's own error texts repeat the URI they failed on ("API request to http://alice:s3cret@...
failed"). Everything shown to a client or written to a log goes through here first.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

# scheme://userinfo@ anywhere in a text; userinfo is whatever sits between // and @ before the host.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s'\"]+@")
_URI_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s]*@")
# The secrets MLflow and tunegate read from the environment: their values never appear in a text shown.
SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "MLFLOW_AUTH_ADMIN_PASSWORD")
HIDDEN = "***"


def redact_uri(uri: str | None) -> str | None:
    """The URI without its user and password: `http://alice:pw@host:5000/x` -> `http://host:5000/x`."""
    if not uri:
        return uri
    # Up to the authority's last @ (a password's own @ would be percent-encoded); the host may be empty,
    # as in postgresql://u:p@/db?host=/socket.
    return _URI_USERINFO.sub(lambda match: match.group("scheme"), uri, count=1)


def redact_secrets(text: str) -> str:
    """A message with every URI login removed and every secret of the environment replaced by ***."""
    text = _USERINFO.sub(lambda match: match.group("scheme"), text)
    for name in SECRET_VARIABLES:
        secret = os.environ.get(name, "")
        if len(secret) >= 4:  # a one- or two-character "secret" would mangle unrelated text
            text = text.replace(secret, HIDDEN)
    return text


def has_credentials(uri: str | None) -> bool:
    """Whether the URI carries a password (a user alone, as in `postgresql://postgres@/db`, is no secret)."""
    return bool(uri) and bool(urlsplit(uri).password)
