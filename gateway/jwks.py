"""The identity provider's RSA verification keys (a JWKS), kept fresh without a restart.

Where the document comes from: a file (the chart mounts a Secret; the kubelet swaps its content
atomically when the Secret changes) or an ``https://`` URL (the IdP's ``jwks_uri``).

When it is read again:

* periodically, every ``refresh_s`` (IMGW_JWT_JWKS_REFRESH_S) with +-``REFRESH_JITTER`` so that
  a fleet of gateways started together does not fetch in lockstep;
* on demand, when a token names a ``kid`` the cache does not hold (the IdP started signing with
  a key published after our last fetch). On-demand fetches are rate-limited to one per
  ``min_refresh_s`` (IMGW_JWT_JWKS_MIN_REFRESH_S) whatever the kid, so tokens with made-up
  kids cannot turn the gateways into a load generator against the IdP; a token refused while
  the limit holds gets ``unknown_key`` and the client's reconnect tries again.

Rotation: every fetch replaces the whole key set. A ``kid`` keeps working for as long as the
document lists it, so the IdP's overlap (publish the new key, sign with it, remove the old key
once its tokens have expired) is honoured; once a fetch no longer lists a kid, tokens signed
with it are refused. There is deliberately no grace period after removal: removing a key is
how an IdP revokes a leaked one, and a grace period would keep a revoked key usable. (Sessions
already open are not closed: a token is checked when the session opens, docs/protocol.md 1.1.)

Failure: a fetch that fails (network, HTTP status, invalid JSON, no RSA key) keeps the last good
key set, is logged and is counted (``on_refresh("failed")``: the ``outcome`` label of
im_gateway_jwks_refreshes_total, gateway/metrics.py); the next periodic refresh tries
again. A document without a single usable key is a failure, never "no keys".

Concurrency (all on the gateway's event loop, except the blocking read, which runs in a worker
thread so that a slow IdP never stalls the sessions):

* one fetch in flight at a time: a refresh that finds a fetch running awaits that same fetch
  instead of starting another, so a burst of hellos with a new kid costs one request. The check
  and the assignment of ``_inflight`` happen with no ``await`` between them, so two coroutines
  cannot both start one.
* waiters await the shared fetch through ``asyncio.shield``: a client that hangs up mid-hello
  cancels its own wait, never the fetch the others are waiting for.
* the key set is one dict replaced by a single assignment on the event loop thread after the
  fetch; verification (synchronous, on the same thread) always sees either the old set or the
  new one, never a half-built one.
* a periodic refresh and an on-demand one may both be wanted at once: the second just joins the
  fetch in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jwt

log = logging.getLogger("gateway.jwks")

REFRESH_JITTER = 0.1  # +-10 % of the periodic interval
FETCH_TIMEOUT_S = 5.0  # one HTTP fetch, connect and read
MAX_DOCUMENT_BYTES = 1 << 20  # a JWKS is a few KiB; refuse anything absurd

Keys = Mapping[str | None, Any]


def parse_jwks(document: bytes | str | Mapping[str, Any]) -> dict[str | None, Any]:
    """The RSA public keys of a JWKS document by ``kid``; ValueError if there is none."""
    if isinstance(document, bytes | str):
        try:
            data = json.loads(document)
        except ValueError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
    else:
        data = document
    if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWKS (an object with a 'keys' list)")
    keys: dict[str | None, Any] = {}
    for entry in data["keys"]:
        if not isinstance(entry, Mapping) or entry.get("kty") != "RSA":
            continue
        if entry.get("use", "sig") != "sig" or entry.get("alg", "RS256") != "RS256":
            continue
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        try:
            keys[kid] = jwt.PyJWK.from_dict(dict(entry)).key
        except jwt.PyJWTError:
            continue  # one broken entry must not take the others down
    if not keys:
        raise ValueError("the JWKS holds no RSA signing key")
    return keys


def file_reader(path: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        return path.read_bytes()[: MAX_DOCUMENT_BYTES + 1]

    return read


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow an IdP's redirects, but never from https to plain http (keys in clear text)."""

    def redirect_request(  # noqa: PLR0917 (the stdlib signature)
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        if req.full_url.startswith("https://") and not newurl.startswith("https://"):
            raise OSError(f"refusing the redirect from https to {newurl}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def url_reader(url: str, timeout_s: float = FETCH_TIMEOUT_S) -> Callable[[], bytes]:
    """A blocking GET of ``url`` (run it in a thread). https is verified with the system CAs."""
    opener = urllib.request.build_opener(_NoDowngrade)

    def read() -> bytes:
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with opener.open(request, timeout=timeout_s) as response:
            if response.status != 200:
                raise OSError(f"HTTP {response.status}")
            body: bytes = response.read(MAX_DOCUMENT_BYTES + 1)
            return body

    return read


class KeyCache:
    """The current key set of one JWKS source, refreshed periodically and on unknown kids."""

    def __init__(
        self,
        read: Callable[[], bytes],
        *,
        source: str,
        refresh_s: float = 300.0,
        min_refresh_s: float = 30.0,
        on_refresh: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        keys: Mapping[str | None, Any] | None = None,
    ) -> None:
        self._read = read
        self.source = source  # for logs: a path or URL, never a key
        self.refresh_s = refresh_s
        self.min_refresh_s = min_refresh_s
        self.on_refresh = on_refresh or (lambda outcome: None)
        self._clock = clock
        self._keys: dict[str | None, Any] = dict(keys or {})
        self._inflight: asyncio.Task[bool] | None = None
        self._last_on_demand: float | None = None

    @classmethod
    def static(cls, document: Mapping[str, Any]) -> KeyCache:
        """A cache over a fixed document (never refreshed; for tests and tools)."""
        keys = parse_jwks(document)
        body = json.dumps(document).encode()
        return cls(lambda: body, source="<static>", keys=keys)

    @property
    def keys(self) -> Keys:
        return self._keys

    def load(self) -> None:
        """The first, blocking read at startup: raises ValueError/OSError (fail fast)."""
        self._keys = self._parse(self._read())

    def _parse(self, body: bytes) -> dict[str | None, Any]:
        if len(body) > MAX_DOCUMENT_BYTES:
            raise ValueError(f"larger than {MAX_DOCUMENT_BYTES} bytes")
        return parse_jwks(body)

    async def refresh(self) -> bool:
        """Fetch now, or join the fetch in flight. True when the fetch succeeded."""
        task = self._inflight
        if task is None or task.done():
            # No await between the check and the assignment: one fetch in flight, ever.
            task = self._inflight = asyncio.ensure_future(self._fetch())
        return await asyncio.shield(task)

    async def refresh_for_kid(self, kid: str) -> bool:
        """A token names ``kid``, which we do not hold: fetch (rate-limited) and say whether
        the key is known now."""
        if kid in self._keys:
            return True
        task = self._inflight
        if task is None or task.done():
            now = self._clock()
            if self._last_on_demand is not None and now - self._last_on_demand < self.min_refresh_s:
                return False  # rate limit: at most one on-demand fetch per min_refresh_s
            self._last_on_demand = now
        await self.refresh()
        return kid in self._keys

    async def _fetch(self) -> bool:
        try:
            body = await asyncio.to_thread(self._read)
            keys = self._parse(body)
        except Exception as exc:
            # OSError, ValueError, but also http.client's own errors: whatever went wrong, the
            # cache keeps serving. An exception escaping here would end the periodic loop, or
            # fail a hello that the last good keys can still check.
            log.warning(
                "JWKS refresh from %s failed, keeping the %d last good keys: %s",
                self.source,
                len(self._keys),
                exc,
            )
            self.on_refresh("failed")
            return False
        if set(keys) == set(self._keys) and all(
            keys[kid].public_numbers() == self._keys[kid].public_numbers() for kid in keys
        ):
            self.on_refresh("unchanged")
            return True
        added = sorted(str(kid) for kid in set(keys) - set(self._keys))
        removed = sorted(str(kid) for kid in set(self._keys) - set(keys))
        self._keys = keys  # one assignment: readers see the old set or the new one
        log.info("JWKS from %s updated: added %s, removed %s", self.source, added, removed)
        self.on_refresh("updated")
        return True

    def next_delay(self) -> float:
        return self.refresh_s * random.uniform(1 - REFRESH_JITTER, 1 + REFRESH_JITTER)

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh every ``refresh_s`` (jittered) until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.next_delay())
                return
            await self.refresh()
