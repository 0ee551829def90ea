"""opsctl region: move a region's conversations to the other regions and back
(docs/multi-region.md 7.1-7.3), on a running local stack (`opsctl local up --stack staging`),
or with ``--cluster`` on the stack's clusters (7.5: the shard map at ``--cassandra``, the
gateways drained through each region's kubeContext).

The group callback resolves where to work (``--state-dir``, or ``--cluster`` and its options)
into a :class:`RegionTarget`; the commands are thin over ``opsctl.region``. Exit codes: 0 done,
1 a check failed (a dispatcher did not confirm a drain, a DC did not answer a reconciliation
read), 2 bad input (unknown region, the last region, a planned move of a region that is gone;
nothing changed), 3 interrupted (the JSON says what is left; re-run to continue).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opsctl.cli._group import OpsctlGroup, help_values
from opsctl.cli._options import (
    LocalStateDirOption,
    NamespaceOption,
    OnRoot,
    RegionsKubeconfigOption,
    RootOptions,
    like,
)

if TYPE_CHECKING:
    from opsctl.region import Outcome, Progress, Regions, Request

app = typer.Typer(
    cls=OpsctlGroup,
    help="Evacuate a region (its conversations move to other homes, its gateways drain within "
    "the spec's reconnect budget) and restore it, on the local multi-region stack or, with "
    "--cluster, on the stack's clusters. Exit 0 done, 1 check failed, 2 bad input (nothing "
    "changed), 3 interrupted (re-run to continue).",
    no_args_is_help=True,
)


@help_values("region")
def _defaults() -> dict[str, object]:
    from dataclasses import fields

    from opsctl.region import Request
    from opsctl.stack._names import APP_NAMESPACE, GATEWAY_RELEASE

    values: dict[str, object] = {f.name: f.default for f in fields(Request) if f.name != "region"}
    return {**values, "namespace": APP_NAMESPACE, "release": GATEWAY_RELEASE}


@dataclass(frozen=True)
class ClusterFlags:
    """How to reach the stack's clusters and its shard map (``--cluster``)."""

    kubeconfig: Path | None = None
    namespace: str | None = None
    release: str | None = None
    cassandra: tuple[str, ...] = ()
    cassandra_ca: Path | None = None
    kafka: tuple[str, ...] = ()

    def given(self) -> list[str]:
        names = {
            "--kubeconfig": self.kubeconfig,
            "--namespace": self.namespace,
            "--release": self.release,
            "--cassandra": self.cassandra,
            "--cassandra-ca": self.cassandra_ca,
            "--kafka": self.kafka,
        }
        return [flag for flag, value in names.items() if value]


@dataclass(frozen=True)
class RegionTarget(OnRoot):
    """Where the commands move a stack's regions: the local stack recorded in ``state_dir``,
    or (``cluster``) the stack's clusters."""

    state_dir_flag: Path | None
    cluster: bool = False
    flags: ClusterFlags = ClusterFlags()

    def regions(
        self, *, sessions_per_pod: int | None = None, drain_window: float | None = None
    ) -> Regions:
        from opsctl.errors import UserInputError

        if not self.cluster:
            given = self.flags.given() + [
                flag
                for flag, value in (
                    ("--sessions-per-pod", sessions_per_pod),
                    ("--drain-window", drain_window),
                )
                if value is not None
            ]
            if given:
                raise UserInputError(
                    f"{', '.join(given)}: only with --cluster (the local stack knows its own)",
                    hint="add --cluster to act on the stack's clusters",
                )
            return self._local()
        from opsctl.kube import default_kubeconfig
        from opsctl.region import ClusterRegions
        from opsctl.stack._names import APP_NAMESPACE, GATEWAY_RELEASE

        f = self.flags
        return ClusterRegions.of(
            self.spec,
            kubeconfig=f.kubeconfig or default_kubeconfig(),
            cassandra=list(f.cassandra),
            kafka=list(f.kafka),
            namespace=f.namespace or APP_NAMESPACE,
            release=f.release or GATEWAY_RELEASE,
            cassandra_ca=f.cassandra_ca,
            sessions_per_pod=sessions_per_pod,
            drain_window_s=drain_window,
        )

    def _local(self) -> Regions:
        from opsctl.local import LocalStack, resolve_state_dir
        from opsctl.region import LocalRegions

        stack = LocalStack.recorded(resolve_state_dir(self.state_dir_flag))
        return LocalRegions.of(stack, self.stack)

    def request(self, region: str, **given: object) -> Request:
        """The request, with the spec's reconnect budget; flags left out keep their defaults."""
        from opsctl.errors import UserInputError
        from opsctl.region import Request

        names = [r.name for r in self.spec.regions]
        if region not in names:
            raise UserInputError(
                f"unknown region '{region}': stack '{self.stack}' has {', '.join(names)}",
                hint=f"opsctl spec regions --stack {self.stack}",
            )
        budget = float(self.spec.reconnect_budget.reconnects_per_second)
        chosen = {k: v for k, v in given.items() if v is not None}
        return Request(region=region, budget_per_s=budget, **chosen)  # type: ignore[arg-type]


