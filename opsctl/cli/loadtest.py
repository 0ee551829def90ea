"""opsctl loadtest: IM-aware load tests with SLO gates, capacity search and generator checks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NamedTuple

import typer

from opsctl.cli._group import OpsctlGroup, help_values
from opsctl.cli._options import KubeconfigOption, NamespaceOption, RegionOption, RootOptions, like

if TYPE_CHECKING:
    from opsctl.loadtest.oncluster import ClusterTarget
    from opsctl.loadtest.profiles import Profile
    from opsctl.loadtest.sizing import Sizing
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
    int | None,
    typer.Option(
        min=1,
        max=1000,
        help="Locust worker processes (on this machine: at most 64). [default: 1 here; on a "
        "cluster, sized from the profile]",
        show_default=False,
    ),
]
OnClusterOption = Annotated[
    bool,
    typer.Option(
        "--on-cluster",
        help="Run master and workers as Jobs in the region's cluster (kube context from the "
        "stack spec) instead of on this machine.",
    ),
]
WorkerCpuOption = Annotated[
    str | None,
    typer.Option(
        "--worker-cpu",
        help="CPU request per worker pod, e.g. 500m. [default: sized]",
        show_default=False,
    ),
]
WorkerMemoryOption = Annotated[
    str | None,
    typer.Option(
        "--worker-memory",
        help="Memory per worker pod, e.g. 512Mi. [default: sized]",
        show_default=False,
    ),
]
KeepOption = Annotated[
    bool, typer.Option("--keep", help="Keep the run's objects in the cluster afterwards.")
]
LoadNamespaceOption = Annotated[
    str | None, like(NamespaceOption, help="Namespace of the run. [default: im-loadtest]")
]
MAX_LOCAL_WORKERS = 64
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


def _local_workers(workers: int | None) -> int:
    from opsctl.errors import UserInputError

    if workers is not None and workers > MAX_LOCAL_WORKERS:
        raise UserInputError(
            f"--workers {workers}: at most {MAX_LOCAL_WORKERS} on this machine",
            hint="use --on-cluster for more",
        )
    return workers or 1


class _ClusterSizing(NamedTuple):
    workers: int | None
    worker_cpu: str | None
    worker_memory: str | None

    def size(self, profile: Profile, users: int | None = None) -> Sizing:
        from opsctl.loadtest.sizing import size_run

        return size_run(
            profile,
            users=users,
            workers=self.workers,
            worker_cpu=self.worker_cpu,
            worker_memory=self.worker_memory,
        )


class _Place(NamedTuple):
    """--region, --target, --namespace, --kubeconfig of an on-cluster command."""

    region: str | None
    target: list[str] | None
    namespace: str | None
    kubeconfig: Path | None


def _cluster(root: RootOptions, place: _Place, signing: _Signing) -> ClusterTarget:
    from opsctl.errors import UserInputError
    from opsctl.loadtest.oncluster import JWT_SECRET_NAME, cluster_target

    if signing.secret_file is not None:
        raise UserInputError(
            "--jwt-secret-file does not apply with --on-cluster",
            hint=f"the users' tokens are signed with the Secret {JWT_SECRET_NAME} (key 'secret') "
            "in the run's namespace",
        )
    return cluster_target(
        root.settings.infra_dir,
        root.stack,
        place.region,
        target_urls=place.target,
        namespace=place.namespace,
        kubeconfig=place.kubeconfig,
        issuer=signing.issuer,
        audience=signing.audience,
    )


def _no_cluster_flags(**given: object) -> None:
    from opsctl.errors import UserInputError

    used = [name for name, value in given.items() if value not in (None, False)]
    if used:
        flags = ", ".join("--" + name.replace("_", "-") for name in used)
        raise UserInputError(f"{flags} only apply with --on-cluster")


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
    workers: WorkersOption = None,
    on_cluster: OnClusterOption = False,
    worker_cpu: WorkerCpuOption = None,
    worker_memory: WorkerMemoryOption = None,
    keep: KeepOption = False,
    namespace: LoadNamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    out_dir: OutDirOption = None,
    jwt_secret_file: SecretOption = None,
    jwt_issuer: IssuerOption = None,
    jwt_audience: AudienceOption = None,
) -> None:
    """Run a load profile and gate on its SLOs: exit 0 pass, 1 SLO breached (or, on a cluster,
    a worker or the master failed), 2 bad input, 3 unreliable (the load generator saturated,
    so the latency cannot be trusted)."""
    from opsctl import console
    from opsctl.loadtest.profiles import load_profile, profile_path

    root = RootOptions.of(ctx)
    loaded = load_profile(profile)  # exit 2 with field paths before anything else
    path = profile_path(profile)
    signing = _Signing(jwt_secret_file, jwt_issuer, jwt_audience)
    if on_cluster:
        from opsctl.loadtest.oncluster import new_cluster_run
        from opsctl.loadtest.session import execute_on_cluster

        cluster = _cluster(root, _Place(region, target, namespace, kubeconfig), signing)
        sizing = _ClusterSizing(workers, worker_cpu, worker_memory).size(loaded)
        cluster_run = new_cluster_run(cluster, loaded, path, sizing, out_dir=out_dir, keep=keep)
        outcome = execute_on_cluster(cluster_run)
    else:
        _no_cluster_flags(
            worker_cpu=worker_cpu,
            worker_memory=worker_memory,
            keep=keep,
            namespace=namespace,
            kubeconfig=kubeconfig,
        )
        local_workers = _local_workers(workers)
        tgt = _target(root, target, region, signing)
        from opsctl.loadtest.session import execute

        outcome = execute(loaded, path, tgt, workers=local_workers, out_dir=out_dir)
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
    workers: WorkersOption = None,
    on_cluster: OnClusterOption = False,
    worker_cpu: WorkerCpuOption = None,
    worker_memory: WorkerMemoryOption = None,
    keep: KeepOption = False,
    namespace: LoadNamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    out_dir: OutDirOption = None,
    jwt_secret_file: SecretOption = None,
    jwt_issuer: IssuerOption = None,
    jwt_audience: AudienceOption = None,
) -> None:
    """Step load, then binary search on users until an SLO breaks; print the knee and a
    capacity plan (gateway pods per region) for a stack's peak users. With --on-cluster,
    every step is one distributed run in the region's cluster, sized for its users."""
    from opsctl import console
    from opsctl.loadtest.capacity import plan_for_stack, render_plan, search
    from opsctl.loadtest.profiles import load_profile, profile_path
    from opsctl.spec import load_stack

    root = RootOptions.of(ctx)
    loaded = load_profile(profile)
    path = profile_path(profile)
    plan_spec = load_stack(root.settings.infra_dir, plan_stack or PLAN_STACK)
    signing = _Signing(jwt_secret_file, jwt_issuer, jwt_audience)
    if on_cluster:
        from opsctl.loadtest.capacity import _settings
        from opsctl.loadtest.oncluster import cluster_steps

        _settings(loaded)  # no capacity section: exit 2 before anything
        cluster = _cluster(root, _Place(region, target, namespace, kubeconfig), signing)
        sizing = _ClusterSizing(workers, worker_cpu, worker_memory)
        steps = cluster_steps(
            cluster, loaded, path, size=lambda users: sizing.size(loaded, users), keep=keep
        )
        result = search(loaded, path, cluster.target, out_dir=out_dir, steps=steps)
    else:
        _no_cluster_flags(
            worker_cpu=worker_cpu,
            worker_memory=worker_memory,
            keep=keep,
            namespace=namespace,
            kubeconfig=kubeconfig,
        )
        tgt = _target(root, target, region, signing)
        result = search(loaded, path, tgt, workers=_local_workers(workers), out_dir=out_dir)
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
    workers: WorkersOption = None,
    on_cluster: Annotated[
        bool,
        typer.Option(
            "--on-cluster",
            help="Check the region's cluster instead: the namespace's quota and the nodes' "
            "free allocatable against the run's sizing.",
        ),
    ] = False,
    region: LoadRegionOption = None,
    worker_cpu: WorkerCpuOption = None,
    worker_memory: WorkerMemoryOption = None,
    namespace: LoadNamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
) -> None:
    """Check this machine's limits (open files, ephemeral ports, conntrack, memory) against a
    profile and the loadgen_host numbers in opsctl/hostlimits/limits.yaml; with --on-cluster,
    the cluster's quota and nodes against the run's sizing. Exit 1 if short."""
    from opsctl import console
    from opsctl.loadtest.preflight import check_cluster, check_host, render_checks
    from opsctl.loadtest.profiles import load_profile

    loaded = load_profile(profile)
    root = RootOptions.of(ctx)
    if on_cluster:
        cluster = _cluster(
            root, _Place(region, None, namespace, kubeconfig), _Signing(None, None, None)
        )
        sizing = _ClusterSizing(workers, worker_cpu, worker_memory).size(loaded)
        console.info(f"sizing: {sizing.describe()}")
        with cluster.api_client() as client:
            report = check_cluster(client, cluster.namespace, sizing, loaded)
    else:
        _no_cluster_flags(
            region=region,
            worker_cpu=worker_cpu,
            worker_memory=worker_memory,
            namespace=namespace,
            kubeconfig=kubeconfig,
        )
        report = check_host(loaded, workers=_local_workers(workers))
    if root.json:
        console.emit_json(report.as_dict())
    else:
        render_checks(console.data_console(), report)
    raise typer.Exit(0 if report.ok else 1)


