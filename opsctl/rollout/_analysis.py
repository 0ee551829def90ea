"""Canary analysis on the platform's own signals, read from the region's Prometheus.

Canary and stable pods are told apart by the ``pod`` label Prometheus puts on every target
(the ServiceMonitor's endpoints discovery adds it): canary pods belong to the Deployment
``<stable>-canary`` so they are named ``<stable>-canary-<hash>-<id>``, stable pods
``<stable>-<hash>-<id>``. PromQL regexes are anchored, so the two never overlap.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from gateway.metrics import PLATFORM_SEND_FAILURES
from opsctl.rollout._plan import RolloutPlan, Thresholds

if TYPE_CHECKING:
    import httpx

Verdict = Literal["pass", "fail", "inconclusive"]
_POD_SUFFIX = "-[a-z0-9]+-[a-z0-9]+"
ABNORMAL_DISCONNECTS = (
    "connection_lost|slow_consumer|protocol_error|frame_too_big|backend_error|error"
)
ROLLOUT_DISCONNECTS = "drain|shutdown"
SEND_FAILURES = "|".join(PLATFORM_SEND_FAILURES)  # not_member, duplicate_id: the client's


class MetricsError(Exception):
    """Prometheus could not answer (unreachable, bad query)."""


class Metrics(Protocol):
    def query(self, expr: str) -> float | None:
        """One instant value; None when the result is empty. Raises MetricsError."""
        ...


class PrometheusMetrics:
    """Metrics from one Prometheus through opsctl's client (TLS verified)."""

    def __init__(
        self, url: str, timeout: float = 5.0, *, transport: httpx.BaseTransport | None = None
    ) -> None:
        from opsctl.prometheus import Prometheus

        self.url = url
        self._prometheus = Prometheus(url, timeout=timeout, transport=transport)

    def query(self, expr: str) -> float | None:
        """The first sample as Prometheus gave it: NaN and infinities are kept (``judge``
        calls them "no data" and shows the value), an empty result is None."""
        from opsctl.prometheus import PrometheusUnreachable

        try:
            result = self._prometheus.query(expr)
            return float(result[0]["value"][1]) if result else None
        except PrometheusUnreachable as error:
            raise MetricsError(error.message) from error
        except (KeyError, IndexError, TypeError, ValueError) as error:
            raise MetricsError(f"{self.url}: unexpected answer to {expr!r}: {error!r}") from error


@dataclass(frozen=True)
class Selectors:
    """PromQL label matchers for the two sides being compared, and for the whole region."""

    canary: str
    stable: str
    region: str
    lag: str

    @classmethod
    def for_plan(cls, plan: RolloutPlan) -> Selectors:
        ns = f'namespace="{plan.namespace}"'
        return cls(
            canary=f'{ns},pod=~"{plan.canary_deployment}{_POD_SUFFIX}"',
            stable=f'{ns},pod=~"{plan.deployment}{_POD_SUFFIX}"',
            region=f'{ns},pod=~"{plan.deployment}(-canary)?{_POD_SUFFIX}"',
            lag=ns,
        )


@dataclass(frozen=True)
class Signal:
    """One signal: its value and sample-count queries over a selector, and its SLO.

    ``badness`` turns a value into "higher is worse" so every comparison reads the same.
    """

    name: str
    value: str  # PromQL with {sel} and {w}
    samples: str | None  # PromQL for the sample count; None = series count is enough
    slo: Callable[[Thresholds], float]
    higher_is_worse: bool = True

    def badness(self, value: float) -> float:
        return value if self.higher_is_worse else 1.0 - value


