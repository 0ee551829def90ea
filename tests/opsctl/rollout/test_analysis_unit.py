"""What the analysis reads from Prometheus: a value, "no data", or an error (which makes a
signal inconclusive and skips one reconnect check), through opsctl's one Prometheus client."""

from __future__ import annotations

import math

import httpx
import pytest

from opsctl.rollout._analysis import MetricsError, PrometheusMetrics

pytestmark = pytest.mark.unit


def serving(*samples: str, status: int = 200) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/query"
        if status != 200:
            return httpx.Response(status, json={"status": "error", "error": "bad_data"})
        result = [{"metric": {}, "value": [1.0, sample]} for sample in samples]
        body = {"status": "success", "data": {"resultType": "vector", "result": result}}
        return httpx.Response(200, json=body)

    return httpx.MockTransport(answer)


def test_the_first_sample_is_the_value_and_an_empty_result_is_none() -> None:
    assert PrometheusMetrics("http://p:9090", transport=serving("2.5", "7")).query("x") == 2.5
    assert PrometheusMetrics("http://p:9090", transport=serving()).query("x") is None


def test_nan_and_infinity_are_kept_for_the_verdict_to_call_no_data() -> None:
    assert math.isnan(PrometheusMetrics("http://p", transport=serving("NaN")).query("x") or 0)
    assert PrometheusMetrics("http://p", transport=serving("+Inf")).query("x") == math.inf


def test_errors_and_unreachable_servers_are_metrics_errors() -> None:
    with pytest.raises(MetricsError, match="bad_data"):
        PrometheusMetrics("http://p:9090", transport=serving(status=400)).query("x{")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    metrics = PrometheusMetrics("http://p:9090", transport=httpx.MockTransport(refuse))
    with pytest.raises(MetricsError, match=r"http://p:9090.*connection refused"):
        metrics.query("x")
