"""The Prometheus client's decoding and error handling (the live paths are tested by its users)."""

from __future__ import annotations

import httpx
import pytest

from opsctl.errors import ExitCode
from opsctl.prometheus import Prometheus, PrometheusRejected, PrometheusUnreachable, first_value

pytestmark = pytest.mark.unit


def _serving(status: int, body: object) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        assert request.url.path.startswith("/prefix/api/v1/")
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handle)


def test_query_returns_the_result_vector() -> None:
    vector = [{"metric": {"job": "a"}, "value": [1, "2.5"]}]
    body = {"status": "success", "data": {"resultType": "vector", "result": vector}}
    with Prometheus("http://p/prefix/", transport=_serving(200, body)) as prometheus:
        assert prometheus.query("up") == vector
        assert prometheus.scalar("up") == 2.5


def test_an_api_error_names_the_server_and_its_reason() -> None:
    body = {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}
    prometheus = Prometheus("http://p/prefix", transport=_serving(400, body))
    with prometheus, pytest.raises(PrometheusUnreachable) as raised:
        prometheus.query("up{")
    assert "http://p/prefix" in raised.value.message
    assert "parse error" in raised.value.message
    assert raised.value.exit_code is ExitCode.FAILED


def test_an_api_error_is_a_rejection_whose_reason_is_prometheus_own() -> None:
    body = {"status": "error", "errorType": "bad_data", "error": "parse error at char 3"}
    prometheus = Prometheus("http://p/prefix", transport=_serving(400, body))
    with prometheus, pytest.raises(PrometheusRejected) as raised:
        prometheus.format_query("up{")
    assert raised.value.reason == "parse error at char 3"


@pytest.mark.parametrize(
    ("status", "body"),
    [(200, ["not", "an", "object"]), (404, {"kind": "Status", "message": "not found"})],
)
def test_json_that_is_not_the_api_is_unreachable_not_rejected(status: int, body: object) -> None:
    prometheus = Prometheus("http://p/prefix", transport=_serving(status, body))
    with prometheus, pytest.raises(PrometheusUnreachable) as raised:
        prometheus.metric_names()
    assert not isinstance(raised.value, PrometheusRejected)
    assert f"answered {status}" in raised.value.reason
    assert "http://p/prefix" in raised.value.message


def test_a_non_json_answer_is_unreachable() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="bad gateway"))
    prometheus = Prometheus("http://p/prefix", transport=transport)
    with prometheus, pytest.raises(PrometheusUnreachable) as raised:
        prometheus.rules()
    assert not isinstance(raised.value, PrometheusRejected)


def test_a_refused_connection_names_the_server() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    prometheus = Prometheus("http://p/prefix", transport=httpx.MockTransport(refuse))
    with prometheus, pytest.raises(PrometheusUnreachable) as raised:
        prometheus.query("up")
    assert raised.value.message == "cannot query Prometheus at http://p/prefix: connection refused"
    assert raised.value.reason == "connection refused"


def test_first_value_of_empty_and_nan_is_none() -> None:
    assert first_value([]) is None
    assert first_value([{"value": [0, "NaN"]}]) is None
    assert first_value([{"value": [0, "3"]}]) == 3.0
