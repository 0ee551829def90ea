"""SLO rules are generated from the spec: thresholds follow the SLOs, nothing is repeated."""

from __future__ import annotations

import pytest

from opsctl.alerts import slo_rules
from opsctl.alerts._slo import BURN_RATES, MIN_EVENTS, WINDOWS
from opsctl.errors import InvalidInputFile
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack, parse_spec
from tests.support import shipped_spec

pytestmark = pytest.mark.unit


def alerts_by_name(stack: str) -> dict[str, str]:
    rules = slo_rules(load_stack(DEFAULT_INFRA_DIR, stack))
    return {rule.name: str(rule.body["expr"]) for rule in rules.alerts()}


def test_every_sli_has_a_ratio_and_event_count_per_window() -> None:
    rules = slo_rules(load_stack(DEFAULT_INFRA_DIR, "local"))
    recorded = {(rule.name, rule.labels["slo"]) for rule in rules.recordings()}
    for slo in ("availability", "delivery-latency", "connect-success"):
        for window in WINDOWS:
            assert (f"im:slo_errors:ratio_rate{window}", slo) in recorded
            assert (f"im:slo_events:increase{window}", slo) in recorded
        assert ("im:slo_error_budget_remaining:ratio", slo) in recorded


@pytest.mark.parametrize(("stack", "budget"), [("local", 0.001), ("prod", 0.0005)])
def test_burn_thresholds_follow_the_spec_availability(stack: str, budget: float) -> None:
    page = alerts_by_name(stack)["ImSloAvailabilityBudgetBurnPage"]
    page_rates = [rate for rate in BURN_RATES if rate[0] == "page"]
    assert page_rates, "no page burn rates: nothing would be checked"
    for _, long_window, short_window, factor in page_rates:
        threshold = round(factor * budget, 10)
        assert f'ratio_rate{long_window}{{slo="availability"}} > {threshold}' in page
        assert f'ratio_rate{short_window}{{slo="availability"}} > {threshold}' in page


def test_every_burn_alert_requires_a_minimum_event_count() -> None:
    burns = {name: expr for name, expr in alerts_by_name("prod").items() if "BudgetBurn" in name}
    severities = {severity.title() for severity, *_ in BURN_RATES}
    slis = ("Availability", "DeliveryLatency", "ConnectSuccess")
    assert set(burns) == {f"ImSlo{sli}BudgetBurn{sev}" for sli in slis for sev in severities}
    for name, expr in burns.items():
        assert expr.count(f">= {MIN_EVENTS}") == 2, name


def test_latency_sli_uses_the_bucket_at_the_spec_threshold() -> None:
    rules = slo_rules(load_stack(DEFAULT_INFRA_DIR, "prod"))  # 200 ms
    (ratio,) = [
        str(rule.body["expr"])
        for rule in rules.recordings()
        if (rule.name, rule.labels["slo"]) == ("im:slo_errors:ratio_rate5m", "delivery-latency")
    ]
    assert 'im_gateway_delivery_latency_seconds_bucket{le="0.2"}' in ratio
    assert "> 0.2" in alerts_by_name("prod")["ImGatewayDeliveryP99High"]


def test_a_latency_slo_between_histogram_buckets_is_refused() -> None:
    spec_data = shipped_spec("local")
    spec_data["slos"]["deliveryLatencyP99Ms"] = 260
    with pytest.raises(InvalidInputFile) as caught:
        slo_rules(parse_spec(spec_data))
    (problem,) = caught.value.problems
    assert problem.path == "slos.deliveryLatencyP99Ms"
    assert "260 ms is not a boundary" in problem.message
