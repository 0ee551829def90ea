"""opsctl loadtest: IM-aware load tests with SLO gates, capacity search and generator checks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NamedTuple

import typer

from opsctl.cli._group import OpsctlGroup, help_values
from opsctl.cli._options import RegionOption, RootOptions, like

if TYPE_CHECKING:
    from opsctl.loadtest.targets import Target

app = typer.Typer(
    cls=OpsctlGroup,
    help="Load-test the IM gateways: `run` a profile with an SLO verdict, `capacity` search, "
    "`preflight` the generator host.",
    no_args_is_help=True,
)

# The stack whose peak users `capacity` plans for, unless --plan-stack says otherwise.
PLAN_STACK = "prod"


@help_values("loadtest")
def _constants() -> dict[str, object]:
    from opsctl.loadtest.profiles import PROFILES_DIR
    from opsctl.paths import REPO_ROOT

    return {
        "profiles_dir": PROFILES_DIR.relative_to(REPO_ROOT),
        "profiles": ", ".join(sorted(path.stem for path in PROFILES_DIR.glob("*.yaml"))),
    }


ProfileOption = Annotated[
    str,
    typer.Option(
        "--profile",
        "-p",
        help="Profile name in {loadtest.profiles_dir} ({loadtest.profiles}) or a file.",
    ),
]
TargetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--target",
        help="Gateway WebSocket URL(s), ws://HOST:PORT/ws. Repeatable. "
        "[default: the running local stack]",
        show_default=False,
    ),
]
LoadRegionOption = Annotated[
    str | None,
    like(
        RegionOption,
        help="Load this region of the stack (with --stack: that stack's). "
        "[default: the primary region]",
    ),
]
WorkersOption = Annotated[
    int, typer.Option(min=1, max=64, help="Locust worker processes on this machine.")
]
OutDirOption = Annotated[
    Path | None,
    typer.Option(
        "--out-dir",
        help="Where results go. [default: .state/loadtest/<time>-<profile>-<id>]",
        show_default=False,
        file_okay=False,
    ),
]
SecretOption = Annotated[
    Path | None,
    typer.Option(
        "--jwt-secret-file",
        help="HS256 secret to sign users' tokens. [default: the local stack's]",
        show_default=False,
        dir_okay=False,
    ),
]
IssuerOption = Annotated[str | None, typer.Option("--jwt-issuer", show_default=False)]
AudienceOption = Annotated[str | None, typer.Option("--jwt-audience", show_default=False)]


def _stack_given(root: RootOptions) -> bool:
    """--stack on the command line (before or after the command) aims at that stack."""
    return root.settings.sources.get("stack") == "cli"


class _Signing(NamedTuple):
    """--jwt-secret-file, --jwt-issuer, --jwt-audience: how the users' tokens are signed."""

    secret_file: Path | None
    issuer: str | None
    audience: str | None


def _target(
    root: RootOptions, target: list[str] | None, region: str | None, signing: _Signing
) -> Target:
    from opsctl.errors import UserInputError
    from opsctl.loadtest.targets import local_target, region_target, url_target

    from_stack = _stack_given(root) or region is not None
    if target and from_stack:
        raise UserInputError("give either --target or --stack/--region, not both")
    if target:
        # Gateways by URL are judged against the resolved stack's SLOs (env/config/default).
        return url_target(
            target,
            secret_file=signing.secret_file,
            issuer=signing.issuer,
            audience=signing.audience,
            infra_dir=root.settings.infra_dir,
            stack=root.stack,
        )
    if from_stack:
        return region_target(
            root.settings.infra_dir,
            root.stack,
            region,
            secret_file=signing.secret_file,
            issuer=signing.issuer,
            audience=signing.audience,
        )
    return local_target()


