"""What a person sees on the terminal: a user error's message without a traceback; a bug's traceback."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys

import pytest

from components.data.readers import IngestError
from tunegate.console import hide_user_error_tracebacks


@pytest.fixture
def console_and_api():
    """A Prefect console handler as Prefect configures it, and a second handler standing in for the
    API handler that ships records to the server; both on one logger, console first."""
    from prefect.logging.formatters import PrefectFormatter
    from prefect.logging.handlers import PrefectConsoleHandler

    terminal, server = io.StringIO(), io.StringIO()
    console = PrefectConsoleHandler(stream=terminal)
    console.setFormatter(PrefectFormatter(format="%(levelname)s %(message)s"))
    api = logging.StreamHandler(server)
    api.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("prefect.tunegate-test")
    logger.addHandler(console)
    logger.addHandler(api)
    logger.propagate = False
    yield logger, terminal, server
    logger.removeHandler(console)
    logger.removeHandler(api)


def _log_failure(logger: logging.Logger, error: Exception) -> None:
    try:
        raise error
    except type(error):
        logger.error("Task run failed with exception: %r", error, exc_info=True)


def test_a_user_error_reaches_the_terminal_without_traceback_and_the_server_with_it(console_and_api):
    logger, terminal, server = console_and_api
    hide_user_error_tracebacks((IngestError,))
    _log_failure(logger, IngestError("reviews.csv", "bad quote", row=7))
    assert "reviews.csv, row 7: bad quote" in terminal.getvalue()
    assert "Traceback" not in terminal.getvalue()
    assert "Traceback" in server.getvalue()


def test_a_bug_keeps_its_traceback_on_the_terminal(console_and_api):
    logger, terminal, _ = console_and_api
    hide_user_error_tracebacks((IngestError,))
    _log_failure(logger, KeyError("bug"))
    assert "Traceback" in terminal.getvalue()


def test_ingest_of_a_looping_symlink_is_one_clear_line(tmp_path):
    from tests.project import tiny_params, write_params

    write_params(tmp_path, tiny_params(tmp_path / "model"))
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    done = subprocess.run([sys.executable, "-m", "tunegate", "--project", str(tmp_path), "ingest", str(loop)],
                          env={**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect")},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == f"tunegate: {loop}: is a symbolic link that loops back on itself; point it at a real file"
