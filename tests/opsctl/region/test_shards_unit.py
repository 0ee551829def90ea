"""opsctl/region/_shards.py: a reconciliation pass that meets a transient Cassandra error (a
CAS with an unknown outcome under contention, seen in CI) is tried again; others end it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from cassandra.protocol import ErrorMessage

from opsctl.errors import CheckFailed
from opsctl.region import _shards

pytestmark = pytest.mark.unit


def _cas_unknown() -> ErrorMessage:
    return ErrorMessage(code=0x1700, message="CAS operation result is unknown", info=None)


def _fake_shards(monkeypatch: pytest.MonkeyPatch, outcomes: list[Any]) -> _shards.Shards:
    calls = iter(outcomes)

    async def reconcile(*_args: Any, **_kwargs: Any) -> dict[str, int]:
        outcome = next(calls)
        if isinstance(outcome, BaseException):
            raise outcome
        return dict(outcome)

    async def read(_self: Any) -> Any:
        return None

    monkeypatch.setattr(_shards, "reconcile", reconcile)
    monkeypatch.setattr(_shards, "RECONCILE_RETRY_S", 0.0)
    monkeypatch.setattr(_shards.Shards, "read", read)
    shards = _shards.Shards(backends=None)  # type: ignore[arg-type]
    shards._control = object()  # type: ignore[assignment]
    return shards


def test_a_cas_of_unknown_outcome_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    shards = _fake_shards(monkeypatch, [_cas_unknown(), {"dropped": 2}])
    assert asyncio.run(shards.reconcile()) == {"dropped": 2}


def test_retries_end_with_a_check_failure_naming_the_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shards = _fake_shards(monkeypatch, [_cas_unknown()] * _shards.RECONCILE_ATTEMPTS)
    with pytest.raises(CheckFailed, match="CAS operation result is unknown"):
        asyncio.run(shards.reconcile())


def test_a_non_transient_error_is_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    shards = _fake_shards(monkeypatch, [ValueError("bad record"), {"dropped": 1}])
    with pytest.raises(CheckFailed, match="bad record"):
        asyncio.run(shards.reconcile())