@app.command()
def run(
    ctx: typer.Context,
    *,
    profile: ProfileOption = "smoke",
    target: TargetOption = None,
    region: LoadRegionOption = None,
    workers: WorkersOption = 1,
    on_cluster: Annotated[
        bool,
        typer.Option(
            "--on-cluster",
            help="Run master and workers as Jobs in the region's cluster (kube context from the "
            "stack spec) instead of on this machine.",
        ),
    ] = False,
    out_dir: OutDirOption = None,
    jwt_secret_file: SecretOption = None,
    jwt_issuer: IssuerOption = None,
    jwt_audience: AudienceOption = None,
) -> None:
    """Run a load profile and gate on its SLOs: exit 0 pass, 1 SLO breached, 2 bad input,
    3 unreliable (the load generator saturated, so the latency cannot be trusted)."""
    from opsctl import console
    from opsctl.loadtest.profiles import load_profile, profile_path

    root = RootOptions.of(ctx)
    loaded = load_profile(profile)  # exit 2 with field paths before anything else
    path = profile_path(profile)
    if on_cluster:
        from opsctl.loadtest.oncluster import launch_on_cluster

        launched = launch_on_cluster(
            root.settings.infra_dir,
            root.stack,
            region,
            loaded,
            path,
            workers=workers,
            target_urls=target,
        )
        console.info(f"created {', '.join(launched)} in the region's cluster")
        return
    tgt = _target(root, target, region, _Signing(jwt_secret_file, jwt_issuer, jwt_audience))
    from opsctl.loadtest.session import execute

    outcome = execute(loaded, path, tgt, workers=workers, out_dir=out_dir)
    if root.json:
        console.emit_json(
            {
                "verdict": outcome.verdict.as_dict(),
                "report": {k: str(v) for k, v in outcome.paths.items()},
            }
        )
    raise typer.Exit(int(outcome.verdict.exit_code))


@app.command()
def capacity(
    ctx: typer.Context,
    *,
    profile: ProfileOption = "capacity",
    target: TargetOption = None,
    region: LoadRegionOption = None,
    plan_stack: Annotated[
        str | None,
        typer.Option(
            "--plan-stack",
            help=f"Stack whose peakConcurrentUsers the plan sizes for. [default: {PLAN_STACK}]",
            show_default=False,
        ),
    ] = None,
    workers: WorkersOption = 1,
    out_dir: OutDirOption = None,
    jwt_secret_file: SecretOption = None,
    jwt_issuer: IssuerOption = None,
    jwt_audience: AudienceOption = None,
) -> None:
    """Step load, then binary search on users until an SLO breaks; print the knee and a
    capacity plan (gateway pods per region) for a stack's peak users."""
    from opsctl import console
    from opsctl.loadtest.capacity import plan_for_stack, render_plan, search
    from opsctl.loadtest.profiles import load_profile, profile_path
    from opsctl.spec import load_stack

    root = RootOptions.of(ctx)
    loaded = load_profile(profile)
    plan_spec = load_stack(root.settings.infra_dir, plan_stack or PLAN_STACK)
    tgt = _target(root, target, region, _Signing(jwt_secret_file, jwt_issuer, jwt_audience))
    result = search(loaded, profile_path(profile), tgt, workers=workers, out_dir=out_dir)
    plan = plan_for_stack(plan_spec, result)
    if root.json:
        console.emit_json({"search": result.as_dict(), "plan": plan})
    else:
        render_plan(console.data_console(), result, plan)
    raise typer.Exit(0 if result.knee_users is not None else 3)


@app.command()
def preflight(
    ctx: typer.Context,
    *,
    profile: ProfileOption = "peak",
    workers: WorkersOption = 1,
) -> None:
    """Check this machine's limits (open files, ephemeral ports, conntrack, memory) against a
    profile and the loadgen_host numbers in opsctl/hostlimits/limits.yaml; exit 1 if short."""
    from opsctl import console
    from opsctl.loadtest.preflight import check_host, render_checks
    from opsctl.loadtest.profiles import load_profile

    loaded = load_profile(profile)
    report = check_host(loaded, workers=workers)
    if RootOptions.of(ctx).json:
        console.emit_json(report.as_dict())
    else:
        render_checks(console.data_console(), report)
    raise typer.Exit(0 if report.ok else 1)
