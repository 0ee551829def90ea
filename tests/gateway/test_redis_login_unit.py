"""The Redis login of the gateway and the dispatcher: an ACL user, its password from a file
(a mounted Secret) and the CA of a rediss:// server; wrong combinations are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load
from gateway.redis_client import RedisAuth
from tests.gateway.test_config import gateway_env, problems_of

pytestmark = pytest.mark.unit


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / name for name in ("secret", "password", "ca.crt")}
    paths["secret"].write_text("s" * 40)
    paths["password"].write_text("pa55-word\n")
    paths["ca.crt"].write_text("-----BEGIN CERTIFICATE-----\n")
    return paths


def _env(files: dict[str, Path], **overrides: str) -> dict[str, str]:
    login = {
        "IMGW_REDIS_URL": "rediss://127.0.0.1:6379/0",
        "IMGW_REDIS_USERNAME": "gateway",
        "IMGW_REDIS_PASSWORD_FILE": str(files["password"]),
        "IMGW_REDIS_CA_FILE": str(files["ca.crt"]),
    }
    return gateway_env(files["secret"], **{**login, **overrides})


def test_the_login_is_read_from_its_files_and_never_shown(files: dict[str, Path]) -> None:
    auth = RedisAuth.of(load("gateway", _env(files)))
    assert auth.username == "gateway"
    assert auth.password == "pa55-word"
    assert "pa55-word" not in repr(auth)
    kwargs = auth.kwargs("rediss://127.0.0.1:6379/0")
    assert kwargs["ssl_ca_certs"] == str(files["ca.crt"])
    assert kwargs["ssl_cert_reqs"] == "required"
    assert kwargs["ssl_check_hostname"] is True
    # No TLS arguments for a plaintext URL (a test's own Redis).
    assert "ssl_ca_certs" not in auth.kwargs("redis://127.0.0.1:6379/0")


def test_wrong_login_settings_are_refused_by_name(files: dict[str, Path]) -> None:
    problems = problems_of("gateway", _env(files, IMGW_REDIS_URL="redis://127.0.0.1:6379/0"))
    assert "rediss://" in problems["IMGW_REDIS_CA_FILE"]
    problems = problems_of("gateway", _env(files, IMGW_REDIS_PASSWORD_FILE=""))
    assert "required" in problems["IMGW_REDIS_PASSWORD_FILE"]
    missing = str(files["password"].with_name("nope"))
    problems = problems_of("dispatcher", _env(files, IMGW_REDIS_PASSWORD_FILE=missing))
    assert "not a readable file" in problems["IMGW_REDIS_PASSWORD_FILE"]
    # The message names the file, never a password.
    assert "pa55-word" not in str(problems)


def test_no_login_is_still_valid(files: dict[str, Path]) -> None:
    config = load("gateway", gateway_env(files["secret"]))
    assert RedisAuth.of(config) == RedisAuth()