GATEWAY_SIGNALS: tuple[Signal, ...] = (
    Signal(
        "delivery_p99_ms",
        "1000 * histogram_quantile(0.99, sum by (le) "
        "(rate(im_gateway_delivery_latency_seconds_bucket{{{sel}}}[{w}])))",
        "sum(increase(im_gateway_delivery_latency_seconds_count{{{sel}}}[{w}]))",
        lambda t: t.delivery_p99_ms,
    ),
    Signal(
        "send_error_ratio",
        '(sum(rate(im_gateway_messages_failed_total{{{sel},reason=~"' + SEND_FAILURES + '"}}[{w}]))'
        " or vector(0)) / (sum(rate(im_gateway_messages_accepted_total{{{sel}}}[{w}]))"
        ' + (sum(rate(im_gateway_messages_failed_total{{{sel},reason=~"'
        + SEND_FAILURES
        + '"}}[{w}])) or vector(0)))',
        "sum(increase(im_gateway_messages_accepted_total{{{sel}}}[{w}]))",
        lambda t: t.send_error_ratio,
    ),
    Signal(
        "abnormal_disconnects_per_1k",
        '1000 * (sum(rate(im_gateway_disconnects_total{{{sel},reason=~"'
        + ABNORMAL_DISCONNECTS
        + '"}}[{w}])) or vector(0)) / sum(im_gateway_connections_active{{{sel}}})',
        "sum(im_gateway_connections_active{{{sel}}})",
        lambda t: t.abnormal_disconnects_per_1k,
    ),
    Signal(
        "connect_success",
        '(sum(rate(im_gateway_connects_total{{{sel},reason="accepted"}}[{w}])) or vector(0))'
        ' / sum(rate(im_gateway_connects_total{{{sel},reason!="auth_failed"}}[{w}]))',
        'sum(increase(im_gateway_connects_total{{{sel},reason!="auth_failed"}}[{w}]))',
        lambda t: t.connect_success,
        higher_is_worse=False,
    ),
)
LAG_SIGNAL = Signal(
    "consumer_lag",
    "max(im_dispatcher_consumer_lag{{{sel}}})",
    None,
    lambda t: t.max_consumer_lag,
)
# Batches retried after an error, per batch attempted. A committed batch is one observation of
# im_dispatcher_batch_latency_seconds (consume to offsets committed). Retries delay deliveries,
# so the ceiling is the send error budget.
BATCH_FAILURE_SIGNAL = Signal(
    "batch_failure_ratio",
    "(sum(rate(im_dispatcher_batch_failures_total{{{sel}}}[{w}])) or vector(0))"
    " / (sum(rate(im_dispatcher_batch_latency_seconds_count{{{sel}}}[{w}]))"
    " + (sum(rate(im_dispatcher_batch_failures_total{{{sel}}}[{w}])) or vector(0)))",
    "sum(increase(im_dispatcher_batch_latency_seconds_count{{{sel}}}[{w}]))",
    lambda t: t.send_error_ratio,
)
DISPATCHER_SIGNALS: tuple[Signal, ...] = (LAG_SIGNAL, BATCH_FAILURE_SIGNAL)


def signals_for(component: str) -> tuple[tuple[Signal, ...], tuple[Signal, ...]]:
    """(own, other): the rolled component's signals, split canary from stable, and the other
    component's, judged namespace-wide against the SLOs. A gateway rollout watches only the
    dispatchers' lag (batch counts may be idle and would leave it inconclusive); a dispatcher
    rollout watches every gateway signal, since end-to-end delivery shows on the gateways."""
    if component == "dispatcher":
        return DISPATCHER_SIGNALS, GATEWAY_SIGNALS
    return GATEWAY_SIGNALS, (LAG_SIGNAL,)


@dataclass
class SignalResult:
    name: str
    verdict: Verdict
    reason: str
    slo: float
    canary: float | None = None
    stable: float | None = None
    canary_samples: float | None = None
    stable_samples: float | None = None
    query: str = ""


