"""The chart values the builders give the gateway (opsctl.stack._gateway.chart_values) name the
backends' TLS names and CA, and each identity's login Secret (issue 14)."""

from __future__ import annotations

import fnmatch
from typing import Any
from urllib.parse import urlsplit

import pytest

from opsctl.spec import parse_spec
from opsctl.stack import _names as n
from opsctl.stack import build_stack
from opsctl.stack._gateway import chart_values
from tests.support import shipped_spec

pytestmark = pytest.mark.unit

STACKS = ("local", "staging", "prod")


def _regions(stack: str) -> list[Any]:
    spec = parse_spec(shipped_spec(stack))
    return [(spec, plan) for plan in build_stack(spec).regions]


def _certificates(plan: Any) -> dict[str, Any]:
    objects = plan.component("pki").objects
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == "Certificate"}


@pytest.mark.parametrize("stack", STACKS)
def test_redis_the_gateway_dials_is_tls_with_a_certificate_it_trusts(stack: str) -> None:
    for spec, plan in _regions(stack):
        certs = _certificates(plan)
        cert = certs[n.REDIS_TLS_SECRET]
        assert cert["metadata"]["namespace"] == n.DATA_NAMESPACE
        values = chart_values(spec, plan.region)["redis"]
        url = urlsplit(values["url"])
        assert url.scheme == "rediss"
        assert any(fnmatch.fnmatch(url.hostname or "", name) for name in cert["spec"]["dnsNames"])
        # The chart trusts the CA that issued it: the ca.crt of a Certificate from the same
        # issuer in the app namespace.
        ca = certs[values["caSecret"]]
        assert ca["metadata"]["namespace"] == n.APP_NAMESPACE
        assert ca["spec"]["issuerRef"] == cert["spec"]["issuerRef"]
        assert values["auth"] == {
            "gatewaySecret": n.redis_user_secret(n.REDIS_GATEWAY_USER),
            "dispatcherSecret": n.redis_user_secret(n.REDIS_DISPATCHER_USER),
        }


@pytest.mark.parametrize("stack", STACKS)
def test_cassandra_the_gateway_dials_is_tls_with_a_certificate_it_trusts(stack: str) -> None:
    for spec, plan in _regions(stack):
        certs = _certificates(plan)
        cert = certs[n.CASSANDRA_CLIENT_TLS_SECRET]
        values = chart_values(spec, plan.region)["cassandra"]
        for host in values["hosts"].split(","):
            name = host.rsplit(":", 1)[0]
            assert any(fnmatch.fnmatch(name, dns) for dns in cert["spec"]["dnsNames"]), name
        ca = certs[values["caSecret"]]
        assert ca["spec"]["issuerRef"] == cert["spec"]["issuerRef"]
        assert values["auth"] == {
            "gatewaySecret": n.cassandra_role_secret("gateway"),
            "dispatcherSecret": n.cassandra_role_secret("dispatcher"),
            "migrateSecret": n.cassandra_role_secret("migrate"),
        }
