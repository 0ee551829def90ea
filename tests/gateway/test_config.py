"""Config validation: every IMGW_* problem is reported by variable name, and exits 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load

pytestmark = pytest.mark.unit


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text("s" * 40)
    return path


def gateway_env(secret: Path, **overrides: str) -> dict[str, str]:
    env = {
        "IMGW_NODE_ID": "gw-1",
        "IMGW_LISTEN_PORT": "18080",
        "IMGW_KAFKA_BOOTSTRAP": "127.0.0.1:9092,127.0.0.2:9093",
        "IMGW_REDIS_URL": "redis://127.0.0.1:6379/0",
        "IMGW_CASSANDRA_HOSTS": "127.0.0.1:9042",
        "IMGW_JWT_HS256_SECRET_FILE": str(secret),
        "PATH": "/usr/bin",  # non-IMGW variables are ignored
    }
    env.update(overrides)
    return env


def problems_of(role: str, env: dict[str, str]) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        load(role, env)  # type: ignore[arg-type]
    return dict(caught.value.problems)


def test_valid_gateway_config_gets_defaults(secret: Path) -> None:
    config = load("gateway", gateway_env(secret))
    assert config.node_id == "gw-1"
    assert config.listen_port == 18080
    assert config.kafka_topic == "im.messages"
    assert config.cassandra_keyspace == "im"
    assert config.drain_window_s == 10.0
    assert config.host_ports("kafka_bootstrap") == [("127.0.0.1", 9092), ("127.0.0.2", 9093)]


def test_numbers_and_floats_parse_from_strings(secret: Path) -> None:
    config = load(
        "gateway",
        gateway_env(
            secret, IMGW_DRAIN_WINDOW_S="2.5", IMGW_MAX_CONNECTIONS="7", IMGW_RATE_LIMIT_PER_S="3"
        ),
    )
    assert (config.drain_window_s, config.max_connections, config.rate_limit_per_s) == (2.5, 7, 3)


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("IMGW_LISTEN_PORT", "http", "integer"),
        ("IMGW_LISTEN_PORT", "70000", "less than or equal"),
        ("IMGW_KAFKA_BOOTSTRAP", "localhost", "host:port"),
        ("IMGW_CASSANDRA_HOSTS", "a:1,b", "host:port"),
        ("IMGW_REDIS_URL", "http://127.0.0.1", "redis://"),
        ("IMGW_NODE_ID", "gw 1", "pattern"),
        ("IMGW_CASSANDRA_KEYSPACE", "Bad-Name", "pattern"),
        ("IMGW_DRAIN_WINDOW_S", "-1", "greater than or equal"),
        ("IMGW_MAX_FRAME_BYTES", "10", "greater than or equal"),
        ("IMGW_JWT_HS256_SECRET_FILE", "/nonexistent/secret", "not a readable file"),
        ("IMGW_LOG_LEVEL", "LOUD", "DEBUG"),
        ("IMGW_TYPO_VARIABLE", "1", "unknown variable"),
    ],
)
def test_bad_values_are_named(secret: Path, variable: str, value: str, fragment: str) -> None:
    problems = problems_of("gateway", gateway_env(secret, **{variable: value}))
    assert variable in problems
    assert fragment in problems[variable]


def test_every_problem_is_reported_at_once(secret: Path) -> None:
    env = gateway_env(secret, IMGW_LISTEN_PORT="x", IMGW_REDIS_URL="nope")
    problems = problems_of("gateway", env)
    assert {"IMGW_LISTEN_PORT", "IMGW_REDIS_URL"} <= set(problems)


def test_required_variables_depend_on_role(secret: Path) -> None:
    problems = problems_of("gateway", {})
    assert set(problems) >= {
        "IMGW_NODE_ID",
        "IMGW_LISTEN_PORT",
        "IMGW_KAFKA_BOOTSTRAP",
        "IMGW_REDIS_URL",
        "IMGW_CASSANDRA_HOSTS",
        "IMGW_JWT_HS256_SECRET_FILE",
    }
    migrate = problems_of("migrate", {})
    assert set(migrate) == {"IMGW_KAFKA_BOOTSTRAP", "IMGW_CASSANDRA_HOSTS"}
    config = load("migrate", {"IMGW_KAFKA_BOOTSTRAP": "h:1", "IMGW_CASSANDRA_HOSTS": "h:2"})
    assert config.kafka_partitions == 6


def test_idle_timeout_must_exceed_heartbeat(secret: Path) -> None:
    env = gateway_env(secret, IMGW_HEARTBEAT_INTERVAL_S="30", IMGW_IDLE_TIMEOUT_S="20")
    assert "IMGW_IDLE_TIMEOUT_S" in problems_of("gateway", env)


@pytest.mark.parametrize("module", ["gateway.server", "gateway.dispatcher", "gateway.migrate"])
def test_entry_points_exit_2_naming_the_variable(module: str, tmp_path: Path) -> None:
    env = {
        "IMGW_LISTEN_PORT": "not-a-port",
        "IMGW_KAFKA_BOOTSTRAP": "h:1",
        "IMGW_CASSANDRA_HOSTS": "h:2",
        "PATH": "/usr/bin",
    }
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", module],
        env=env,
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "IMGW_LISTEN_PORT" in done.stderr


def test_kafka_login_needs_its_password_file_and_tls(secret: Path, tmp_path: Path) -> None:
    password = tmp_path / "kafka.password"
    password.write_text("s3cret-kafka\n")
    problems = problems_of("gateway", gateway_env(secret, IMGW_KAFKA_USERNAME="gateway"))
    assert problems["IMGW_KAFKA_PASSWORD_FILE"] == "required with IMGW_KAFKA_USERNAME"
    assert "SCRAM over TLS only" in problems["IMGW_KAFKA_CA_FILE"]
    problems = problems_of("gateway", gateway_env(secret, IMGW_KAFKA_PASSWORD_FILE=str(password)))
    assert problems["IMGW_KAFKA_USERNAME"] == "required with IMGW_KAFKA_PASSWORD_FILE"
    missing = str(tmp_path / "absent.crt")
    problems = problems_of("gateway", gateway_env(secret, IMGW_KAFKA_CA_FILE=missing))
    assert "is not a readable file" in problems["IMGW_KAFKA_CA_FILE"]


def test_kafka_kwargs_are_plaintext_tls_or_scram_over_tls(secret: Path, tmp_path: Path) -> None:
    from opsctl.local._secrets import LocalSecrets

    local = LocalSecrets(tmp_path / "secrets")
    local.ensure()
    password = tmp_path / "kafka.password"
    password.write_text("s3cret-kafka\n")
    plain = load("gateway", gateway_env(secret)).kafka_kwargs()
    assert plain == {"bootstrap_servers": "127.0.0.1:9092,127.0.0.2:9093"}
    env = gateway_env(
        secret,
        IMGW_KAFKA_USERNAME="gateway",
        IMGW_KAFKA_PASSWORD_FILE=str(password),
        IMGW_KAFKA_CA_FILE=str(local.ca_cert),
    )
    loaded = load("gateway", env)
    kwargs = loaded.kafka_kwargs()
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "gateway"
    assert kwargs["sasl_plain_password"] == "s3cret-kafka"
    assert kwargs["ssl_context"].check_hostname
    assert "s3cret-kafka" not in repr(loaded)
