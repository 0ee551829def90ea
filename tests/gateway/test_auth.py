"""Token checking: HS256 (secret) and RS256 (JWKS), claims, leeway and refusal reasons."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from gateway.auth import AuthError, TokenVerifier

pytestmark = pytest.mark.unit

SECRET = b"0123456789abcdef0123456789abcdef"
ISS, AUD = "im-test", "im-gateway"


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "alice", "iss": ISS, "aud": AUD, "iat": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(**overrides: Any) -> str:
    return jwt.encode(claims(**overrides), SECRET, algorithm="HS256")


@pytest.fixture
def verifier() -> TokenVerifier:
    return TokenVerifier(hs256_secret=SECRET, issuer=ISS, audience=AUD, leeway_s=5)


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[Any, dict[str, Any]]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    public_jwk.update({"kid": "k1", "alg": "RS256", "use": "sig"})
    return private, {"keys": [public_jwk]}


def reason(verifier: TokenVerifier, token: str | None) -> str:
    with pytest.raises(AuthError) as caught:
        verifier.verify(token)
    return caught.value.reason


def test_valid_hs256_token_gives_the_subject(verifier: TokenVerifier) -> None:
    identity = verifier.verify(hs256())
    assert identity.user_id == "alice"
    assert identity.expires_at > time.time()


@pytest.mark.parametrize(
    ("token_claims", "expected"),
    [
        ({"exp": int(time.time()) - 60}, "expired"),
        ({"nbf": int(time.time()) + 120}, "not_yet_valid"),
        ({"iss": "someone-else"}, "bad_issuer"),
        ({"aud": "another-service"}, "bad_audience"),
        ({"sub": "has:colon"}, "bad_subject"),
        ({"sub": None}, "malformed"),
        ({"exp": None}, "malformed"),
    ],
)
def test_refusals_have_a_reason(
    verifier: TokenVerifier, token_claims: dict[str, Any], expected: str
) -> None:
    assert reason(verifier, hs256(**token_claims)) == expected


def test_leeway_accepts_small_clock_skew(verifier: TokenVerifier) -> None:
    assert verifier.verify(hs256(exp=int(time.time()) - 2)).user_id == "alice"
    assert verifier.verify(hs256(nbf=int(time.time()) + 2)).user_id == "alice"


def test_missing_garbage_and_wrong_secret(verifier: TokenVerifier) -> None:
    assert reason(verifier, None) == "missing"
    assert reason(verifier, "") == "missing"
    assert reason(verifier, "not.a.jwt") == "malformed"
    forged = jwt.encode(claims(), b"another-secret-another-secret-another", algorithm="HS256")
    assert reason(verifier, forged) == "bad_signature"


def test_unaccepted_algorithms(verifier: TokenVerifier, rsa_keys: tuple[Any, Any]) -> None:
    private, _ = rsa_keys
    rs = jwt.encode(claims(), private, algorithm="RS256")
    assert reason(verifier, rs) == "bad_algorithm"  # no JWKS configured
    none_alg = jwt.encode(claims(), None, algorithm="none")
    assert reason(verifier, none_alg) == "bad_algorithm"


def test_rs256_with_jwks(rsa_keys: tuple[Any, dict[str, Any]]) -> None:
    private, jwks = rsa_keys
    verifier = TokenVerifier(jwks=jwks, issuer=ISS, audience=AUD)
    token = jwt.encode(claims(sub="bob"), private, algorithm="RS256", headers={"kid": "k1"})
    assert verifier.verify(token).user_id == "bob"
    unknown = jwt.encode(claims(), private, algorithm="RS256", headers={"kid": "k9"})
    assert reason(verifier, unknown) == "unknown_key"
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode(claims(), other, algorithm="RS256", headers={"kid": "k1"})
    assert reason(verifier, forged) == "bad_signature"
    # An HS256 token must not be checked against the RSA public key (algorithm confusion).
    assert reason(verifier, hs256()) == "bad_algorithm"


def test_issuer_and_audience_optional() -> None:
    lax = TokenVerifier(hs256_secret=SECRET)
    assert lax.verify(hs256(iss=None, aud=None)).user_id == "alice"
    assert lax.verify(hs256()).user_id == "alice"  # present claims are not checked


def test_from_files(tmp_path: Path, rsa_keys: tuple[Any, dict[str, Any]]) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET + b"\n")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps(rsa_keys[1]))
    both = TokenVerifier.from_files(
        hs256_secret_file=secret, jwks_file=jwks, issuer=ISS, audience=AUD, leeway_s=0
    )
    assert both.verify(hs256()).user_id == "alice"
    short = tmp_path / "short"
    short.write_text("tiny")
    with pytest.raises(ValueError, match="shorter than 16"):
        TokenVerifier.from_files(
            hs256_secret_file=short, jwks_file=None, issuer="", audience="", leeway_s=0
        )
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        TokenVerifier.from_files(
            hs256_secret_file=None, jwks_file=bad, issuer="", audience="", leeway_s=0
        )
