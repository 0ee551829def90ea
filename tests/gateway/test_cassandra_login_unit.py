"""The Cassandra login of the gateway, the dispatcher and migrate: a role, its password from
a file (a mounted Secret) and the CA for client TLS; wrong combinations refused by name."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from gateway.config import load
from gateway.store import CassandraAuth, CassandraStore
from tests.gateway.test_config import gateway_env, problems_of

pytestmark = pytest.mark.unit


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    from opsctl.local._secrets import LocalSecrets

    secrets = LocalSecrets.of(tmp_path / "state")
    secrets.ensure()  # a real CA: the TLS context loads it
    paths = {"secret": tmp_path / "secret", "password": tmp_path / "password"}
    paths["secret"].write_text("s" * 40)
    paths["password"].write_text("cql-pa55\n")
    paths["ca.crt"] = secrets.ca_cert
    return paths


def _env(files: dict[str, Path], **overrides: str) -> dict[str, str]:
    login = {
        "IMGW_CASSANDRA_USERNAME": "gateway",
        "IMGW_CASSANDRA_PASSWORD_FILE": str(files["password"]),
        "IMGW_CASSANDRA_CA_FILE": str(files["ca.crt"]),
    }
    return gateway_env(files["secret"], **{**login, **overrides})


def test_the_driver_gets_a_password_login_and_a_verifying_tls_context(
    files: dict[str, Path],
) -> None:
    config = load("gateway", _env(files))
    auth = CassandraAuth.of(config)
    assert auth.username == "gateway"
    assert "cql-pa55" not in repr(auth)
    kwargs = auth.cluster_kwargs()
    provider = kwargs["auth_provider"]
    assert (provider.username, provider.password) == ("gateway", "cql-pa55")
    context = kwargs["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert CassandraStore.of_config(config)._auth == auth


def test_wrong_login_settings_are_refused_by_name(files: dict[str, Path]) -> None:
    problems = problems_of("gateway", _env(files, IMGW_CASSANDRA_PASSWORD_FILE=""))
    assert "required" in problems["IMGW_CASSANDRA_PASSWORD_FILE"]
    problems = problems_of("migrate", _env(files, IMGW_CASSANDRA_USERNAME=""))
    assert "required" in problems["IMGW_CASSANDRA_USERNAME"]
    missing = str(files["ca.crt"].with_name("nope.crt"))
    problems = problems_of("dispatcher", _env(files, IMGW_CASSANDRA_CA_FILE=missing))
    assert "not a readable file" in problems["IMGW_CASSANDRA_CA_FILE"]


def test_no_login_means_no_auth_provider_and_no_tls(files: dict[str, Path]) -> None:
    config = load("gateway", gateway_env(files["secret"]))
    assert CassandraAuth.of(config).cluster_kwargs() == {}
