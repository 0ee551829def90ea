"""The JWKS key cache (gateway/jwks.py) and its use by the verifier: rotation, one fetch in
flight, the on-demand rate limit, failures keeping the last good keys; the config checks.

The reader is a fake (a function returning the current document), the clock a counter: only the
logic is under test here; tests/gateway/test_auth.py runs the real thing over HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from gateway.auth import AuthError, TokenVerifier
from gateway.config import ConfigError, load
from gateway.jwks import REFRESH_JITTER, KeyCache, _NoDowngrade, parse_jwks

pytestmark = pytest.mark.unit

ISS, AUD = "https://idp.test", "im-gateway"


@pytest.fixture(scope="module")
def private_keys() -> dict[str, Any]:
    return {
        kid: rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for kid in ("k1", "k2", "k3")
    }


def jwk(private: Any, kid: str, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(private.public_key()))
    entry.update({"kid": kid, "alg": "RS256", "use": "sig", **extra})
    return entry


class Idp:
    """The fake JWKS endpoint: the current document, a read counter, failure injection."""

    def __init__(self, private_keys: dict[str, Any], *kids: str) -> None:
        self.private_keys = private_keys
        self.kids = list(kids)
        self.reads = 0
        self.fail: Exception | None = None
        self.body: bytes | None = None  # overrides the document when set
        self.gate: threading.Event | None = None  # blocks reads until set

    def __call__(self) -> bytes:
        self.reads += 1
        if self.gate is not None:
            assert self.gate.wait(5)
        if self.fail is not None:
            raise self.fail
        if self.body is not None:
            return self.body
        keys = [jwk(self.private_keys[kid], kid) for kid in self.kids]
        return json.dumps({"keys": keys}).encode()

    def token(self, kid: str, **claims: Any) -> str:
        now = int(time.time())
        body = {"sub": "alice", "iss": ISS, "aud": AUD, "exp": now + 600, **claims}
        body = {name: value for name, value in body.items() if value is not None}
        return jwt.encode(body, self.private_keys[kid], algorithm="RS256", headers={"kid": kid})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache(idp: Idp, clock: Clock | None = None, **kwargs: Any) -> tuple[KeyCache, list[str]]:
    outcomes: list[str] = []
    keys = KeyCache(
        idp,
        source="fake",
        min_refresh_s=30,
        on_refresh=outcomes.append,
        clock=clock or Clock(),
        **kwargs,
    )
    keys.load()
    return keys, outcomes


def test_parse_keeps_only_rsa_signing_keys(private_keys: dict[str, Any]) -> None:
    document = {
        "keys": [
            jwk(private_keys["k1"], "k1"),
            jwk(private_keys["k2"], "enc", use="enc"),
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "", "y": ""},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            jwk(private_keys["k3"], "k3"),
        ]
    }
    assert set(parse_jwks(document)) == {"k1", "k3"}
    with pytest.raises(ValueError, match="no RSA signing key"):
        parse_jwks({"keys": [jwk(private_keys["k1"], "x", use="enc")]})
    with pytest.raises(ValueError, match="not valid JSON"):
        parse_jwks(b"{")
    with pytest.raises(ValueError, match="not a JWKS"):
        parse_jwks(b"[]")


def test_rotation_keeps_listed_kids_and_drops_removed_ones(private_keys: dict[str, Any]) -> None:
    idp = Idp(private_keys, "k1")
    keys, outcomes = cache(idp)
    assert list(keys.keys) == ["k1"]

    async def scenario() -> None:
        idp.kids = ["k1", "k2"]  # the IdP publishes k2 ahead of signing with it
        assert await keys.refresh()
        assert set(keys.keys) == {"k1", "k2"}
        assert await keys.refresh()  # nothing changed
        idp.kids = ["k2"]  # k1's tokens have expired: the IdP removes it
        assert await keys.refresh()
        assert list(keys.keys) == ["k2"]

    asyncio.run(scenario())
    assert outcomes == ["updated", "unchanged", "updated"]


@pytest.mark.parametrize(
    "breakage",
    [
        OSError("connection refused"),
        http.client.BadStatusLine("garbage"),
        b"{not json",
        b'{"keys": []}',
        b"x" * (2 << 20),
    ],
    ids=["network", "HTTP protocol", "invalid JSON", "no key", "too large"],
)
def test_a_failed_fetch_keeps_the_last_good_keys(
    private_keys: dict[str, Any], breakage: Exception | bytes
) -> None:
    idp = Idp(private_keys, "k1")
    keys, outcomes = cache(idp)
    before = dict(keys.keys)
    if isinstance(breakage, bytes):
        idp.body = breakage
    else:
        idp.fail = breakage
    assert asyncio.run(keys.refresh()) is False
    assert dict(keys.keys) == before
    assert outcomes == ["failed"]


def test_concurrent_refreshes_share_one_fetch(private_keys: dict[str, Any]) -> None:
    idp = Idp(private_keys, "k1")
    keys, outcomes = cache(idp)
    idp.reads = 0
    idp.kids = ["k1", "k2"]

    async def scenario() -> list[bool]:
        idp.gate = threading.Event()
        waiters = [asyncio.ensure_future(keys.refresh()) for _ in range(20)]
        waiters += [asyncio.ensure_future(keys.refresh_for_kid("k2")) for _ in range(20)]
        await asyncio.sleep(0.05)  # every waiter has joined the fetch blocked in the reader
        idp.gate.set()
        return list(await asyncio.gather(*waiters))

    assert asyncio.run(scenario()) == [True] * 40
    assert idp.reads == 1
    assert outcomes == ["updated"]


def test_a_cancelled_waiter_does_not_cancel_the_shared_fetch(private_keys: dict[str, Any]) -> None:
    idp = Idp(private_keys, "k1")
    keys, _ = cache(idp)
    idp.kids = ["k2"]

    async def scenario() -> bool:
        idp.gate = threading.Event()
        first = asyncio.ensure_future(keys.refresh())  # a client that hangs up mid-hello
        second = asyncio.ensure_future(keys.refresh_for_kid("k2"))
        await asyncio.sleep(0.05)
        first.cancel()
        idp.gate.set()
        return await second

    assert asyncio.run(scenario()) is True
    assert list(keys.keys) == ["k2"]


def test_unknown_kids_fetch_at_most_once_per_min_refresh(private_keys: dict[str, Any]) -> None:
    idp = Idp(private_keys, "k1")
    clock = Clock()
    keys, _ = cache(idp, clock)
    idp.reads = 0

    async def scenario() -> None:
        for i in range(50):  # garbage kids: one fetch, then refused without asking the IdP
            assert not await keys.refresh_for_kid(f"garbage-{i}")
        assert idp.reads == 1
        clock.now += 29.9
        assert not await keys.refresh_for_kid("garbage")
        assert idp.reads == 1
        idp.kids = ["k1", "k2"]
        assert not await keys.refresh_for_kid("k2")  # still limited: refused, not fetched
        assert idp.reads == 1
        clock.now += 0.1
        assert await keys.refresh_for_kid("k2")
        assert idp.reads == 2
        assert await keys.refresh_for_kid("k1")  # known kids never fetch
        assert idp.reads == 2
        assert await keys.refresh()  # periodic refreshes are not rate-limited
        assert idp.reads == 3

    asyncio.run(scenario())


def test_periodic_refresh_is_jittered_and_stops(private_keys: dict[str, Any]) -> None:
    idp = Idp(private_keys, "k1")
    keys, outcomes = cache(idp, refresh_s=0.02)
    delays = [keys.next_delay() for _ in range(200)]
    assert all(0.02 * (1 - REFRESH_JITTER) <= d <= 0.02 * (1 + REFRESH_JITTER) for d in delays)
    assert len(set(delays)) > 100

    async def scenario() -> None:
        stop = asyncio.Event()
        runner = asyncio.ensure_future(keys.run(stop))
        idp.kids = ["k2"]
        while "updated" not in outcomes:
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(runner, 1)

    asyncio.run(scenario())
    assert list(keys.keys) == ["k2"]


def test_the_verifier_refreshes_on_an_unknown_kid_once(private_keys: dict[str, Any]) -> None:
    idp = Idp(private_keys, "k1")
    keys, _ = cache(idp, Clock())
    verifier = TokenVerifier(keys=keys, issuer=ISS, audience=AUD)

    async def reason(token: str) -> str:
        with pytest.raises(AuthError) as caught:
            await verifier.verify_async(token)
        return caught.value.reason

    async def scenario() -> None:
        assert (await verifier.verify_async(idp.token("k1"))).user_id == "alice"
        idp.kids = ["k1", "k2"]
        # The IdP signs with k2 before our periodic refresh saw it: fetched on demand.
        assert (await verifier.verify_async(idp.token("k2"))).user_id == "alice"
        assert idp.reads == 2
        assert await reason(idp.token("k3")) == "unknown_key"  # rate-limited: no fetch
        assert idp.reads == 2
        idp.kids = ["k2"]
        await keys.refresh()
        assert await reason(idp.token("k1")) == "unknown_key"
        assert await reason(idp.token("k2", aud="other")) == "bad_audience"
        assert await reason(idp.token("k2", iss=None)) == "bad_issuer"

    asyncio.run(scenario())


def test_a_mounted_jwks_file_is_read_again(private_keys: dict[str, Any], tmp_path: Path) -> None:
    """The chart's path: a Secret mounted as a directory, whose files the kubelet swaps."""
    idp = Idp(private_keys, "k1")
    path = tmp_path / "jwks.json"
    path.write_bytes(idp())
    verifier = TokenVerifier.from_files(
        hs256_secret_file=None, jwks_file=path, issuer=ISS, audience=AUD, leeway_s=0
    )
    assert verifier.verify(idp.token("k1")).user_id == "alice"
    idp.kids = ["k2"]
    staged = tmp_path / "staged.json"
    staged.write_bytes(idp())
    staged.replace(path)  # atomic, as the kubelet's symlink swap
    assert verifier.keys is not None
    assert asyncio.run(verifier.keys.refresh())
    assert verifier.verify(idp.token("k2")).user_id == "alice"
    with pytest.raises(AuthError, match="unknown_key"):
        verifier.verify(idp.token("k1"))
    path.write_text('{"keys": [')  # a half-written hand edit: the last good keys stay
    assert not asyncio.run(verifier.keys.refresh())
    assert verifier.verify(idp.token("k2")).user_id == "alice"


