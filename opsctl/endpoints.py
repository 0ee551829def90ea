"""Where a command finds Prometheus and Alertmanager: an explicit URL, else the local stack."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from opsctl.errors import UserInputError

ENV_PROMETHEUS = "OPSCTL_PROMETHEUS_URL"
ENV_ALERTMANAGER = "OPSCTL_ALERTMANAGER_URL"


@dataclass(frozen=True)
class Endpoints:
    prometheus: str
    alertmanager: str
    source: str  # "flags" or the local stack's state dir


def resolve(
    *,
    prometheus: str | None = None,
    alertmanager: str | None = None,
    local_state_dir: Path | None = None,
) -> Endpoints:
    """Flag > environment variable > the running local stack (``opsctl local up``)."""
    prometheus = prometheus or os.environ.get(ENV_PROMETHEUS)
    alertmanager = alertmanager or os.environ.get(ENV_ALERTMANAGER)
    if prometheus and alertmanager:
        return Endpoints(prometheus.rstrip("/"), alertmanager.rstrip("/"), "flags")
    from opsctl.local import LocalStack, load_recorded, resolve_state_dir

    state_dir = resolve_state_dir(local_state_dir)
    config = load_recorded(state_dir)
    if config is None:
        raise UserInputError(
            "no Prometheus to talk to: pass --prometheus-url/--alertmanager-url "
            f"(or {ENV_PROMETHEUS}/{ENV_ALERTMANAGER}), or start the local stack",
            hint=f"no local stack is recorded in {state_dir}; run `opsctl local up`",
        )
    info = LocalStack(config).info
    return Endpoints(
        (prometheus or info.prometheus_url).rstrip("/"),
        (alertmanager or info.alertmanager_url).rstrip("/"),
        str(state_dir),
    )


def prometheus(flag: str | None, local_state_dir: Path | None = None) -> str:
    """The Prometheus to use: flag > $OPSCTL_PROMETHEUS_URL > the running local stack's."""
    explicit = flag or os.environ.get(ENV_PROMETHEUS)
    if explicit:
        return explicit.rstrip("/")
    return resolve(local_state_dir=local_state_dir).prometheus


def alertmanager(flag: str | None, local_state_dir: Path | None = None) -> str:
    """The Alertmanager to use: flag > $OPSCTL_ALERTMANAGER_URL > the running local stack's."""
    explicit = flag or os.environ.get(ENV_ALERTMANAGER)
    if explicit:
        return explicit.rstrip("/")
    return resolve(local_state_dir=local_state_dir).alertmanager
