"""The local stack runs with prod's security (issue 14): Redis is TLS only and knows only its
ACL users, each with least privilege; no secret value shows in opsctl's output (also with -v)
or in any log the stack writes. Against the real session stack."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis import exceptions

from opsctl.local import LocalStack
from opsctl.local._config import HOST
from tests.support import OpsctlRunner

pytestmark = pytest.mark.integration

TIMEOUTS = {"socket_timeout": 5, "socket_connect_timeout": 5}


def _tls(stack: LocalStack, **login: Any) -> redis.Redis:
    """A TLS client of the stack's Redis that trusts the local CA, logged in as ``login``."""
    ca = str(stack.layout.secrets.ca_cert)
    return redis.Redis(
        host=HOST,
        port=stack.config.ports.redis,
        ssl=True,
        ssl_ca_certs=ca,
        ssl_cert_reqs="required",
        **TIMEOUTS,
        **login,
    )


def _as(stack: LocalStack, user: str) -> redis.Redis:
    kwargs = stack.redis_kwargs(user)
    return _tls(stack, username=kwargs["username"], password=kwargs["password"])


def test_redis_refuses_plaintext(local_stack: LocalStack) -> None:
    plain = redis.Redis(host=HOST, port=local_stack.config.ports.redis, **TIMEOUTS)
    with pytest.raises((exceptions.ConnectionError, exceptions.TimeoutError)):
        plain.ping()
    # Even with a valid login: the listener speaks only TLS.
    login = local_stack.redis_kwargs("gateway")
    plain = redis.Redis(
        host=HOST,
        port=local_stack.config.ports.redis,
        username=login["username"],
        password=login["password"],
        **TIMEOUTS,
    )
    with pytest.raises((exceptions.ConnectionError, exceptions.TimeoutError)):
        plain.ping()


def test_redis_refuses_a_client_without_credentials(local_stack: LocalStack) -> None:
    with pytest.raises(exceptions.AuthenticationError):
        _tls(local_stack).ping()
    # The default user is off: a password alone (AUTH <password>) opens nothing.
    login = local_stack.redis_kwargs("admin")
    with pytest.raises(exceptions.AuthenticationError):
        _tls(local_stack, password=login["password"]).ping()


def test_redis_refuses_wrong_credentials(local_stack: LocalStack) -> None:
    with pytest.raises(exceptions.AuthenticationError, match="invalid username-password pair"):
        _tls(local_stack, username="gateway", password="not-the-password").ping()
    # One identity's password is not another's.
    other = local_stack.redis_kwargs("exporter")["password"]
    with pytest.raises(exceptions.AuthenticationError, match="invalid username-password pair"):
        _tls(local_stack, username="gateway", password=other).ping()
    with pytest.raises(exceptions.AuthenticationError, match="invalid username-password pair"):
        _tls(local_stack, username="nobody", password=other).ping()


def test_redis_is_verified_against_the_local_ca(local_stack: LocalStack) -> None:
    # The system's CAs do not know the local CA: the server's certificate is refused.
    login = local_stack.redis_kwargs("gateway")
    untrusting = redis.Redis(
        host=HOST,
        port=local_stack.config.ports.redis,
        ssl=True,
        ssl_cert_reqs="required",
        username=login["username"],
        password=login["password"],
        **TIMEOUTS,
    )
    with pytest.raises(exceptions.ConnectionError, match="certificate verify failed"):
        untrusting.ping()


@pytest.mark.parametrize("user", ["gateway", "dispatcher"])
def test_the_im_identities_reach_only_the_im_keys_and_no_admin_command(
    local_stack: LocalStack, user: str
) -> None:
    client = _as(local_stack, user)
    client.set(f"im:acl-test:{user}", "ok", ex=30)
    assert client.get(f"im:acl-test:{user}") == b"ok"
    client.spublish("im:gw:acl-test", "hello")
    forbidden = [
        lambda: client.set("other:key", "x"),
        lambda: client.publish("other-channel", "x"),
        client.flushall,
        lambda: client.config_get("*"),
        lambda: client.keys("im:*"),
        client.acl_list,
        lambda: client.execute_command("SCRIPT", "FLUSH"),
    ]
    for call in forbidden:
        with pytest.raises(exceptions.NoPermissionError):
            call()


def test_the_exporter_reads_info_and_no_key(local_stack: LocalStack) -> None:
    exporter = _as(local_stack, "exporter")
    assert exporter.ping()
    assert "role" in exporter.info("replication")
    for call in (
        lambda: exporter.get("im:presence"),
        lambda: exporter.set("im:x", "1"),
        lambda: exporter.config_get("masterauth"),
    ):
        with pytest.raises(exceptions.NoPermissionError):
            call()


# ---- Cassandra: password authentication, client TLS, roles -------------------------------------


def _cql(stack: LocalStack, **kwargs: Any) -> Any:
    """A session of the stack's Cassandra with these driver arguments (or the error)."""
    from cassandra.cluster import Cluster

    info = stack.info
    cluster = Cluster(
        [info.cassandra_host],
        port=info.cassandra_port,
        protocol_version=5,
        connect_timeout=10,
        control_connection_timeout=10,
        **kwargs,
    )
    try:
        return cluster.connect()
    except BaseException:
        cluster.shutdown()
        raise


