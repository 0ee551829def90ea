"""The spec's token settings: a JWKS comes with an issuer and an audience (bad input, exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opsctl.errors import ExitCode, InvalidInputFile
from opsctl.spec import load_spec_file
from tests.support import OpsctlRunner, SpecWriter, shipped_spec

pytestmark = pytest.mark.unit

IDP = "https://login.im.example/.well-known/jwks.json"
GOOD = {"jwksUrl": IDP, "issuer": "https://login.im.example", "audience": "im-gateway"}


def with_auth(auth: dict[str, Any]) -> dict[str, Any]:
    spec = shipped_spec("prod")
    spec["auth"] = auth
    return spec


def problems_of(path: Path) -> list[str]:
    with pytest.raises(InvalidInputFile) as caught:
        load_spec_file(path)
    assert caught.value.exit_code == ExitCode.BAD_INPUT
    return [f"{p.path}: {p.message}" for p in caught.value.problems]


def test_a_jwks_with_issuer_and_audience_loads(write_spec: SpecWriter) -> None:
    auth = load_spec_file(write_spec(with_auth(GOOD))).auth
    assert auth is not None
    assert (auth.jwks_url, auth.issuer, auth.audience) == (
        IDP,
        "https://login.im.example",
        "im-gateway",
    )
    secret = {"jwksSecretRef": "im-gateway-jwks", "issuer": "i", "audience": "a"}
    auth = load_spec_file(write_spec(with_auth(secret))).auth
    assert auth is not None
    assert auth.jwks_secret_ref == "im-gateway-jwks"


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        pytest.param(
            {"jwksUrl": IDP, "audience": "im-gateway"},
            ["auth.issuer: required with a JWKS (the tokens' iss)"],
            id="no issuer",
        ),
        pytest.param(
            {"jwksSecretRef": "im-gateway-jwks", "issuer": "https://login.im.example"},
            ["auth.audience: required with a JWKS (the tokens' aud)"],
            id="no audience",
        ),
        pytest.param(
            {"jwksUrl": IDP},
            [
                "auth.audience: required with a JWKS (the tokens' aud)",
                "auth.issuer: required with a JWKS (the tokens' iss)",
            ],
            id="neither",
        ),
        pytest.param(
            {**GOOD, "jwksSecretRef": "im-gateway-jwks"},
            ["auth.jwksSecretRef: set jwksUrl or jwksSecretRef, not both"],
            id="two key sources",
        ),
        pytest.param(
            {"issuer": "i", "audience": "a"},
            ["auth: set jwksUrl or jwksSecretRef: the gateways need the IdP's keys"],
            id="no key source",
        ),
    ],
)
def test_a_jwks_without_issuer_or_audience_is_refused(
    write_spec: SpecWriter, auth: dict[str, Any], expected: list[str]
) -> None:
    assert sorted(problems_of(write_spec(with_auth(auth)))) == expected


@pytest.mark.parametrize(
    ("auth", "field", "words"),
    [
        ({**GOOD, "jwksUrl": "http://login.im.example/jwks"}, "auth.jwksUrl", "should match"),
        ({**GOOD, "issuer": ""}, "auth.issuer", "at least 1 character"),
        ({**GOOD, "audiences": ["x"]}, "auth.audiences", "unknown field"),
    ],
)
def test_bad_values_name_the_field(
    write_spec: SpecWriter, auth: dict[str, Any], field: str, words: str
) -> None:
    problems = problems_of(write_spec(with_auth(auth)))
    assert any(p.startswith(f"{field}: ") and words in p for p in problems), problems


def test_cli_exits_2_naming_the_field(
    write_spec: SpecWriter, infra_dir: Path, opsctl: OpsctlRunner
) -> None:
    write_spec(with_auth({"jwksUrl": IDP, "audience": "im-gateway"}))
    result = opsctl("--infra-dir", str(infra_dir), "spec", "validate", "--stack", "candidate")
    assert result.exit_code == 2  # ExitCode.BAD_INPUT
    assert "auth.issuer" in result.stderr
    assert "required with a JWKS" in result.stderr
