"""OAuth2 bearer JWT checking: HS256 with a shared secret file (local) or RS256 with a JWKS file.

The algorithm is tied to the key source, never taken from the token, so an RS256 public key can
never be used as an HS256 secret.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from gateway.protocol import ID_RE


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
        issuer: str = "",
        audience: str = "",
        leeway_s: float = 30.0,
    ) -> None:
        if not hs256_secret and not jwks:
            raise ValueError("need an HS256 secret or a JWKS")
        self._secret = hs256_secret
        self._keys: dict[str | None, Any] = {}
        if jwks:
            keyset = jwt.PyJWKSet.from_dict(jwks)
            for key in keyset.keys:
                if key.algorithm_name not in ("RS256", "RSA") and key.key_type != "RSA":
                    continue
                self._keys[key.key_id] = key.key
            if not self._keys:
                raise ValueError("the JWKS holds no RSA key")
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
    ) -> TokenVerifier:
        secret = None
        if hs256_secret_file is not None:
            secret = hs256_secret_file.read_bytes().strip()
            if len(secret) < 16:
                raise ValueError(f"{hs256_secret_file}: HS256 secret shorter than 16 bytes")
        jwks = None
        if jwks_file is not None:
            try:
                jwks = json.loads(jwks_file.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ValueError(f"{jwks_file}: not valid JSON: {exc}") from None
        return cls(
            hs256_secret=secret, jwks=jwks, issuer=issuer, audience=audience, leeway_s=leeway_s
        )

    def _key_for(self, token: str) -> tuple[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise AuthError("malformed") from None
        alg = header.get("alg")
        if alg == "HS256" and self._secret:
            return alg, self._secret
        if alg == "RS256" and self._keys:
            kid = header.get("kid")
            if kid in self._keys:
                return alg, self._keys[kid]
            if kid is None and len(self._keys) == 1:
                return alg, next(iter(self._keys.values()))
            raise AuthError("unknown_key", f"kid {kid!r}")
        raise AuthError("bad_algorithm", f"alg {alg!r} not accepted")

    def verify(self, token: str | None) -> Identity:
        if not token:
            raise AuthError("missing")
        alg, key = self._key_for(token)
        options: dict[str, Any] = {
            "require": ["exp", "sub"],
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
            raise AuthError("malformed", str(exc)) from None
        except jwt.InvalidTokenError as exc:
            raise AuthError("malformed", str(exc)) from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not ID_RE.match(sub):
            raise AuthError("bad_subject", "sub must match " + ID_RE.pattern)
        exp = claims.get("exp")
        expires_at = float(exp) if isinstance(exp, int | float) else time.time()
        return Identity(sub, expires_at + self._leeway)
