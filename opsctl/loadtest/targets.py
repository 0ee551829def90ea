"""Where the load goes and how its users get tokens.

A region's gateway URL is not in the stack spec yet. Until it is (proposed field
``regions[].gateway.publicUrl``), it follows the documented convention
``wss://gateway.<region>.<environment>.im.internal/ws``. The local stack's URLs, secret,
issuer and audience come from the running local stack.

A target also says whose SLOs it is judged against (opsctl/loadtest/slo.py): a region's stack,
the spec the local stack was started from, or the stack named for bare URLs.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from opsctl.errors import UserInputError
from opsctl.loadtest.slo import StackSlos
from opsctl.paths import DEFAULT_INFRA_DIR

GATEWAY_URL_CONVENTION = "wss://gateway.{region}.{environment}.im.internal/ws"
REACH_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Target:
    urls: tuple[str, ...]
    jwt_secret_file: Path
    jwt_issuer: str | None
    jwt_audience: str | None
    gateways: int  # gateway processes/pods behind the URLs (for per-pod capacity figures)
    source: str
    # The SLOs of the stack under load; None (a bare URL, the demo): the default stack's.
    slos: StackSlos | None = None
    # Each region's gateway URLs (a multi-region stack): where a profile's region mix puts
    # its users. Empty: the target has no regions.
    regions: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def stack_slos(self) -> StackSlos:
        return self.slos if self.slos is not None else StackSlos.default()


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise UserInputError(
            f"--target '{url}' is not a WebSocket URL", hint="use ws://host:port/ws or wss://..."
        )
    return url


def local_target(state_dir: Path | None = None) -> Target:
    from opsctl.local import LocalStack, resolve_state_dir
    from opsctl.local._errors import StackNotRunning

    try:
        stack = LocalStack.recorded(resolve_state_dir(state_dir))
    except StackNotRunning as exc:
        raise UserInputError(
            "no load target: the local stack is not running",
            hint="start it with `opsctl local up`, or pass --target ws://HOST:PORT/ws",
        ) from exc
    info = stack.info
    return Target(
        urls=info.gateway_ws_urls,
        jwt_secret_file=info.jwt_secret_file,
        jwt_issuer=info.jwt_issuer,
        jwt_audience=info.jwt_audience,
        gateways=len(info.gateway_ws_urls),
        source=f"local stack in {info.state_dir}",
        slos=StackSlos.load(stack.config.infra_dir, stack.config.spec_stack),
        regions=(
            {region.name: region.gateway_ws_urls for region in info.regions}
            if stack.multi_region
            else {}
        ),
    )


def region_target(
    infra_dir: Path,
    stack: str,
    region: str | None,
    *,
    secret_file: Path | None,
    issuer: str | None,
    audience: str | None,
) -> Target:
    from opsctl.spec import load_stack

    spec = load_stack(infra_dir, stack)
    names = [r.name for r in spec.regions]
    if region is None:
        if len(names) != 1:
            raise UserInputError(
                f"stack '{stack}' has {len(names)} regions: pick one with --region",
                hint=f"regions: {', '.join(names)}",
            )
        region = names[0]
    chosen = next((r for r in spec.regions if r.name == region), None)
    if chosen is None:
        raise UserInputError(
            f"region '{region}' is not in stack '{stack}'", hint=f"regions: {', '.join(names)}"
        )
    if spec.environment == "local" and secret_file is None:
        return local_target()
    if secret_file is None:
        raise UserInputError(
            f"stack '{stack}': --jwt-secret-file is needed to sign the simulated users' tokens"
        )
    url = GATEWAY_URL_CONVENTION.format(region=region, environment=spec.environment)
    return Target(
        urls=(url,),
        jwt_secret_file=secret_file,
        jwt_issuer=issuer,
        jwt_audience=audience,
        gateways=chosen.gateway.replicas,
        source=f"stack {stack}, region {region} (convention {GATEWAY_URL_CONVENTION})",
        slos=StackSlos(stack, spec.slos, spec.reconnect_budget.reconnects_per_second),
        regions=(
            {
                r.name: (
                    GATEWAY_URL_CONVENTION.format(region=r.name, environment=spec.environment),
                )
                for r in spec.regions
            }
            if len(spec.regions) > 1
            else {}
        ),
    )


def url_target(
    urls: list[str],
    *,
    secret_file: Path | None,
    issuer: str | None,
    audience: str | None,
    infra_dir: Path | None = None,
    stack: str | None = None,
) -> Target:
    """Gateways by URL. ``stack`` (in ``infra_dir``) names whose SLOs judge the run; without
    it, the default stack's."""
    checked = tuple(check_url(u) for raw in urls for u in raw.split(",") if u)
    if secret_file is None:
        try:
            local = local_target()
        except UserInputError:
            raise UserInputError(
                "--jwt-secret-file is needed with --target (no local stack to take it from)"
            ) from None
        secret_file, issuer, audience = (
            local.jwt_secret_file,
            issuer or local.jwt_issuer,
            audience or local.jwt_audience,
        )
    return Target(
        urls=checked,
        jwt_secret_file=secret_file,
        jwt_issuer=issuer,
        jwt_audience=audience,
        gateways=len(checked),
        source="--target",
        slos=StackSlos.load(infra_dir or DEFAULT_INFRA_DIR, stack) if stack else None,
    )


def check_reachable(target: Target, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Open one session per URL (upgrade, hello, welcome) so a wrong URL, a stopped gateway or
    a wrong secret fails in seconds, before any load."""
    import jwt
    import websocket

    if not target.jwt_secret_file.is_file():
        raise UserInputError(f"JWT secret file {target.jwt_secret_file} does not exist")
    secret = target.jwt_secret_file.read_text(encoding="utf-8").strip()
    now = int(time.time())
    claims: dict[str, object] = {"sub": "loadtest-probe", "iat": now, "exp": now + 300}
    if target.jwt_issuer:
        claims["iss"] = target.jwt_issuer
    if target.jwt_audience:
        claims["aud"] = target.jwt_audience
    token = jwt.encode(claims, secret, algorithm="HS256")
    for url in target.urls:
        try:
            ws = websocket.create_connection(
                url, timeout=timeout_s, header=[f"Authorization: Bearer {token}"]
            )
        except (OSError, websocket.WebSocketException) as exc:
            raise UserInputError(
                f"target {url} is unreachable: {exc}",
                hint="is the gateway running? check the URL, or `opsctl local status`",
            ) from None
        try:
            ws.send(json.dumps({"op": "hello", "device_id": "probe"}))
            reply = json.loads(ws.recv())
        except (OSError, websocket.WebSocketException, ValueError) as exc:
            raise UserInputError(f"target {url} did not answer hello: {exc}") from None
        finally:
            ws.close()
        if reply.get("op") != "welcome":
            raise UserInputError(
                f"target {url} refused the probe session: {reply.get('code')}"
                f" ({reply.get('message')})",
                hint="check the JWT secret, issuer and audience",
            )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
