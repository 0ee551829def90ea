"""The rules on the relay's and the conflict prober's metrics (group im-multi-region) use only
series the live multi-region stack (staging) exposes: the processes run only there, so the
one-region check (test_live_metrics.py) leaves them out."""

from __future__ import annotations

import pytest

from opsctl.alerts import ruleset
from opsctl.alerts._metrics import exposed_metrics, rule_metrics, unknown_metrics
from opsctl.local import LocalStack
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack
from tests.alerts.test_live_metrics import MULTI_REGION_PREFIXES
from tests.support import wait_for

pytestmark = pytest.mark.integration


def test_the_multi_region_rules_use_metrics_the_relays_expose(
    multi_region_stack: LocalStack,
) -> None:
    rules = ruleset(load_stack(DEFAULT_INFRA_DIR, "staging"))
    used = {
        name
        for entry in rule_metrics(rules)
        for name in entry.metrics
        if name.startswith(MULTI_REGION_PREFIXES)
    }
    assert {
        "im_prober_conflicts_total",
        "im_prober_last_run_timestamp_seconds",
        "im_relay_replication_lag_seconds",
    } <= used
    prometheus = multi_region_stack.info.prometheus_url

    def missing() -> list[str]:
        problems = unknown_metrics(rules, exposed_metrics(prometheus))
        return [p for p in problems if any(f"metric {x}" in p for x in MULTI_REGION_PREFIXES)]

    # The first scrapes of the relays come within a scrape interval of the stack's start.
    wait_for("the relays' series scraped", lambda: not missing(), timeout=60, interval=2)
