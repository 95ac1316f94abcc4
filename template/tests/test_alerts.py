"""monitoring/alerts.yml: Prometheus's own checker and rule unit tests (promtool), and the rules
read against the metrics the app really exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from cnd_toolkit.testing import needed_tool

from api import create_app, metrics
from tests.conftest import TOOLS

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"


@pytest.fixture(scope="module")
def promtool() -> str:
    return needed_tool("promtool", "to check monitoring/alerts.yml", TOOLS["promtool"])


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=MONITORING)


def test_the_rules_pass_promtools_check(promtool: str) -> None:
    result = run(promtool, "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout + result.stderr


def test_the_rules_pass_their_unit_tests(promtool: str) -> None:
    result = run(promtool, "test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_a_wrong_expectation_fails_the_unit_tests(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: the same file with one expected label changed does."""
    shutil.copy(MONITORING / "alerts.yml", tmp_path / "alerts.yml")
    text = (MONITORING / "alerts.test.yml").read_text()
    assert "instance: proxy:9180" in text
    (tmp_path / "alerts.test.yml").write_text(text.replace("instance: proxy:9180", "instance: other:9180", 1))
    result = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode != 0


def test_every_metric_the_rules_read_from_the_app_exists() -> None:
    """A renamed metric or label would leave an alert that never fires: the names in the rules
    are the app's own (cAdvisor's and Prometheus's aside)."""
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())["groups"][0]["rules"]
    client = create_app({"LOG_LEVEL": "WARNING"}).test_client()
    client.get("/healthz")
    exposed = metrics.exposition().decode()
    names = set(re.findall(r"^([a-z_]+)(?:\{|\s)", exposed, flags=re.MULTILINE))
    labels = set(re.findall(r'([a-z_]+)="', exposed))
    foreign = {"up", "container_memory_working_set_bytes", "container_spec_memory_limit_bytes"}
    for rule in rules:
        for name in set(re.findall(r"\b([a-z_]+)\{", rule["expr"])) - foreign:
            assert name in names, (rule["alert"], name)
        for label in re.findall(r'([a-z_]+)(?:=~|!=|=)"', rule["expr"]):
            assert label in labels | {"job", "name"}, (rule["alert"], label)
