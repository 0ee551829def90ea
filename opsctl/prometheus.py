"""The one Prometheus HTTP API client opsctl uses: instant queries, rules, metric names.

TLS is verified (``verify`` may name a CA bundle); transport and protocol failures become
``PrometheusUnreachable``, which callers turn into a reason, a check failure or a retry. When
Prometheus did answer, with an API error (a query that does not parse, say), the error is the
subclass ``PrometheusRejected``, so a caller can report the query and carry on.

A ``transport`` (any ``httpx.BaseTransport``) changes how requests travel, not what they mean:
``opsctl status`` sends them through the Kubernetes API server's service proxy.
"""

from __future__ import annotations

import math
from typing import Any

import httpx

from opsctl.errors import CheckFailed

DEFAULT_TIMEOUT_S = 10.0


class PrometheusUnreachable(CheckFailed):
    """Prometheus did not answer, or answered something that is not its API.

    ``message`` names the server; ``reason`` is the same without it, for a caller that
    already says which server it asked.
    """

    def __init__(self, message: str, *, reason: str | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason or message


class PrometheusRejected(PrometheusUnreachable):
    """Prometheus answered with an API error (``status: error``); ``reason`` is its ``error``."""


class Prometheus:
    """A Prometheus server's HTTP API at ``url`` (``http(s)://host:port`` plus any path prefix)."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url, timeout=timeout, verify=verify, transport=transport
        )

    def __enter__(self) -> Prometheus:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def api(self, path: str, **params: str) -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; raise on any failure."""
        try:
            answer = self._client.get(f"/api/v1/{path}", params=params)
            body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise self._failed(str(exc) or type(exc).__name__) from exc
        if not isinstance(body, dict) or "status" not in body:
            raise self._failed(f"answered {answer.status_code}: {answer.text[:200]}")
        if body["status"] != "success" or answer.status_code != 200 or "data" not in body:
            reason = str(body.get("error") or answer.text[:200])
            raise PrometheusRejected(
                f"Prometheus at {self.url} answered {answer.status_code}: {reason}", reason=reason
            )
        return body["data"]

    def _failed(self, reason: str) -> PrometheusUnreachable:
        return PrometheusUnreachable(
            f"cannot query Prometheus at {self.url}: {reason}", reason=reason
        )

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result vector (each item has ``metric`` and ``value``)."""
        return list(self.api("query", query=expr)["result"])

    def scalar(self, expr: str) -> float | None:
        """The first sample of an instant query; None when empty or NaN."""
        return first_value(self.query(expr))

    def rules(self) -> list[dict[str, Any]]:
        """The rule groups Prometheus has loaded."""
        return list(self.api("rules")["groups"])

    def metric_names(self) -> set[str]:
        return set(self.api("label/__name__/values"))

    def format_query(self, expr: str) -> str:
        return str(self.api("format_query", query=expr))


def first_value(result: list[dict[str, Any]]) -> float | None:
    """The first sample's value of a query result; None when empty or NaN."""
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value
