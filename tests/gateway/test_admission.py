"""gateway/admission.py: the bearer header, and which upgrades are refused before the handshake."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from gateway.admission import Admission, bearer, client_ip
from gateway.metrics import GatewayMetrics
from gateway.session import SessionTable
from tests.gateway import fakes

pytestmark = pytest.mark.unit


def test_bearer_header() -> None:
    assert bearer("Bearer abc ") == "abc"
    assert bearer("bearer abc") == "abc"
    assert bearer("Basic abc") is None
    assert bearer(None) is None


class Connection:
    remote_address = ("10.0.0.9", 50000)

    def respond(self, status: int, text: str) -> Response:
        return Response(status, "", Headers(), text.encode())


def admission(
    *,
    ready: bool,
    draining: bool = False,
    open_count: int = 0,
    pending: int = 0,
    from_ip: int = 0,
    **settings: str,
) -> Admission:
    backends: Any = SimpleNamespace(readiness=lambda: (ready, "ready" if ready else "kafka down"))
    table = SessionTable()
    table.open_count = open_count
    table.pending_hellos = pending
    for _ in range(from_ip):
        table.ip_opened("10.0.0.9")
    limits = {"max_pending_hellos": "3", "max_connections_per_ip": "2"} | settings
    return Admission(
        config=fakes.config(max_connections="2", **limits),
        verifier=None,  # type: ignore[arg-type]
        metrics=GatewayMetrics(),
        backends=backends,
        table=table,
        outbox=fakes.outbox(),
        drain=SimpleNamespace(active=draining),  # type: ignore[arg-type]
    )


def upgrade(gate: Admission, path: str = "/ws") -> Response | None:
    request = Request(path, Headers())
    return gate.process_request(Connection(), request)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("gate", "refusal"),
    [
        (admission(ready=True), None),
        (admission(ready=True, draining=True), "draining"),
        (admission(ready=False), "not_ready"),
        (admission(ready=True, open_count=2), "server_full"),
        (admission(ready=True, pending=3), "preauth_limit"),
        (admission(ready=True, pending=2, from_ip=1), None),
        (admission(ready=True, from_ip=2), "ip_limit"),
        (admission(ready=True, from_ip=2, max_connections_per_ip="0"), None),  # 0: no limit
    ],
)
def test_upgrades_are_refused_with_a_status_and_a_reason(
    gate: Admission, refusal: str | None
) -> None:
    response = upgrade(gate)
    if refusal is None:
        assert response is None
    else:
        assert response is not None
        status = 429 if refusal == "ip_limit" else 503
        assert (response.status_code, response.body) == (status, f"{refusal}\n".encode())
        assert response.headers["Retry-After"] == "1"
        assert gate.metrics.connects.labels(refusal)._value.get() == 1


def test_the_client_ip_is_the_peer_unless_a_trusted_proxy_says_otherwise() -> None:
    lb = fakes.config(trusted_proxy_cidrs="10.1.0.0/16, 192.168.7.1").trusted_proxies
    assert client_ip("203.0.113.5", "198.51.100.1", lb) == "203.0.113.5"  # not a proxy: forged
    assert client_ip("10.1.2.3", "198.51.100.1", lb) == "198.51.100.1"
    # The client may send its own X-Forwarded-For; the last untrusted hop is what the LB saw.
    assert client_ip("10.1.2.3", "1.2.3.4, 198.51.100.1, 192.168.7.1", lb) == "198.51.100.1"
    assert client_ip("10.1.2.3", None, lb) == "10.1.2.3"
    assert client_ip("10.1.2.3", "198.51.100.1", ()) == "10.1.2.3"  # no proxy trusted


def test_readiness_and_other_paths() -> None:
    draining = admission(ready=True, draining=True)
    assert draining.readiness() == (False, "draining")
    ready = upgrade(draining, "/readyz")
    assert ready is not None
    assert (ready.status_code, ready.body) == (503, b"draining\n")
    missing = upgrade(admission(ready=True), "/nope")
    assert missing is not None
    assert missing.status_code == 404