def test_a_jwks_requires_issuer_and_audience(private_keys: dict[str, Any]) -> None:
    keys, _ = cache(Idp(private_keys, "k1"))
    for issuer, audience in ((ISS, ""), ("", AUD), ("", "")):
        with pytest.raises(ValueError, match="issuer and an audience"):
            TokenVerifier(keys=keys, issuer=issuer, audience=audience)


def test_a_malformed_kid_is_malformed(private_keys: dict[str, Any]) -> None:
    keys, _ = cache(Idp(private_keys, "k1"))
    verifier = TokenVerifier(keys=keys, issuer=ISS, audience=AUD)
    # PyJWT will not encode a non-string kid: swap the header of a good token.
    _, payload, signature = Idp(private_keys).token("k1").split(".")
    for header in ({"alg": "RS256", "kid": 7}, {"alg": "RS256", "kid": {"x": 1}}):
        encoded = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
        with pytest.raises(AuthError) as caught:
            asyncio.run(verifier.verify_async(f"{encoded}.{payload}.{signature}"))
        assert caught.value.reason == "malformed"


BASE = {
    "IMGW_NODE_ID": "gw-1",
    "IMGW_LISTEN_PORT": "8080",
    "IMGW_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
    "IMGW_REDIS_URL": "redis://127.0.0.1:6379/0",
    "IMGW_CASSANDRA_HOSTS": "127.0.0.1:9042",
}