def _refused(stack: LocalStack, **kwargs: Any) -> str:
    from cassandra.cluster import NoHostAvailable

    with pytest.raises(NoHostAvailable) as caught:
        _cql(stack, **kwargs)
    return " ".join(str(error) for error in caught.value.errors.values())


def test_cassandra_refuses_plaintext(local_stack: LocalStack) -> None:
    from cassandra.auth import PlainTextAuthProvider

    login = local_stack.cassandra_kwargs("gateway")
    provider = login["auth_provider"]
    # A valid login over plaintext: the client port speaks only TLS.
    _refused(local_stack, auth_provider=PlainTextAuthProvider(provider.username, provider.password))


def test_cassandra_refuses_no_and_wrong_credentials(local_stack: LocalStack) -> None:
    from cassandra.auth import PlainTextAuthProvider

    tls = local_stack.cassandra_kwargs("gateway")["ssl_context"]
    assert "authentication" in _refused(local_stack, ssl_context=tls).lower()
    other = local_stack.layout.secrets.cassandra_password("dispatcher")
    for username, password in [
        ("gateway", "not-the-password"),
        ("gateway", other),  # one role's password is not another's
        ("cassandra", "cassandra"),  # the default superuser is gone
        ("nobody", other),
    ]:
        provider = PlainTextAuthProvider(username, password)
        reason = _refused(local_stack, ssl_context=tls, auth_provider=provider)
        assert "bad credentials" in reason.lower() or "authentication" in reason.lower()


def test_the_app_roles_read_and_write_the_im_keyspaces_and_nothing_more(
    local_stack: LocalStack,
) -> None:
    from cassandra import Unauthorized

    keyspace = local_stack.info.cassandra_keyspace
    for role in ("gateway", "dispatcher"):
        session = _cql(local_stack, **local_stack.cassandra_kwargs(role))
        try:
            session.execute(f"SELECT conversation_id FROM {keyspace}.messages LIMIT 1")
            session.execute("SELECT shard FROM im_control.shard_map LIMIT 1")
            for statement in (
                # (TRUNCATE is MODIFY in Cassandra: the app roles hold it.)
                f"DROP TABLE {keyspace}.messages",
                f"ALTER TABLE {keyspace}.messages WITH comment = 'x'",
                "CREATE KEYSPACE intruder WITH replication = "
                "{'class': 'SimpleStrategy', 'replication_factor': 1}",
                "SELECT role, salted_hash FROM system_auth.roles",
                "CREATE ROLE intruder WITH LOGIN = true AND PASSWORD = 'x'",
            ):
                with pytest.raises(Unauthorized):
                    session.execute(statement)
        finally:
            session.cluster.shutdown()


# ---- no secret value anywhere it could be read -------------------------------------------------


def _secret_values(stack: LocalStack) -> list[str]:
    values = stack.layout.secrets.values()
    values.append(stack.layout.secret.read_text(encoding="utf-8").strip())
    assert all(len(value) >= 16 for value in values)
    return values


def _log_files(stack: LocalStack) -> Iterator[Path]:
    yield from sorted((stack.config.state_dir / "logs").glob("*.log"))


def test_no_secret_value_in_opsctl_output_or_the_stacks_logs(
    local_stack: LocalStack, opsctl: OpsctlRunner
) -> None:
    config = local_stack.config
    state = str(config.state_dir)
    runs = [
        opsctl(
            "-v",
            "local",
            "up",
            "--state-dir",
            state,
            "--base-port",
            str(config.ports.redis),
            "--gateways",
            str(config.gateways),
        ),
        opsctl(
            "-v",
            "local",
            "up",
            "-o",
            "json",
            "--state-dir",
            state,
            "--base-port",
            str(config.ports.redis),
            "--gateways",
            str(config.gateways),
        ),
        opsctl("-v", "local", "status", "--state-dir", state),
        opsctl("-v", "local", "status", "--state-dir", state, "--output", "json"),
        *(
            opsctl("-v", "local", "logs", name, "--lines", "200", "--state-dir", state)
            for name in local_stack.names()
        ),
    ]
    assert [run.exit_code for run in runs] == [0] * len(runs), [r.stderr for r in runs]
    # The JSON names where the stack is, never what its secrets are.
    info = json.loads(runs[1].stdout)
    assert info["redis_url"].startswith("rediss://")
    secrets = _secret_values(local_stack)
    logs = list(_log_files(local_stack))
    assert logs, "the stack wrote no logs"
    for secret in secrets:
        for run in runs:
            assert secret not in run.stdout + run.stderr
        for log in logs:
            assert secret not in log.read_text(encoding="utf-8", errors="replace"), log.name
        # Nor in any process's command line or environment (an env var dump).
        for component in local_stack.components():
            assert secret not in " ".join(component.argv), component.name
            assert secret not in json.dumps(component.env), component.name
        assert secret not in json.dumps(local_stack.imgw_env())
        assert secret not in config.recorded_file().read_text(encoding="utf-8")