@dataclass
class Analysis:
    region: str
    step: int
    weight: int
    kind: str  # "canary" (canary vs stable + SLOs) or "slo" (whole region vs SLOs)
    verdict: Verdict
    at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    signals: list[SignalResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        bad = [s for s in self.signals if s.verdict != "pass"]
        if not bad:
            return "all signals pass"
        return "; ".join(f"{s.name}: {s.reason}" for s in bad)


def _usable(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


def judge(
    signal: Signal,
    thresholds: Thresholds,
    min_samples: int,
    canary: tuple[float | None, float | None],
    stable: tuple[float | None, float | None] | None,
) -> SignalResult:
    """Pure verdict for one signal from (value, samples) of each side; stable None = SLO only."""
    slo = signal.slo(thresholds)
    value, samples = canary
    result = SignalResult(signal.name, "pass", "ok", slo, canary=value, canary_samples=samples)
    if stable is not None:
        result.stable, result.stable_samples = stable
    if not _usable(value):
        result.verdict, result.reason = "inconclusive", f"no data (value {_fmt(value)})"
        return result
    assert value is not None
    needed = 1 if signal.samples is None else min_samples
    sides = [("canary", samples)] + ([("stable", stable[1])] if stable is not None else [])
    for side, count in sides:
        if signal.samples is not None and (not _usable(count) or (count or 0) < needed):
            result.verdict = "inconclusive"
            result.reason = f"{side} has {_fmt(count)} samples, fewer than {needed}"
            return result
    worse = value > slo if signal.higher_is_worse else value < slo
    if worse:
        result.verdict, result.reason = "fail", f"{value:.4g} breaches the SLO {slo:.4g}"
        return result
    if stable is not None:
        base = stable[0]
        if not _usable(base):
            result.verdict, result.reason = "inconclusive", f"no stable baseline ({_fmt(base)})"
            return result
        assert base is not None
        # Slack of a tenth of the SLO so tiny absolute differences near zero do not fail.
        slack = 0.1 * signal.badness(slo)
        limit = signal.badness(base) * (1 + thresholds.baseline_tolerance) + slack
        if signal.badness(value) > limit:
            result.verdict = "fail"
            result.reason = (
                f"canary {value:.4g} is worse than stable {base:.4g} "
                f"beyond {thresholds.baseline_tolerance:.0%}"
            )
    return result


def combine(results: list[SignalResult]) -> Verdict:
    """A clear failure wins; otherwise any doubt makes the whole analysis inconclusive."""
    verdicts = {result.verdict for result in results}
    if "fail" in verdicts:
        return "fail"
    return "inconclusive" if "inconclusive" in verdicts else "pass"


def _window(plan: RolloutPlan) -> str:
    return f"{max(1, math.ceil(plan.interval_s))}s"


def analyze(
    metrics: Metrics, plan: RolloutPlan, region: str, step: int, weight: int, *, compare: bool
) -> Analysis:
    """Run every signal; ``compare`` pits canary against stable, else judges the whole region."""
    selectors = Selectors.for_plan(plan)
    window = _window(plan)
    namespace_wide = f'namespace="{plan.namespace}"'
    results: list[SignalResult] = []
    own_signals, other_signals = signals_for(plan.component)
    for signal in (*own_signals, *other_signals):
        # Only the rolled component's own signals split canary from stable; the other
        # component's signals are judged namespace-wide against the SLOs.
        own = signal in own_signals
        if own and compare:
            canary_sel, stable_sel = selectors.canary, selectors.stable
        else:
            canary_sel, stable_sel = (selectors.region if own else namespace_wide), None
        try:
            canary_side = _side(metrics, signal, canary_sel, window)
            stable_side = _side(metrics, signal, stable_sel, window) if stable_sel else None
        except MetricsError as error:
            results.append(SignalResult(signal.name, "inconclusive", f"Prometheus: {error}", 0.0))
            continue
        result = judge(signal, plan.thresholds, plan.min_samples, canary_side, stable_side)
        result.query = signal.value.format(sel=canary_sel, w=window)
        results.append(result)
    return Analysis(
        region=region,
        step=step,
        weight=weight,
        kind="canary" if compare else "slo",
        verdict=combine(results),
        signals=results,
    )


def _side(
    metrics: Metrics, signal: Signal, selector: str, window: str
) -> tuple[float | None, float | None]:
    value = metrics.query(signal.value.format(sel=selector, w=window))
    if signal.samples is None:
        return value, (1.0 if value is not None else 0.0)
    return value, metrics.query(signal.samples.format(sel=selector, w=window))


def reconnect_rate(metrics: Metrics, plan: RolloutPlan) -> float:
    """Reconnects/s the rollout is causing now: drain and shutdown disconnects, region-wide."""
    sel = Selectors.for_plan(plan).region
    expr = (
        f'sum(rate(im_gateway_disconnects_total{{{sel},reason=~"{ROLLOUT_DISCONNECTS}"}}'
        f"[{_window(plan)}]))"
    )
    value = metrics.query(expr)
    return value if value is not None and math.isfinite(value) else 0.0


def connections(metrics: Metrics, selector: str) -> float:
    value = metrics.query(f"sum(im_gateway_connections_active{{{selector}}})")
    return value if value is not None and math.isfinite(value) else 0.0
