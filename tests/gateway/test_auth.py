"""Token checking: HS256 (secret) and RS256 (JWKS), claims, leeway and refusal reasons.

Unit tests of the verifier first; then, against the real local stack, the gateways' refusals of
a wrong or missing ``iss``/``aud``, and a JWKS rotation served by a small HTTP server in the
test to a gateway started with IMGW_JWT_JWKS_URL (the key cache's logic: test_jwks_unit.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.auth import AuthError, TokenVerifier
from loadtests.session import TokenSigner
from opsctl.paths import REPO_ROOT
from tests.gateway.conftest import Im
from tests.gateway.support import extra_gateway
from tests.support import wait_for

unit = pytest.mark.unit
integration = pytest.mark.integration

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


@unit
def test_valid_hs256_token_gives_the_subject(verifier: TokenVerifier) -> None:
    identity = verifier.verify(hs256())
    assert identity.user_id == "alice"
    assert identity.expires_at > time.time()


# Times are offsets from when the test runs: values taken at collection go stale when the
# test runs minutes later (seen in CI: nbf in the past by then, so the token was valid).
NOW_RELATIVE = ("exp", "nbf")


@unit
@pytest.mark.parametrize(
    ("token_claims", "expected"),
    [
        ({"exp": -60}, "expired"),
        ({"nbf": 120}, "not_yet_valid"),
        ({"iss": "someone-else"}, "bad_issuer"),
        ({"aud": "another-service"}, "bad_audience"),
        ({"iss": None}, "bad_issuer"),  # a missing claim is as wrong as a wrong one
        ({"aud": None}, "bad_audience"),
        ({"sub": "has:colon"}, "bad_subject"),
        ({"sub": None}, "malformed"),
        ({"exp": None}, "malformed"),
    ],
)
def test_refusals_have_a_reason(
    verifier: TokenVerifier, token_claims: dict[str, Any], expected: str
) -> None:
    now = int(time.time())
    timed = {
        key: now + value if key in NOW_RELATIVE and value is not None else value
        for key, value in token_claims.items()
    }
    assert reason(verifier, hs256(**timed)) == expected


@unit
def test_leeway_accepts_small_clock_skew(verifier: TokenVerifier) -> None:
    assert verifier.verify(hs256(exp=int(time.time()) - 2)).user_id == "alice"
    assert verifier.verify(hs256(nbf=int(time.time()) + 2)).user_id == "alice"


@unit
def test_missing_garbage_and_wrong_secret(verifier: TokenVerifier) -> None:
    assert reason(verifier, None) == "missing"
    assert reason(verifier, "") == "missing"
    assert reason(verifier, "not.a.jwt") == "malformed"
    forged = jwt.encode(claims(), b"another-secret-another-secret-another", algorithm="HS256")
    assert reason(verifier, forged) == "bad_signature"


@unit
def test_unaccepted_algorithms(verifier: TokenVerifier, rsa_keys: tuple[Any, Any]) -> None:
    private, _ = rsa_keys
    rs = jwt.encode(claims(), private, algorithm="RS256")
    assert reason(verifier, rs) == "bad_algorithm"  # no JWKS configured
    none_alg = jwt.encode(claims(), None, algorithm="none")  # type: ignore[arg-type]
    assert reason(verifier, none_alg) == "bad_algorithm"


@unit
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


@unit
def test_issuer_and_audience_optional() -> None:
    lax = TokenVerifier(hs256_secret=SECRET)
    assert lax.verify(hs256(iss=None, aud=None)).user_id == "alice"
    assert lax.verify(hs256()).user_id == "alice"  # present claims are not checked


@unit
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
    with pytest.raises(ValueError, match="needs an issuer and an audience"):
        TokenVerifier.from_files(
            hs256_secret_file=None, jwks_file=jwks, issuer=ISS, audience="", leeway_s=0
        )
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        TokenVerifier.from_files(
            hs256_secret_file=None, jwks_file=bad, issuer="", audience="", leeway_s=0
        )


@unit
def test_the_load_tests_tokens_pass_the_gateways_checks(
    verifier: TokenVerifier, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    assert verifier.verify(TokenSigner(secret, ISS, AUD)("lt-1")).user_id == "lt-1"
    assert reason(verifier, TokenSigner(secret, ISS, None)("lt-1")) == "bad_audience"
    assert reason(verifier, TokenSigner(secret, None, AUD)("lt-1")) == "bad_issuer"


# --- against the real local stack -------------------------------------------------------------

REFUSED = 'im_gateway_auth_failures_total{{reason="{}"}}'
FETCH_FAILED = 'im_gateway_jwks_refreshes_total{outcome="failed"}'


async def _hello(ws_url: str, token: str) -> tuple[dict[str, Any], int | None]:
    """Open a session with ``token`` in the hello; the first frame and, unless it is a
    welcome, the close code."""
    async with connect(ws_url, open_timeout=10) as ws:
        await ws.send(json.dumps({"op": "hello", "device_id": "auth-test", "token": token}))
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame.get("op") == "welcome":
            return frame, None
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        return frame, ws.close_code


def refusal(ws_url: str, token: str) -> str | None:
    """The refusal reason of a session opened with ``token``; None when it was welcomed."""
    frame, close_code = asyncio.run(_hello(ws_url, token))
    if frame.get("op") == "welcome":
        return None
    assert (frame.get("op"), frame.get("code"), close_code) == ("error", "unauthorized", 4001)
    return str(frame["message"])


@integration
def test_local_gateways_refuse_a_wrong_or_missing_issuer_or_audience(im: Im) -> None:
    info = im.stack.info
    ws_url, http_url = info.gateway_ws_urls[0], info.gateway_http_urls[0]
    before = im.metrics(http_url)
    user = im.uid("auth")
    assert refusal(ws_url, im.token(user)) is None  # the stack's own tokens carry iss and aud
    cases: list[tuple[dict[str, Any], str]] = [
        ({"iss": "https://someone-else.example"}, "bad_issuer"),
        ({"aud": "another-service"}, "bad_audience"),
        ({"aud": ["another-service", "a-third-one"]}, "bad_audience"),
    ]
    for extra, reason in cases:
        assert refusal(ws_url, im.token(user, **extra)) == reason, extra
    secret = info.jwt_secret_file.read_text().strip()
    now = int(time.time())
    full = {"sub": user, "iss": info.jwt_issuer, "aud": info.jwt_audience, "exp": now + 600}
    for missing, reason in (("iss", "bad_issuer"), ("aud", "bad_audience")):
        token = jwt.encode({k: v for k, v in full.items() if k != missing}, secret, "HS256")
        assert refusal(ws_url, token) == reason, missing
    after = im.metrics(http_url)
    assert after[REFUSED.format("bad_issuer")] - before[REFUSED.format("bad_issuer")] == 2
    assert after[REFUSED.format("bad_audience")] - before[REFUSED.format("bad_audience")] == 3


class JwksServer:
    """A tiny IdP key endpoint: GET /jwks.json serves the current keys (or HTTP 500 while
    ``failing``), counting requests."""

    def __init__(self) -> None:
        self.private = {
            kid: rsa.generate_private_key(public_exponent=65537, key_size=2048)
            for kid in ("old", "new", "next")
        }
        self.kids = ["old"]
        self.failing = False
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests += 1
                if outer.failing or self.path != "/jwks.json":
                    self.send_error(500 if outer.failing else 404)
                    return
                body = json.dumps(outer.document()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def document(self) -> dict[str, Any]:
        keys = []
        for kid in list(self.kids):
            entry = json.loads(RSAAlgorithm.to_jwk(self.private[kid].public_key()))
            entry.update({"kid": kid, "alg": "RS256", "use": "sig"})
            keys.append(entry)
        return {"keys": keys}

    def token(self, kid: str, info: Any, user: str, **extra: Any) -> str:
        now = int(time.time())
        claims = {
            "sub": user,
            "iss": info.jwt_issuer,
            "aud": info.jwt_audience,
            "iat": now,
            "exp": now + 600,
            **extra,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode(claims, self.private[kid], algorithm="RS256", headers={"kid": kid})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


REFRESH_S = 2.0  # the test gateway's periodic JWKS refresh (production default: 300 s)


def jwks_gateway(
    im: Im, jwks_url: str, tmp_path: Path
) -> contextlib.AbstractContextManager[tuple[str, str]]:
    """A gateway of the running stack that takes its keys from ``jwks_url``."""
    settings = {
        "IMGW_JWT_JWKS_URL": jwks_url,
        "IMGW_JWT_JWKS_REFRESH_S": str(REFRESH_S),
        "IMGW_JWT_JWKS_MIN_REFRESH_S": "1",
    }
    return extra_gateway(im.stack, im.uid("gw-jwks"), settings, tmp_path)


@integration
def test_a_jwks_rotation_is_picked_up_without_a_restart(im: Im, tmp_path: Path) -> None:
    info = im.stack.info
    user = im.uid("rot")
    idp = JwksServer()
    try:
        with jwks_gateway(im, idp.url, tmp_path) as (ws_url, http_url):

            def token(kid: str, **extra: Any) -> str:
                return idp.token(kid, info, user, **extra)

            assert refusal(ws_url, token("old")) is None
            # A JWKS gateway checks iss and aud too (required with a JWKS).
            assert refusal(ws_url, token("old", aud="another-service")) == "bad_audience"
            assert refusal(ws_url, token("old", aud=None)) == "bad_audience"
            assert refusal(ws_url, token("old", iss="https://evil.example")) == "bad_issuer"

            # Rotation, step 1: the IdP publishes "new" and signs with it at once. The first
            # token naming the unknown kid makes the gateway fetch on demand.
            idp.kids = ["old", "new"]
            assert refusal(ws_url, token("new")) is None
            assert refusal(ws_url, token("old")) is None  # overlap: the old kid still works

            # Step 2: "old" leaves the document; the next periodic refresh drops it.
            idp.kids = ["new"]
            wait_for(
                "the removed kid refused",
                lambda: refusal(ws_url, token("old")) == "unknown_key",
                timeout=REFRESH_S * 5,
                interval=0.25,
            )
            assert refusal(ws_url, token("new")) is None

            # The endpoint fails: counted, and the last good keys keep working.
            failed = im.metrics(http_url)[FETCH_FAILED]
            idp.failing = True
            wait_for(
                "a failed JWKS refresh counted",
                lambda: im.metrics(http_url)[FETCH_FAILED] > failed,
                timeout=REFRESH_S * 5,
                interval=0.25,
            )
            assert refusal(ws_url, token("new")) is None
            assert refusal(ws_url, token("next")) == "unknown_key"  # not published yet

            # The endpoint is back with "next": picked up without a restart.
            idp.kids, idp.failing = ["new", "next"], False
            wait_for(
                "the next key accepted",
                lambda: refusal(ws_url, token("next")) is None,
                timeout=REFRESH_S * 5,
                interval=0.25,
            )
            assert refusal(ws_url, token("new")) is None
            assert im.metrics(http_url)[REFUSED.format("unknown_key")] >= 2
    finally:
        idp.close()


@integration
def test_garbage_kids_do_not_hammer_the_idp(im: Im, tmp_path: Path) -> None:
    info = im.stack.info
    idp = JwksServer()
    try:
        with jwks_gateway(im, idp.url, tmp_path) as (ws_url, _):
            user = im.uid("garbage")
            start = time.monotonic()
            before = idp.requests
            for i in range(20):
                forged = jwt.encode(
                    {"sub": user, "iss": info.jwt_issuer, "aud": info.jwt_audience},
                    idp.private["next"],
                    algorithm="RS256",
                    headers={"kid": f"garbage-{i}"},
                )
                assert refusal(ws_url, forged) == "unknown_key"
            elapsed = time.monotonic() - start
            # At most one on-demand fetch per IMGW_JWT_JWKS_MIN_REFRESH_S (1 s) plus the
            # periodic ones (every REFRESH_S, +10 %), whatever the kids.
            allowed = (int(elapsed) + 1) + (int(elapsed / (REFRESH_S * 0.9)) + 1)
            assert idp.requests - before <= allowed, (idp.requests - before, elapsed)
    finally:
        idp.close()


@unit
def test_a_gateway_with_a_jwks_but_no_issuer_or_audience_exits_2(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text("{}")
    env = {
        "IMGW_NODE_ID": "gw-1",
        "IMGW_LISTEN_PORT": "8080",
        "IMGW_KAFKA_BOOTSTRAP": "h:1",
        "IMGW_REDIS_URL": "redis://h:2/0",
        "IMGW_CASSANDRA_HOSTS": "h:3",
        "IMGW_JWT_JWKS_FILE": str(jwks),
        "IMGW_JWT_AUDIENCE": "im-gateway",
        "PATH": "/usr/bin",
    }
    done = subprocess.run(
        [sys.executable, "-m", "gateway.server"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "IMGW_JWT_ISSUER: required when a JWKS is set" in done.stderr