def problems(env: dict[str, str]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as caught:
        load("gateway", {**BASE, **env})
    return caught.value.problems


def test_config_requires_issuer_and_audience_with_a_jwks(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text("{}")
    for source in ({"IMGW_JWT_JWKS_FILE": str(jwks)}, {"IMGW_JWT_JWKS_URL": "https://idp/k"}):
        assert [var for var, _ in problems(source)] == ["IMGW_JWT_AUDIENCE", "IMGW_JWT_ISSUER"]
        only_iss = problems({**source, "IMGW_JWT_ISSUER": ISS})
        assert only_iss == [
            ("IMGW_JWT_AUDIENCE", "required when a JWKS is set (IMGW_JWT_JWKS_FILE or _URL)")
        ]
        config = load(
            "gateway", {**BASE, **source, "IMGW_JWT_ISSUER": ISS, "IMGW_JWT_AUDIENCE": AUD}
        )
        assert (config.jwt_jwks_refresh_s, config.jwt_jwks_min_refresh_s) == (300.0, 30.0)
    both = {"IMGW_JWT_JWKS_FILE": str(jwks), "IMGW_JWT_JWKS_URL": "https://idp/k"}
    assert ("IMGW_JWT_JWKS_URL", "set it or IMGW_JWT_JWKS_FILE, not both") in problems(both)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("http://idp.example/jwks", "must be https"),
        ("ftp://idp/jwks", "expected https://"),
        ("https://", "expected https://"),
        ("https://idp:99999/jwks", "not a URL"),
    ],
)
def test_config_jwks_url_must_be_https(value: str, words: str) -> None:
    env = {"IMGW_JWT_JWKS_URL": value, "IMGW_JWT_ISSUER": ISS, "IMGW_JWT_AUDIENCE": AUD}
    found = problems(env)
    assert any(var == "IMGW_JWT_JWKS_URL" and words in msg for var, msg in found), found


def test_config_accepts_loopback_http_and_checks_intervals() -> None:
    env = {"IMGW_JWT_ISSUER": ISS, "IMGW_JWT_AUDIENCE": AUD}
    for url in ("http://127.0.0.1:8000/jwks.json", "http://localhost/jwks", "http://[::1]:9/j"):
        assert load("gateway", {**BASE, **env, "IMGW_JWT_JWKS_URL": url}).jwt_jwks_url == url
    env["IMGW_JWT_JWKS_URL"] = "https://idp/jwks"
    slow = {**env, "IMGW_JWT_JWKS_REFRESH_S": "10", "IMGW_JWT_JWKS_MIN_REFRESH_S": "20"}
    assert [var for var, _ in problems(slow)] == ["IMGW_JWT_JWKS_MIN_REFRESH_S"]


def test_redirects_never_leave_https() -> None:
    handler = _NoDowngrade()
    request = urllib.request.Request("https://idp.test/jwks")
    with pytest.raises(OSError, match="redirect from https to http:"):
        handler.redirect_request(request, None, 302, "Found", {}, "http://evil.test/jwks")
    moved = handler.redirect_request(request, None, 302, "Found", {}, "https://idp.test/v2/jwks")
    assert moved is not None
    assert moved.full_url == "https://idp.test/v2/jwks"
