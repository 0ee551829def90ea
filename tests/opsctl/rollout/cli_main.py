"""`python -m tests.opsctl.rollout.cli_main rollout ...`: opsctl with the rollout group
registered as the lead will register it, for tests that need opsctl in its own process."""

from __future__ import annotations

import sys

import typer

from opsctl import cli
from opsctl.cli import rollout


def mounted() -> typer.Typer:
    if "rollout" in {group.name for group in cli.app.registered_groups}:
        return cli.app
    app = typer.Typer(pretty_exceptions_enable=False, no_args_is_help=True)
    app.callback()(cli.root)
    app.add_typer(rollout.app, name="rollout")
    return app


def main() -> None:
    cli.app = mounted()
    sys.exit(cli.run())


if __name__ == "__main__":
    main()
