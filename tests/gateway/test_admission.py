"""gateway/admission.py: the bearer header, and which upgrades are refused before the handshake."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from gateway.admission import Admission, bearer
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
    def respond(self, status: int, text: str) -> Response:
        return Response(status, "", Headers(), text.encode())


def admission(*, ready: bool, draining: bool = False, open_count: int = 0) -> Admission:
    backends: Any = SimpleNamespace(readiness=lambda: (ready, "ready" if ready else "kafka down"))
    table = SessionTable()
    table.open_count = open_count
    return Admission(
        config=fakes.config(max_connections="2"),
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
    ],
)
def test_upgrades_are_refused_with_503_and_a_reason(gate: Admission, refusal: str | None) -> None:
    response = upgrade(gate)
    if refusal is None:
        assert response is None
    else:
        assert response is not None
        assert (response.status_code, response.body) == (503, f"{refusal}\n".encode())
        assert response.headers["Retry-After"] == "1"


def test_readiness_and_other_paths() -> None:
    draining = admission(ready=True, draining=True)
    assert draining.readiness() == (False, "draining")
    ready = upgrade(draining, "/readyz")
    assert ready is not None
    assert (ready.status_code, ready.body) == (503, b"draining\n")
    missing = upgrade(admission(ready=True), "/nope")
    assert missing is not None
    assert missing.status_code == 404
