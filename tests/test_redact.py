"""Credentials never shown: URIs and error texts lose their logins, environment secrets become ***."""

from __future__ import annotations

import pytest

from components.config import ConfigError, parse_params
from components.redact import has_credentials, redact_secrets, redact_uri


@pytest.mark.parametrize(("uri", "shown"), [
    ("http://alice:s3cret@mlflow:5000/x?y=1", "http://mlflow:5000/x?y=1"),
    ("postgresql://user:pw@/mlflow?host=/run/pg", "postgresql:///mlflow?host=/run/pg"),
    ("https://a%40b:p%40q@host/path@x", "https://host/path@x"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("sqlite:////srv/mlflow/mlflow.db", "sqlite:////srv/mlflow/mlflow.db"),
])
def test_uris_are_shown_without_their_login(uri, shown):
    assert redact_uri(uri) == shown


def test_error_texts_lose_logins_and_environment_secrets(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "hunter22")
    text = ("API request to http://bob:hunter22@127.0.0.1:5000/api/2.0/x failed; "
            "retrying 'https://carol:other@h/api' with password hunter22")
    shown = redact_secrets(text)
    assert shown == ("API request to http://127.0.0.1:5000/api/2.0/x failed; retrying 'https://h/api' with password ***")


def test_a_password_in_params_is_refused_without_showing_it():
    assert has_credentials("http://a:b@h") and not has_credentials("postgresql://postgres@/db")
    raw = {"data": {"source": "x.csv", "labels": ["a", "b"]}, "model": {"base_model": "org/m"},
           "registry": {"tracking_uri": "http://alice:s3cret@mlflow:5000"}}
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_USERNAME") as refused:
        parse_params(raw, env={})
    assert "s3cret" not in str(refused.value) and "http://mlflow:5000" in str(refused.value)
