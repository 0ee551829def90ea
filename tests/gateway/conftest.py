"""Fixtures for the gateway's integration tests: the real local stack and protocol clients.

``local_stack`` comes from ``opsctl.local.pytest_plugin`` (one stack per session). Tests are
plain functions running ``asyncio.run`` (no async test plugin is installed).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import pytest

from opsctl.local import LocalStack
from tests.gateway.protocol_client import ProtocolClient, make_token


@dataclass
class Im:
    """Entry points into the running stack for one test."""

    stack: LocalStack
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    made: list[ProtocolClient] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return list(self.stack.info.gateway_ws_urls)

    def uid(self, name: str) -> str:
        """Unique ids per test: tests share one stack."""
        return f"{name}-{self.suffix}"

    def token(self, user: str, **claims: object) -> str:
        info = self.stack.info
        return make_token(
            info.jwt_secret_file,
            user,
            issuer=info.jwt_issuer,
            audience=info.jwt_audience,
            **claims,
        )

    def client(
        self,
        user: str,
        device: str = "d1",
        *,
        gateway: int | None = None,
        auto_reconnect: bool = True,
    ) -> ProtocolClient:
        chosen = [self.urls[gateway]] if gateway is not None else self.urls
        client = ProtocolClient(
            chosen, user, device, lambda: self.token(user), auto_reconnect=auto_reconnect
        )
        self.made.append(client)
        return client

    async def close_all(self) -> None:
        for client in self.made:
            await client.close()

    def run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        """Run an async scenario, then close every client it opened, whatever happened."""

        async def main() -> None:
            try:
                await scenario()
            finally:
                await self.close_all()

        asyncio.run(main())

    def metrics(self, url: str) -> dict[str, float]:
        """Parsed /metrics of a gateway or dispatcher base URL: 'name{labels}' -> value."""
        text = httpx.get(f"{url}/metrics", timeout=5).text
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values


@pytest.fixture
def im(local_stack: LocalStack) -> Im:
    return Im(local_stack)
