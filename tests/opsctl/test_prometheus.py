"""The Prometheus client's decoding and error handling (the live paths are tested by its users)."""

from __future__ import annotations

import httpx
import pytest

from opsctl.errors import ExitCode
from opsctl.prometheus import Prometheus, PrometheusUnreachable, first_value

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


def test_a_non_json_answer_is_unreachable() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="bad gateway"))
    prometheus = Prometheus("http://p/prefix", transport=transport)
    with prometheus, pytest.raises(PrometheusUnreachable):
        prometheus.rules()


def test_first_value_of_empty_and_nan_is_none() -> None:
    assert first_value([]) is None
    assert first_value([{"value": [0, "NaN"]}]) is None
    assert first_value([{"value": [0, "3"]}]) == 3.0
