"""OAuth2 bearer JWT checking: HS256 with a shared secret file (local) or RS256 with a JWKS
(a file or a URL, reloaded without a restart: gateway/jwks.py).

The algorithm is tied to the key source, never taken from the token, so an RS256 public key can
never be used as an HS256 secret. With a JWKS the issuer and the audience are required: an IdP
signs tokens for many audiences, and a token minted for another service must not open a session
here. A token without ``iss`` or ``aud`` is refused like one with the wrong value.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

from gateway.jwks import KeyCache, file_reader, url_reader
from gateway.protocol import ID_RE

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.config import Config


class AuthError(Exception):
    """The token is refused. ``reason`` is a metrics label and part of the protocol doc."""

    REASONS = (
        "missing",
        "malformed",
        "bad_signature",
        "bad_algorithm",
        "unknown_key",
        "expired",
        "not_yet_valid",
        "bad_issuer",
        "bad_audience",
        "bad_subject",
    )

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason

    @property
    def expired(self) -> bool:
        return self.reason == "expired"


@dataclass(slots=True, frozen=True)
class Identity:
    user_id: str
    expires_at: float  # epoch seconds


class TokenVerifier:
    def __init__(
        self,
        *,
        hs256_secret: bytes | None = None,
        jwks: dict[str, Any] | None = None,
        keys: KeyCache | None = None,
        issuer: str = "",
        audience: str = "",
        leeway_s: float = 30.0,
    ) -> None:
        """``jwks``: a fixed document; ``keys``: a refreshing cache (gateway/jwks.py)."""
        if jwks is not None and keys is not None:
            raise ValueError("give a JWKS document or a key cache, not both")
        if jwks:
            keys = KeyCache.static(jwks)
        if not hs256_secret and keys is None:
            raise ValueError("need an HS256 secret or a JWKS")
        if keys is not None and not (issuer and audience):
            raise ValueError("a JWKS needs an issuer and an audience to check")
        self._secret = hs256_secret
        self.keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_s

    @classmethod
    def from_files(
        cls,
        *,
        hs256_secret_file: Path | None,
        jwks_file: Path | None,
        issuer: str,
        audience: str,
        leeway_s: float,
        jwks_url: str = "",
        refresh_s: float = 300.0,
        min_refresh_s: float = 30.0,
        on_refresh: Callable[[str], None] | None = None,
    ) -> TokenVerifier:
        """Read the secret and load the JWKS once (blocking; errors are ValueError/OSError
        naming the source). The JWKS cache then refreshes itself once ``refresh_loop`` runs."""
        secret = None
        if hs256_secret_file is not None:
            secret = hs256_secret_file.read_bytes().strip()
            if len(secret) < 16:
                raise ValueError(f"{hs256_secret_file}: HS256 secret shorter than 16 bytes")
        keys = None
        if jwks_file is not None or jwks_url:
            source = str(jwks_file) if jwks_file is not None else jwks_url
            read = file_reader(jwks_file) if jwks_file is not None else url_reader(jwks_url)
            keys = KeyCache(
                read,
                source=source,
                refresh_s=refresh_s,
                min_refresh_s=min_refresh_s,
                on_refresh=on_refresh,
            )
            try:
                keys.load()
            except (ValueError, OSError) as exc:
                raise ValueError(f"{source}: {exc}") from None
        return cls(
            hs256_secret=secret, keys=keys, issuer=issuer, audience=audience, leeway_s=leeway_s
        )

    @classmethod
    def from_config(
        cls, config: Config, on_refresh: Callable[[str], None] | None = None
    ) -> TokenVerifier:
        return cls.from_files(
            hs256_secret_file=config.jwt_hs256_secret_file,
            jwks_file=config.jwt_jwks_file,
            jwks_url=config.jwt_jwks_url,
            issuer=config.jwt_issuer,
            audience=config.jwt_audience,
            leeway_s=config.jwt_leeway_s,
            refresh_s=config.jwt_jwks_refresh_s,
            min_refresh_s=config.jwt_jwks_min_refresh_s,
            on_refresh=on_refresh,
        )

    @staticmethod
    def _header(token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:  # not only DecodeError: a non-string kid, a bad crit
            raise AuthError("malformed") from None
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise AuthError("malformed", "kid is not a string")
        return header

    def _key_for(self, token: str) -> tuple[str, Any]:
        header = self._header(token)
        alg = header.get("alg")
        if alg == "HS256" and self._secret:
            return alg, self._secret
        if alg == "RS256" and self.keys is not None:
            keys = self.keys.keys  # one snapshot: a refresh replaces the mapping, never edits it
            kid = header.get("kid")
            if kid in keys:
                return alg, keys[kid]
            if kid is None and len(keys) == 1:
                return alg, next(iter(keys.values()))
            raise AuthError("unknown_key", f"kid {kid!r}")
        raise AuthError("bad_algorithm", f"alg {alg!r} not accepted")

    async def verify_async(self, token: str | None) -> Identity:
        """``verify``, plus one (rate-limited) JWKS refresh when the token names an unknown
        kid: the IdP may have started signing with a key published after our last fetch."""
        try:
            return self.verify(token)
        except AuthError as exc:
            if exc.reason != "unknown_key" or self.keys is None or not token:
                raise
            kid = self._header(token).get("kid")
            if kid is None or not await self.keys.refresh_for_kid(kid):
                raise
        return self.verify(token)

    async def refresh_loop(self, stop: asyncio.Event) -> None:
        """Periodic JWKS refresh until ``stop`` (returns at once without a JWKS)."""
        if self.keys is not None:
            await self.keys.run(stop)

    def verify(self, token: str | None) -> Identity:
        if not token:
            raise AuthError("missing")
        alg, key = self._key_for(token)
        required = ["exp", "sub"]
        required += ["iss"] if self._issuer else []
        required += ["aud"] if self._audience else []
        options: dict[str, Any] = {
            "require": required,
            "verify_aud": bool(self._audience),
            "verify_iss": bool(self._issuer),
        }
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience or None,
                issuer=self._issuer or None,
                leeway=self._leeway,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("not_yet_valid") from None
        except jwt.InvalidIssuerError:
            raise AuthError("bad_issuer") from None
        except jwt.InvalidAudienceError:
            raise AuthError("bad_audience") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad_signature") from None
        except jwt.MissingRequiredClaimError as exc:
            # A missing iss or aud is as wrong as a wrong one (same reason, same metric label).
            if exc.claim == "iss":
                raise AuthError("bad_issuer", "no iss") from None
            if exc.claim == "aud":
                raise AuthError("bad_audience", "no aud") from None
            raise AuthError("malformed", str(exc)) from None
        except jwt.InvalidTokenError as exc:
            raise AuthError("malformed", str(exc)) from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not ID_RE.match(sub):
            raise AuthError("bad_subject", "sub must match " + ID_RE.pattern)
        exp = claims.get("exp")
        expires_at = float(exp) if isinstance(exp, int | float) else time.time()
        return Identity(sub, expires_at + self._leeway)