@app.command()
def manifests(
    ctx: typer.Context,
    *,
    profile: ProfileOption = "peak",
    region: LoadRegionOption = None,
    target: TargetOption = None,
    workers: WorkersOption = None,
    worker_cpu: WorkerCpuOption = None,
    worker_memory: WorkerMemoryOption = None,
    namespace: LoadNamespaceOption = None,
    operator_role: Annotated[
        bool,
        typer.Option(
            "--operator-role",
            help="Print the Role opsctl itself needs in the namespace instead.",
        ),
    ] = False,
) -> None:
    """Print the objects `run --on-cluster` would create (YAML), including the master's
    ServiceAccount and Role, sized as the run would be; nothing is applied."""
    import yaml

    from opsctl.loadtest import oncluster
    from opsctl.loadtest.profiles import load_profile, profile_path

    root = RootOptions.of(ctx)
    loaded = load_profile(profile)
    if operator_role:
        typer.echo(yaml.safe_dump(oncluster.operator_role(namespace or oncluster.NAMESPACE)))
        raise typer.Exit(0)
    cluster = _cluster(root, _Place(region, target, namespace, None), _Signing(None, None, None))
    sizing = _ClusterSizing(workers, worker_cpu, worker_memory).size(loaded)
    cluster_run = oncluster.ClusterRun(
        target=cluster,
        profile=loaded,
        profile_file=profile_path(profile),
        sizing=sizing,
        shape=oncluster.RunShape.of(loaded),
        out_dir=Path("."),
        run="lt-rendered",
    )
    typer.echo(yaml.safe_dump_all(cluster_run.manifests(), sort_keys=False))
