"""An API key for the service, when serve.api_key_env names the environment variable that holds it.

Clients send `Authorization: Bearer <key>` (or `X-API-Key: <key>`) on /predict, /invocations and /explain, and
on /metrics and /metadata where serve.api_key_also_for lists them; /health stays open for load
balancers. Keys are compared in constant time. The variable may hold several keys, comma-separated,
all accepted: to rotate, add the new key, restart, move the clients over, remove the old one, restart.
"""

from __future__ import annotations

import hmac
import os
from typing import Any

from components.config import ConfigError
from components.serving.request_bodies import error_json

ALWAYS_PROTECTED = ("/predict", "/invocations", "/explain")


def keys_from_environment(variable: str) -> tuple[bytes, ...]:
    """The accepted keys; a named variable that is unset or empty stops the service from starting, since
    a service told to require a key must never answer without one."""
    keys = tuple(key.strip().encode() for key in os.environ.get(variable, "").split(",") if key.strip())
    if not keys:
        raise ConfigError(f"serve.api_key_env is {variable!r} but that environment variable is unset or empty; "
                          f"export {variable}=<key> (several keys: comma-separated), or remove serve.api_key_env")
    return keys


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip()
        if name == b"x-api-key":
            return value.strip()
    return None


def accepted(key: bytes | None, keys: tuple[bytes, ...]) -> bool:
    if key is None:
        return False
    # Every key compared, each in constant time: the answer's timing says nothing about which came close.
    return any([hmac.compare_digest(key, candidate) for candidate in keys])


class ApiKeyMiddleware:
    """Answers 401 before the app sees a request to a protected path without an accepted key."""

    def __init__(self, app: Any, keys: tuple[bytes, ...], protected: tuple[str, ...]) -> None:
        self.app, self.keys, self.protected = app, keys, frozenset(protected)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in self.protected:
            key = presented_key(scope.get("headers", []))
            if not accepted(key, self.keys):
                message = ("this endpoint needs an API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
                           if key is None else "the API key is not accepted")
                response = error_json(401, "UNAUTHENTICATED", message)
                response.headers["WWW-Authenticate"] = 'Bearer realm="tunegate"'
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
