from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never reach a hub or phone home; set before any of these libraries is imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The tests' models are tiny: their ops gain nothing from a second thread, and OpenMP threads that spin
# waiting for a core another process holds made a tiny training twice as slow on a shared 2-core machine
# (train stage 57-62 s with 2 threads, 25-30 s with 1). Set before torch is imported, so this process and
# every process a test starts (DVC stages, `tunegate run`, workers) inherit it; an explicit value wins.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

from tests.tiny import build_tiny_base_model, sentiment_frame  # noqa: E402

# torch's thread count when the session started: every test starts from it, whatever ran before.
_SESSION_THREADS: int | None = None


@pytest.fixture(autouse=True)
def same_global_state_for_every_test():
    """Each test starts from the same process-wide state and leaves none behind: torch's thread count,
    the random generators of random, numpy and torch (seeded to 0), torch's determinism switch and
    the environment. A test's outcome then depends on the test alone, not on what ran before it."""
    import random

    import numpy as np
    import torch

    global _SESSION_THREADS
    if _SESSION_THREADS is None:
        _SESSION_THREADS = torch.get_num_threads()
    environment = dict(os.environ)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(_SESSION_THREADS)
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(_SESSION_THREADS)
    torch.use_deterministic_algorithms(deterministic)
    for key in set(os.environ) - set(environment):
        del os.environ[key]
    os.environ.update(environment)


def pytest_collection_modifyitems(config, items):
    """The slow end-to-end modules first (a stable sort keeps each module's own order): `make test` runs
    on two workers, one module at a time each, and the minutes-long modules then overlap each other and
    the quick tests instead of one of them starting last while the other worker sits idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def tiny_base_model(tmp_path_factory) -> Path:
    corpus = sentiment_frame(400, seed=123)["review"].tolist()
    return build_tiny_base_model(tmp_path_factory.mktemp("tiny-bert"), corpus)


@pytest.fixture(scope="session")
def prefect_api():
    """A real Prefect API on a temporary SQLite database, shared by the tests that run flows."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    # No heartbeat thread: at the end of every flow run Prefect joins it, up to 1 s each, and nothing
    # here watches heartbeats (they let a server notice a crashed run; tests end their runs themselves).
    with prefect_test_harness(server_startup_timeout=60), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@pytest.fixture(scope="session")
def tiny_ner_base_model(tmp_path_factory) -> Path:
    """The tiny BERT with a word-piece vocabulary trained on NER-style sentences."""
    from tests.tiny import ner_corpus

    return build_tiny_base_model(tmp_path_factory.mktemp("tiny-ner-bert"), ner_corpus())
