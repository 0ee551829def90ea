"""Cassandra in prod (issue 14): password authentication with a role per identity (created by
cass-operator from Secrets), TLS on the client port with the certificate the stack issues, the
grants of role_grants (the same the local stack applies), and the chart handed each role's
Secret and the CA."""

from __future__ import annotations

from typing import Any

import pytest

from opsctl.spec import parse_spec
from opsctl.stack import _names as n
from opsctl.stack import build_stack
from opsctl.stack._cassandra import ROLES, keyspace_cql, role_grants
from tests.support import shipped_spec

pytestmark = pytest.mark.unit

STACKS = ("local", "staging", "prod")


def _regions(stack: str) -> list[Any]:
    spec = parse_spec(shipped_spec(stack))
    return [(spec, plan) for plan in build_stack(spec).regions]


@pytest.mark.parametrize("stack", STACKS)
def test_every_datacenter_checks_passwords_and_speaks_tls_to_clients(stack: str) -> None:
    for _spec, plan in _regions(stack):
        objects = plan.component("cassandra").objects
        (dc,) = [o for o in objects if o["kind"] == "CassandraDatacenter"]
        yaml = dc["spec"]["config"]["cassandra-yaml"]
        assert yaml["authenticator"] == "PasswordAuthenticator"
        assert yaml["authorizer"] == "CassandraAuthorizer"
        client = yaml["client_encryption_options"]
        assert client["enabled"] is True
        assert client["optional"] is False  # no plaintext next to TLS
        users = dc["spec"]["users"]
        assert users == [
            {"secretName": n.cassandra_role_secret(role), "superuser": False} for role in ROLES
        ]
        volumes = dc["spec"]["podTemplateSpec"]["spec"]["volumes"]
        assert {"name": "client-tls", "secret": {"secretName": n.CASSANDRA_CLIENT_TLS_SECRET}} in (
            volumes
        )


def test_the_keyspace_job_grants_least_privilege_over_tls() -> None:
    spec = parse_spec(shipped_spec("prod"))
    cql = keyspace_cql(spec)
    keyspaces = [n.CASSANDRA_KEYSPACE, n.CASSANDRA_CONTROL_KEYSPACE]
    for grant in role_grants(keyspaces):
        assert f"{grant};" in cql.splitlines()
    app = [g for g in role_grants(keyspaces) if g.endswith(n.CASSANDRA_APP_ROLES)]
    assert {g.split()[1] for g in app} == {"SELECT", "MODIFY"}
    assert all("ALL KEYSPACES" not in g for g in app)
    primary = build_stack(spec).region(spec.primary.name)
    (job,) = [o for o in primary.component("cassandra").objects if o["kind"] == "Job"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert "cqlsh --ssl" in container["command"][-1]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SSL_VALIDATE"] == "true"
    assert env["SSL_CERTFILE"].endswith("/ca.crt")