@app.callback()
def target(
    ctx: typer.Context,
    *,
    state_dir: Annotated[
        Path | None,
        like(
            LocalStateDirOption,
            help="State dir of the running local stack. "
            "[env: {local.env_state_dir}] [default: {local.state_dir}]",
        ),
    ] = None,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help="Act on the stack's clusters (each region's kubeContext) instead of the local "
            "stack; the shard map at --cassandra. docs/multi-region.md 7.5.",
        ),
    ] = False,
    kubeconfig: RegionsKubeconfigOption = None,
    namespace: Annotated[
        str | None,
        like(
            NamespaceOption,
            help="Namespace of the im-gateway release (--cluster). [default: {region.namespace}]",
        ),
    ] = None,
    release: Annotated[
        str | None,
        typer.Option(
            "--release",
            help="Helm release of the gateway chart: its Deployments are <release>-gateway and "
            "<release>-dispatcher (--cluster). [default: {region.release}]",
            show_default=False,
        ),
    ] = None,
    cassandra: Annotated[
        list[str] | None,
        typer.Option(
            "--cassandra",
            metavar="[REGION=]HOST:PORT[,HOST:PORT]",
            help="Cassandra contact points of the shard map, reachable from here (--cluster; "
            "repeatable; a region's own DC lets opsctl try a region that is gone last). The "
            "login is the Secret im-cassandra-dispatcher in --namespace.",
            show_default=False,
        ),
    ] = None,
    cassandra_ca: Annotated[
        Path | None,
        typer.Option(
            "--cassandra-ca",
            help="CA certificate (PEM) that signed the Cassandra nodes' client certificates: "
            "TLS, verified (--cluster). [default: plaintext]",
            dir_okay=False,
            exists=True,
            show_default=False,
        ),
    ] = None,
    kafka: Annotated[
        list[str] | None,
        typer.Option(
            "--kafka",
            metavar="[REGION=]HOST:PORT[,HOST:PORT]",
            help="Kafka bootstrap servers, where reconciliation produces held records again "
            "(--cluster; repeatable). [default: each region's external bootstrap name]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Every region command takes these (also after it)."""
    flags = ClusterFlags(
        kubeconfig=kubeconfig,
        namespace=namespace,
        release=release,
        cassandra=tuple(cassandra or ()),
        cassandra_ca=cassandra_ca,
        kafka=tuple(kafka or ()),
    )
    ctx.obj = RegionTarget(RootOptions.of(ctx), state_dir, cluster, flags)


# A positional REGION; the parameter is not called "region", which names --region/-r options.
RegionArgument = Annotated[
    str, typer.Argument(metavar="REGION", help="The region, as the stack spec names it.")
]
BatchOption = Annotated[
    int | None,
    typer.Option(
        "--batch",
        min=1,
        help="Shards per planned batch (drain, wait, move, reconcile). [default: {region.batch}]",
        show_default=False,
    ),
]
SessionsOption = Annotated[
    int | None,
    typer.Option(
        "--sessions-per-pod",
        min=0,
        help="Sessions one gateway pod holds, for the drain's pace (--cluster). "
        "[default: the spec's gateway.connectionsPerPod, the HPA's target]",
        show_default=False,
    ),
]
DrainWindowOption = Annotated[
    float | None,
    typer.Option(
        "--drain-window",
        min=0.1,
        help="Seconds a gateway pod spreads its reconnects over (--cluster). "
        "[default: the chart's gateway.drainWindowSeconds for the region]",
        show_default=False,
    ),
]
TimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=1,
        help="Seconds to wait for dispatchers to apply a map change. [default: {region.timeout_s}]",
        show_default=False,
    ),
]


