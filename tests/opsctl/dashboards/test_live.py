"""Every panel query and variable query runs against the real Prometheus of the local stack."""

from __future__ import annotations

import pytest

from opsctl.dashboards import build_all, live_problems
from opsctl.errors import ExitCode
from opsctl.local import LocalStack
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.prometheus import Prometheus
from opsctl.spec import load_stack
from tests.support import OpsctlRunner, wait_for

pytestmark = pytest.mark.integration


def wait_for_rates(prometheus_url: str, timeout_s: float = 90) -> None:
    """rate() needs two samples in its window: wait until every target has been scraped thrice."""
    with Prometheus(prometheus_url, timeout=5) as prometheus:
        wait_for(
            f"Prometheus at {prometheus_url} to scrape every target 3 times",
            lambda: prometheus.query("min(count_over_time(up[1m])) >= 3"),
            timeout=timeout_s,
            interval=1,
        )


def test_every_query_parses_and_returns_series(
    local_stack: LocalStack, opsctl: OpsctlRunner
) -> None:
    prometheus = local_stack.info.prometheus_url
    wait_for_rates(prometheus)
    result = opsctl("dashboards", "lint", "--prometheus-url", prometheus)
    assert result.exit_code == ExitCode.OK, result.stderr


def test_a_query_for_a_metric_nobody_exports_is_reported(local_stack: LocalStack) -> None:
    built = build_all(load_stack(DEFAULT_INFRA_DIR, "local"))
    board = built["im-redis"]
    board["panels"][0]["targets"][0]["expr"] = "im_no_such_metric_total"
    board["panels"][1]["targets"][0]["expr"] = "sum(rate(up[$__rate_interval]) by"
    problems = live_problems({"im-redis": board}, local_stack.info.prometheus_url)
    assert "im-redis/Up: returns no series: im_no_such_metric_total" in problems
    assert any(p.startswith("im-redis/Memory: does not run:") for p in problems)
