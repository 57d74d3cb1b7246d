"""The service's Prometheus alerting rules are valid and fire on what they should, nothing else
(promtool from Debian's `prometheus` package; .ci/run installs it, so in CI this never skips)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.project import REPO_ROOT

RULES = REPO_ROOT / "components" / "serving" / "prometheus_rules.yml"
RULE_TESTS = REPO_ROOT / "tests" / "prometheus" / "alerts_test.yml"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return found


def test_rules_are_valid(promtool):
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # Every rule in the file is found (a rule promtool could not read would be missing from the count).
    count = sum(len(group["rules"]) for group in yaml.safe_load(RULES.read_text())["groups"])
    assert count >= 9  # the service's 4 and monitoring's 5
    assert f"SUCCESS: {count} rules found" in done.stdout + done.stderr


def test_alerts_fire_on_constructed_series_and_stay_silent_on_a_healthy_one(promtool):
    done = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr
