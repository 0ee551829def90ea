"""The opsctl command line: command groups are registered here, errors become exit codes here.

Each group lives in its own module and keeps its heavy imports inside the commands, so
``opsctl --help`` stays fast. How groups share options (global ones, and each group's own,
resolved once into one object on ``ctx.obj``): ``opsctl/cli/_group.py``; the options
themselves: ``opsctl/cli/_options.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from opsctl import __version__, console
from opsctl.cli import (
    alerts,
    cluster,
    dashboards,
    demo,
    dlq,
    drill,
    infra,
    loadtest,
    local,
    playbooks,
    region,
    render,
    rollout,
    spec,
    status,
)
from opsctl.cli._group import OpsctlGroup
from opsctl.errors import ExitCode, InvalidInputFile, OpsctlError

app = typer.Typer(
    name="opsctl",
    cls=OpsctlGroup,
    help="Operate the multi-region IM platform: specs, local stack, load tests, rollouts.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain help: typer's Rich help imports markdown and pygments (~0.3 s), too slow for --help.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# The one place command groups are registered.
app.add_typer(spec.app, name="spec")
app.add_typer(alerts.app, name="alerts")
app.add_typer(dashboards.app, name="dashboards")
app.add_typer(local.app, name="local")
app.add_typer(loadtest.app, name="loadtest")
app.add_typer(cluster.app, name="cluster")
app.add_typer(playbooks.app, name="playbooks")
app.add_typer(infra.app, name="infra")
app.command("render")(render.render)
app.add_typer(rollout.app, name="rollout")
app.add_typer(region.app, name="region")
app.command("demo")(demo.demo)
app.command("status")(status.status)
app.add_typer(dlq.app, name="dlq")
app.add_typer(drill.app, name="drill")


def _version(value: bool) -> None:
    if value:
        console.data_console().print(f"opsctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    *,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Global options (--stack, --output, --infra-dir, -v, -q) work before or after the command.

    OpsctlGroup takes them wherever they are given into the one RootOptions of the run
    (opsctl.cli._options), which also sets the console's verbosity.
    """


def _report(error: OpsctlError) -> None:
    err = console.console
    err.print(f"[red bold]error:[/red bold] {error.message}", markup=True, highlight=False)
    if isinstance(error, InvalidInputFile):
        for problem in error.problems:
            field = f"[bold]{problem.path}[/bold]: " if problem.path else ""
            err.print(f"  {problem.location()}: {field}{_escape(problem.message)}")
    if error.hint:
        err.print(f"  hint: {_escape(error.hint)}")
    if console.verbosity >= 1:
        err.print_exception()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def run(argv: Sequence[str] | None = None) -> int:
    """Run opsctl and return its exit code; the only place errors become exit codes."""
    command = typer.main.get_command(app)
    try:
        returned = command.main(
            args=list(argv) if argv is not None else None, prog_name="opsctl", standalone_mode=False
        )
    except OpsctlError as error:
        _report(error)
        return int(error.exit_code)
    except typer.Exit as done:
        return int(done.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        console.console.print("interrupted")
        return int(ExitCode.INTERRUPTED)
    except SystemExit as exiting:  # typer's completion helpers exit directly
        return exiting.code if isinstance(exiting.code, int) else int(ExitCode.OK)
    except typer.TyperException as usage:  # bad flags, unknown commands, bad values
        show = getattr(usage, "show", None)
        if show is not None:
            show(file=sys.stderr)
        else:
            console.console.print(f"error: {usage}")
        return int(getattr(usage, "exit_code", ExitCode.BAD_INPUT))
    # Without standalone mode, `typer.Exit` raised inside a command comes back as a return value.
    return returned if isinstance(returned, int) else int(ExitCode.OK)


def main() -> None:
    sys.exit(run())
