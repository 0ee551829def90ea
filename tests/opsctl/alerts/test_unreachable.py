"""Every live alerts command fails on an unreachable Prometheus as a check naming its URL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from opsctl.alerts import ruleset
from opsctl.alerts._diff import diff
from opsctl.alerts._live import list_alerts
from opsctl.alerts._metrics import exposed_metrics
from opsctl.errors import CheckFailed, ExitCode
from opsctl.loadtest.targets import free_port
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "ask",
    [
        list_alerts,
        exposed_metrics,
        lambda url: diff(ruleset(load_stack(DEFAULT_INFRA_DIR, "local")), url),
    ],
    ids=["list", "metrics", "diff"],
)
def test_an_unreachable_prometheus_is_a_check_failure_naming_it(
    ask: Callable[[str], object],
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(CheckFailed) as raised:
        ask(nowhere)
    assert raised.value.exit_code is ExitCode.FAILED
    assert f"cannot query Prometheus at {nowhere}" in raised.value.message
