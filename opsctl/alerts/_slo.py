"""SLO recording rules and multi-window, multi-burn-rate alerts, generated from the stack spec.

The SLO numbers live only in the spec (``slos``); nothing here repeats them. Burn-rate
windows and factors follow the usual multi-window scheme: a page when the budget of 30 days
would be gone in about 2 days (fast) or 5 days (slow), a ticket when it would be gone in
10 days or within the 30 days.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.metrics import LATENCY_BUCKETS, PLATFORM_SEND_FAILURES
from opsctl.alerts._rules import RUNBOOK_BASE_URL, RuleSet
from opsctl.errors import InputProblem, InvalidInputFile
from opsctl.spec import Slos, StackSpec

SLO_FILE = "slo.yaml"
SLO_TEAM = "im-platform"  # the gateway team answers for the user-facing SLOs
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# (severity, long window, short window, burn-rate factor)
BURN_RATES = (
    ("page", "1h", "5m", 14.4),
    ("page", "6h", "30m", 6.0),
    ("ticket", "1d", "2h", 3.0),
    ("ticket", "3d", "6h", 1.0),
)
# Fewer events than this in the long window never alert: one failure at night must not page.
MIN_EVENTS = 100
# Delivery latency histogram boundaries the gateway exports (gateway.metrics.LATENCY_BUCKETS).
_LATENCY_METRIC = "im_gateway_delivery_latency_seconds"
# Failures that count against the SLOs; client mistakes (bad token, not a member) do not.
_SEND_ERRORS = f'im_gateway_messages_failed_total{{reason=~"{"|".join(PLATFORM_SEND_FAILURES)}"}}'
_CONNECT_ERRORS = 'im_gateway_connects_total{reason=~"backend_error|server_full|not_ready"}'
_CONNECTS_ACCEPTED = 'im_gateway_connects_total{reason="accepted"}'


@dataclass(frozen=True)
class Sli:
    name: str  # label value slo=...
    title: str
    objective: float  # fraction of good events, e.g. 0.999
    errors: Callable[[str], str]  # window -> PromQL rate of bad events
    total: Callable[[str], str]  # window -> PromQL rate of all events


def _latency_bucket(slos: Slos) -> str:
    seconds = slos.delivery_latency_p99_ms / 1000
    if seconds not in LATENCY_BUCKETS:
        problem = InputProblem(
            "stack spec",
            "slos.deliveryLatencyP99Ms",
            f"{slos.delivery_latency_p99_ms} ms is not a boundary of {_LATENCY_METRIC} "
            f"(ms: {', '.join(str(round(b * 1000)) for b in LATENCY_BUCKETS)})",
        )
        raise InvalidInputFile("stack spec", "stack spec", [problem])
    return repr(seconds)


def _rate(selector: str, window: str) -> str:
    return f"sum(rate({selector}[{window}]))"


def slis(slos: Slos) -> list[Sli]:
    fast_bucket = f'{_LATENCY_METRIC}_bucket{{le="{_latency_bucket(slos)}"}}'

    def send_errors(w: str) -> str:
        return f"({_rate(_SEND_ERRORS, w)} or vector(0))"

    def sends(w: str) -> str:
        return f"({_rate('im_gateway_messages_accepted_total', w)} + {send_errors(w)})"

    def deliveries(w: str) -> str:
        return _rate(f"{_LATENCY_METRIC}_count", w)

    def slow_deliveries(w: str) -> str:
        return f"({deliveries(w)} - {_rate(fast_bucket, w)})"

    def connect_errors(w: str) -> str:
        return f"({_rate(_CONNECT_ERRORS, w)} or vector(0))"

    def connects(w: str) -> str:
        return f"({_rate(_CONNECTS_ACCEPTED, w)} + {connect_errors(w)})"

    availability, connect_success = slos.availability / 100, slos.connect_success / 100
    latency_title = f"deliveries within {slos.delivery_latency_p99_ms} ms"
    connect_title = "WebSocket connect success"
    return [
        Sli("availability", "message send availability", availability, send_errors, sends),
        Sli("delivery-latency", latency_title, 0.99, slow_deliveries, deliveries),
        Sli("connect-success", connect_title, connect_success, connect_errors, connects),
    ]


def _ratio(sli: Sli, window: str) -> str:
    return f'im:slo_errors:ratio_rate{window}{{slo="{sli.name}"}}'


def _events(sli: Sli, window: str) -> str:
    return f'im:slo_events:increase{window}{{slo="{sli.name}"}}'


def _recordings(sli: Sli) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for window in WINDOWS:
        errors, total = sli.errors(window), sli.total(window)
        rules.append(
            {
                "record": f"im:slo_errors:ratio_rate{window}",
                "expr": f"{errors} / clamp_min({total}, 1e-9)",
                "labels": {"slo": sli.name},
            }
        )
        rules.append(
            {
                "record": f"im:slo_events:increase{window}",
                "expr": f"{total} * {_seconds(window)}",
                "labels": {"slo": sli.name},
            }
        )
    rules.append(
        {
            "record": "im:slo_error_budget_remaining:ratio",
            "expr": f"1 - avg_over_time({_ratio(sli, '1h')}[30d]) / {_budget(sli)}",
            "labels": {"slo": sli.name},
        }
    )
    return rules


def _alert(sli: Sli, severity: str) -> dict[str, Any]:
    clauses = []
    for rate_severity, long_window, short_window, factor in BURN_RATES:
        if rate_severity != severity:
            continue
        threshold = round(factor * _budget(sli), 10)
        clauses.append(
            f"({_ratio(sli, long_window)} > {threshold}"
            f" and {_ratio(sli, short_window)} > {threshold}"
            f" and {_events(sli, long_window)} >= {MIN_EVENTS})"
        )
    camel = "".join(part.capitalize() for part in sli.name.split("-"))
    return {
        "alert": f"ImSlo{camel}BudgetBurn{severity.capitalize()}",
        "expr": "\n or ".join(clauses),
        "for": "2m" if severity == "page" else "15m",
        "labels": {"severity": severity, "team": SLO_TEAM, "slo": sli.name},
        "annotations": {
            "summary": f"{sli.title}: error budget burning too fast ({severity})",
            "description": (
                f"The {sli.title} SLO ({sli.objective * 100:g}% good) is burning its 30-day "
                "error budget: {{ $value | humanizePercentage }} of events failed over the "
                "alerting window."
            ),
            "runbook_url": f"{RUNBOOK_BASE_URL}slo-{sli.name}",
        },
    }


def _latency_symptom(slos: Slos) -> dict[str, Any]:
    threshold = slos.delivery_latency_p99_ms / 1000
    return {
        "alert": "ImGatewayDeliveryP99High",
        "expr": (
            f"histogram_quantile(0.99, sum by (le) (rate({_LATENCY_METRIC}_bucket[5m]))) "
            f"> {threshold}"
        ),
        "for": "10m",
        "labels": {"severity": "ticket", "team": SLO_TEAM},
        "annotations": {
            "summary": "Delivery p99 above the SLO threshold",
            "description": (
                "End-to-end delivery p99 is {{ $value | humanizeDuration }}, above the "
                f"{slos.delivery_latency_p99_ms} ms objective, for 10 minutes."
            ),
            "runbook_url": f"{RUNBOOK_BASE_URL}gateway-delivery-p99-high",
        },
    }


def slo_rules(spec: StackSpec) -> RuleSet:
    """The generated rule file for one stack: recordings, burn-rate alerts, the p99 symptom."""
    indicators = slis(spec.slos)
    recordings = [rule for sli in indicators for rule in _recordings(sli)]
    alerts = [_alert(sli, severity) for sli in indicators for severity in ("page", "ticket")]
    alerts.append(_latency_symptom(spec.slos))
    # One group: rules in a group run in order, so every alert sees this evaluation's ratios.
    return RuleSet(files={SLO_FILE: [{"name": "im-slo", "rules": [*recordings, *alerts]}]})


def _budget(sli: Sli) -> float:
    return round(1 - sli.objective, 10)


def _seconds(window: str) -> int:
    units = {"m": 60, "h": 3600, "d": 86400}
    return int(window[:-1]) * units[window[-1]]
