"""Fixtures for the local stack's tests.

Until the root conftest loads ``opsctl.local.pytest_plugin``, importing its fixture here makes
it available to these tests; the plugin keeps one stack per session either way.
"""

from __future__ import annotations

from opsctl.cli import app
from opsctl.cli import local as local_cli
from opsctl.local.pytest_plugin import local_stack

# `opsctl local` is registered by the lead in opsctl/cli/__init__.py; until then, here.
if not any(group.name == "local" for group in app.registered_groups):
    app.add_typer(local_cli.app, name="local")

__all__ = ["local_stack"]
