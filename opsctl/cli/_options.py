"""Every option more than one command takes, defined once; and what the root options resolve to.

The same flags everywhere: ``--stack/-s``, ``--output/-o``, ``--infra-dir``, ``--kubeconfig``,
``--prometheus-url`` (repeatable, ``REGION=URL`` or a bare URL), ``--region/-r``,
``--namespace/-n``, ``--state-dir``, ``--alertmanager-url``, ``--dry-run``. A command that
needs its own wording uses :func:`like`: the same flags, other help.

Nothing here imports more than typer and the settings, so ``opsctl --help`` stays fast.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self, get_args

import typer
from typer._click.core import Context  # typer.Context's base; groups hand this one around

from opsctl.settings import (
    DEFAULT_OUTPUT,
    DEFAULT_STACK,
    ENV_VARS,
    OutputFormat,
    Settings,
    resolve,
)

if TYPE_CHECKING:
    from opsctl.spec import StackSpec


def _complete_stack(incomplete: str) -> list[str]:
    from opsctl.paths import DEFAULT_INFRA_DIR
    from opsctl.spec import list_stacks

    return [name for name in list_stacks(DEFAULT_INFRA_DIR) if name.startswith(incomplete)]


def like(option: Any, *, help: str | None = None, names: tuple[str, ...] = ()) -> Any:
    """The flags of a shared option with other help or extra (old) names, for a command whose
    wording differs: ``Annotated[str | None, like(RegionOption, help="...")]``."""
    info = copy.copy(get_args(option)[1])
    if help is not None:
        info.help = help
    if names:
        info.param_decls = (*info.param_decls, *names)
    return info


# -- global options: every command takes them, before or after its name -----------------------

StackOption = Annotated[
    str | None,
    typer.Option(
        "--stack",
        "-s",
        help=f"Stack name: infra/Pulumi.<stack>.yaml. [env: {ENV_VARS['stack']}] "
        f"[default: {DEFAULT_STACK}]",
        autocompletion=_complete_stack,
        show_default=False,
    ),
]
OutputOption = Annotated[
    OutputFormat | None,
    typer.Option(
        "--output",
        "-o",
        help=f"{OutputFormat.table.value} for people, {OutputFormat.json.value} for machines. "
        f"[env: {ENV_VARS['output']}] [default: {DEFAULT_OUTPUT.value}]",
        show_default=False,
        case_sensitive=False,
    ),
]
InfraDirOption = Annotated[
    Path | None,
    typer.Option(
        "--infra-dir",
        help=f"Directory holding the Pulumi stack files. [env: {ENV_VARS['infra_dir']}]",
        show_default=False,
        file_okay=False,
    ),
]
VerboseOption = Annotated[
    int, typer.Option("--verbose", "-v", count=True, help="More detail; -v shows tracebacks.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and data.")]


def _global_options(
    *,
    stack: StackOption = None,
    output: OutputOption = None,
    infra_dir: InfraDirOption = None,
    verbose: VerboseOption = 0,
    quiet: QuietOption = False,
) -> None:
    """Global options apply to every command; given twice, the later one wins."""


@cache
def global_options() -> list[Any]:
    """The global options as click parameters, one object each, shared by every command."""
    holder = typer.Typer(add_completion=False)
    holder.callback()(_global_options)
    holder.command("noop")(lambda: None)
    return list(typer.main.get_command(holder).params)


# -- options several command groups share -----------------------------------------------------

KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="Kubeconfig holding the regions' kube contexts (each region's kubeContext). "
        "[default: $KUBECONFIG, else the simulated clusters' (opsctl cluster up), "
        "else ~/.kube/config]",
        dir_okay=False,
        show_default=False,
    ),
]
# For commands that reach only the kube contexts the spec names (no simulated-cluster fallback).
RegionsKubeconfigOption = Annotated[
    Path | None,
    like(
        KubeconfigOption,
        help="Kubeconfig holding every region's kubeContext. "
        "[default: $KUBECONFIG, else ~/.kube/config]",
    ),
]
PrometheusUrlOption = Annotated[
    list[str] | None,
    typer.Option(
        "--prometheus-url",
        metavar="[REGION=]URL",
        help="Prometheus to query: a URL, or REGION=URL for one region's (repeatable). "
        "[env: OPSCTL_PROMETHEUS_URL] [default: the local stack's]",
        show_default=False,
    ),
]
RegionOption = Annotated[
    str | None,
    typer.Option(
        "--region", "-r", help="Only this region. [default: every region]", show_default=False
    ),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option("--namespace", "-n", help="Kubernetes namespace.", show_default=False),
]
AlertmanagerOption = Annotated[
    str | None,
    typer.Option(
        "--alertmanager-url",
        help="Alertmanager to use. [env: OPSCTL_ALERTMANAGER_URL] [default: the local stack's]",
        show_default=False,
    ),
]
LocalStateDirOption = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="State dir of the local stack to find endpoints in. "
        "[env: {local.env_state_dir}] [default: {local.state_dir}]",
        file_okay=False,
        show_default=False,
    ),
]
OutDirOption = Annotated[
    Path, typer.Option("--out", help="Directory to write into (created if missing).")
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Let the API server validate; change nothing.")
]


def one_prometheus(
    entries: list[str] | None, state_dir: Path | None = None, region: str | None = None
) -> str:
    """The one Prometheus a command queries, from ``--prometheus-url`` entries.

    A bare URL is used as is; ``REGION=URL`` entries are chosen by ``region`` (or taken when
    there is only one). No entry: $OPSCTL_PROMETHEUS_URL, else the local stack's.
    """
    from opsctl import endpoints
    from opsctl.errors import UserInputError

    bare: str | None = None
    by_region: dict[str, str] = {}
    for entry in entries or []:
        name, sep, url = entry.partition("=")
        if sep and "://" not in name:
            by_region[name] = url
        else:
            bare = entry
    if region is not None and region in by_region:
        return endpoints.prometheus(by_region[region], state_dir)
    if bare is not None:
        return endpoints.prometheus(bare, state_dir)
    if len(by_region) == 1 and region is None:
        return endpoints.prometheus(next(iter(by_region.values())), state_dir)
    if by_region:
        raise UserInputError(
            f"--prometheus-url: this command queries one Prometheus; got one for "
            f"{', '.join(by_region)}" + (f" but none for '{region}'" if region else ""),
            hint="give a bare URL, or REGION=URL together with --region REGION",
        )
    return endpoints.prometheus(None, state_dir)


# -- what the global options resolve to -------------------------------------------------------

_ROOT_KEY = "opsctl.root"


@dataclass
class RootOptions:
    """The global options of one invocation, wherever they were given; group objects layer on
    it. ``settings`` and ``spec`` are resolved on first use, once."""

    cli: dict[str, str | None] = field(default_factory=dict)
    verbose: int = 0
    quiet: bool = False

    @classmethod
    def of(cls, ctx: Context) -> RootOptions:
        """The invocation's root options (one per run, shared by every context)."""
        found = ctx.meta.get(_ROOT_KEY)
        if not isinstance(found, RootOptions):
            found = ctx.meta[_ROOT_KEY] = cls()
        return found

    def take(self, name: str, value: Any) -> None:
        """A global option given on the command line; given twice, the later one wins."""
        if name == "verbose":
            self.verbose += int(value)
        elif name == "quiet":
            self.quiet = self.quiet or bool(value)
        else:
            self.cli[name] = None if value is None else str(value)

    def overridden(self, **flags: str | None) -> RootOptions:
        """A copy where the given flags (not None) win: a command's own --stack, say."""
        cli = {**self.cli, **{k: v for k, v in flags.items() if v is not None}}
        return RootOptions(cli=cli, verbose=self.verbose, quiet=self.quiet)

    @cached_property
    def settings(self) -> Settings:
        """Command line > environment variable > config file > default."""
        return resolve(self.cli)

    @property
    def stack(self) -> str:
        return self.settings.stack

    @property
    def json(self) -> bool:
        """Whether data goes out as JSON (``--output json``) rather than tables."""
        return self.settings.output is OutputFormat.json

    @cached_property
    def spec(self) -> StackSpec:
        """The stack's spec, loaded and validated once (exit 2 with every problem)."""
        from opsctl.spec import load_stack

        return load_stack(self.settings.infra_dir, self.settings.stack)


@dataclass(frozen=True)
class OnRoot:
    """Base of the group objects: the root options, and shortcuts to what they resolve to."""

    root: RootOptions

    @classmethod
    def of(cls, ctx: Context) -> Self:
        """The object the group's callback put on ``ctx.obj``."""
        found = ctx.find_object(cls)
        if found is None:
            raise RuntimeError(f"no {cls.__name__}: the command ran without its group")
        return found

    @property
    def settings(self) -> Settings:
        return self.root.settings

    @property
    def stack(self) -> str:
        return self.root.stack

    @property
    def json(self) -> bool:
        return self.root.json

    @property
    def spec(self) -> StackSpec:
        return self.root.spec
