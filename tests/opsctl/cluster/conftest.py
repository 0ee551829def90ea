"""Cluster test helpers: the kwok fixtures, and opsctl with the `cluster` group mounted."""

from __future__ import annotations

import pytest
import typer

from opsctl.cli import cluster as cluster_cli
from opsctl.cluster.pytest_plugin import kube_cluster, kube_namespace
from tests.support import OpsctlRunner

# Until tests/conftest.py loads opsctl.cluster.pytest_plugin, expose its fixtures here.
__all__ = ["kube_cluster", "kube_namespace"]


@pytest.fixture
def opsctl_cluster(opsctl: OpsctlRunner, monkeypatch: pytest.MonkeyPatch) -> OpsctlRunner:
    """The real CLI edge (opsctl.cli.run) with the cluster group registered, as the lead will."""
    from opsctl import cli

    registered = {group.name for group in cli.app.registered_groups}
    if "cluster" not in registered:
        app = typer.Typer(pretty_exceptions_enable=False, no_args_is_help=True)
        app.callback()(cli.root)
        app.add_typer(cluster_cli.app, name="cluster")
        monkeypatch.setattr(cli, "app", app)
    return opsctl