@app.command()
def evacuate(
    ctx: typer.Context,
    name: RegionArgument,
    *,
    unreachable: Annotated[
        bool,
        typer.Option(
            "--unreachable",
            help="Unplanned failover: the region is gone; move its shards at once without a "
            "drain (held records wait for `restore`). docs/multi-region.md 7.2.",
        ),
    ] = False,
    batch: BatchOption = None,
    timeout: TimeoutOption = None,
    sessions_per_pod: SessionsOption = None,
    drain_window: DrainWindowOption = None,
) -> None:
    """Move every conversation homed in REGION to its next region, then drain REGION's
    gateways paced by the spec's reconnect budget. Re-running continues an interrupted run."""
    from opsctl import region as domain

    target_ = RegionTarget.of(ctx)
    request = target_.request(name, unreachable=unreachable, batch=batch, timeout_s=timeout)
    regions = target_.regions(sessions_per_pod=sessions_per_pod, drain_window=drain_window)
    try:
        _finish(target_, domain.evacuate(regions, request, _progress()))
    finally:
        regions.close()


@app.command()
def restore(
    ctx: typer.Context,
    name: RegionArgument,
    *,
    batch: BatchOption = None,
    timeout: TimeoutOption = None,
) -> None:
    """Start REGION's gateways, reconcile held records, then move REGION's conversations
    back home with planned moves. Re-running continues an interrupted run."""
    from opsctl import region as domain

    target_ = RegionTarget.of(ctx)
    request = target_.request(name, batch=batch, timeout_s=timeout)
    regions = target_.regions()
    try:
        _finish(target_, domain.restore(regions, request, _progress()))
    finally:
        regions.close()


def _progress() -> Progress:
    from opsctl import console
    from opsctl.region import NullProgress
    from opsctl.region._progress import RichProgress

    if console.verbosity < 0:
        return NullProgress()
    return RichProgress(console.console)


def _finish(target_: RegionTarget, outcome: Outcome) -> None:
    """Print the outcome (JSON or a summary), then exit 3 when it did not complete."""
    from opsctl import console
    from opsctl.errors import CheckFailed, Inconclusive

    if target_.json:
        console.emit_json(outcome.as_dict())
    else:
        _summary(outcome)
    for warning in outcome.warnings:
        console.warn(warning)
    if outcome.error is not None:
        left = ", ".join(f"{k} {v}" for k, v in outcome.left.items())
        raise CheckFailed(
            f"{outcome.operation} {outcome.region} stopped: {outcome.error}; left: {left}",
            hint=f"re-run `opsctl region {outcome.operation} {outcome.region}` to continue",
        )
    if not outcome.complete:
        left = ", ".join(f"{k} {v}" for k, v in outcome.left.items())
        raise Inconclusive(
            f"{outcome.operation} {outcome.region} interrupted; left: {left}",
            hint=f"re-run `opsctl region {outcome.operation} {outcome.region}` to continue",
        )


def _summary(outcome: Outcome) -> None:
    from rich.table import Table

    from opsctl import console

    table = Table(
        title=f"{outcome.operation} {outcome.region} ({outcome.mode})",
        title_justify="left",
        show_header=False,
    )
    table.add_column("what")
    table.add_column("value", overflow="fold")
    table.add_row("complete", "yes" if outcome.complete else "[red]no[/red]")
    table.add_row("shards moved", f"{outcome.shards_moved} of {outcome.shards_planned}")
    table.add_row("map epoch", f"{outcome.epoch_before} -> {outcome.epoch_after}")
    rec = outcome.reconciled
    table.add_row(
        "held records",
        f"{rec['held']} reconciled ({rec['sequenced']} sequenced, "
        f"{rec['already_sequenced']} already sequenced)",
    )
    for gateway in outcome.gateways:
        rate = f", {gateway.per_second}/s" if gateway.per_second is not None else ""
        sessions = "" if gateway.sessions is None else f"{gateway.sessions} sessions, "
        table.add_row(gateway.name, f"{gateway.action}: {sessions}{gateway.seconds} s{rate}")
    table.add_row("home share", ", ".join(f"{r} {v:.1%}" for r, v in outcome.home_share.items()))
    table.add_row("left", ", ".join(f"{k} {v}" for k, v in outcome.left.items()))
    if outcome.failover_s is not None:
        table.add_row("failover", f"{outcome.failover_s} s to the survivors' epoch")
    table.add_row("took", f"{outcome.duration_s} s")
    console.data_console().print(table)
