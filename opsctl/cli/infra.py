"""opsctl infra: preview, up, destroy, refresh, drift and read outputs of a stack with Pulumi.

Drives the program in infra/ inline through the Pulumi Automation API, on the pinned pulumi CLI
and Kubernetes provider (built on first use). Everything that can be checked without the engine
(spec, kube contexts, passphrase, policy packs) is checked before anything changes. The group
callback resolves the options every infra command shares into an :class:`InfraTarget`.

Exit codes: 0 done (or nothing to change); 1 the engine failed, ``preview
--expect-no-changes`` found changes, or ``drift`` found drift; 2 bad input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opsctl.cli._group import OpsctlGroup, help_values
from opsctl.cli._options import KubeconfigOption, OnRoot, RootOptions, like

if TYPE_CHECKING:
    from opsctl.infra import Operation, OperationResult

app = typer.Typer(
    cls=OpsctlGroup,
    help="Provision a stack's regions with Pulumi (infra/): preview, up, destroy, refresh, "
    "drift, outputs. Local file backend and passphrase secrets by default.",
    no_args_is_help=True,
)


@help_values("infra")
def _constants() -> dict[str, object]:
    from opsctl.infra import _driver
    from opsctl.paths import REPO_ROOT

    return {
        "env_backend": _driver.ENV_BACKEND_URL,
        "backend": f"file://<repo>/{_driver.DEFAULT_BACKEND_DIR.relative_to(REPO_ROOT)}",
        "env_secrets": _driver.ENV_SECRETS_PROVIDER,
        "secrets": _driver.DEFAULT_SECRETS_PROVIDER,
        "policy": _driver.POLICY_PACK_DIR.relative_to(REPO_ROOT),
    }


BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend-url",
        help="Pulumi state backend. [env: {infra.env_backend}] [default: {infra.backend}]",
        show_default=False,
    ),
]
SecretsOption = Annotated[
    str | None,
    typer.Option(
        "--secrets-provider",
        help="Pulumi secrets provider. [env: {infra.env_secrets}] "
        "[default: {infra.secrets}, from PULUMI_CONFIG_PASSPHRASE(_FILE)]",
        show_default=False,
    ),
]
PolicyPackOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--policy-pack",
        help="Run this policy pack in the engine (repeatable; ours: {infra.policy}). A Python "
        "pack needs the pulumi-language-python host; without it this exits 2 saying so.",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class InfraTarget(OnRoot):
    """The stack and where its Pulumi state, secrets and clusters are."""

    kubeconfig: Path | None
    backend_url: str | None
    secrets_provider: str | None

    def run(
        self,
        operation: Operation,
        *,
        policy_packs: list[Path] | None = None,
        expect_no_changes: bool = False,
        refresh: bool = True,
    ) -> None:
        """Run the Pulumi operation with per-resource progress, then report per region."""
        from opsctl import console
        from opsctl.cluster._tools import build_tools
        from opsctl.errors import CheckFailed
        from opsctl.infra import Operation, resolve_config, run_operation
        from opsctl.infra._progress import ConsoleReporter

        config = resolve_config(
            stack=self.stack,
            infra_dir=self.settings.infra_dir,
            backend_url=self.backend_url,
            secrets_provider=self.secrets_provider,
            kubeconfig=self.kubeconfig,
            policy_packs=[path.resolve() for path in policy_packs or []],
            refresh=refresh,
        )
        quiet = console.verbosity < 0
        echo = (lambda line: console.debug(line.rstrip())) if console.verbosity >= 2 else None
        title = f"pulumi {operation.value} '{self.stack}'"
        with ConsoleReporter(console.console, title, verbose=console.verbosity >= 1) as progress:
            result = run_operation(
                config,
                operation,
                reporter=progress if not quiet else None,
                on_output=echo,
                build=build_tools,
            )
        if self.json:
            console.emit_json(result.to_json())
        else:
            _report(result)
        if operation is Operation.drift and result.drifted:
            raise CheckFailed(
                f"drift in stack '{self.stack}': {len(result.drifted)} resources changed "
                "outside Pulumi",
                hint=f"`opsctl infra up --stack {self.stack}` puts them back",
            )
        if expect_no_changes and result.pending:
            raise CheckFailed(
                f"stack '{self.stack}': {result.pending} changes pending (--expect-no-changes)"
            )


def _report(result: OperationResult) -> None:
    from rich.markup import escape

    from opsctl import console
    from opsctl.infra import Operation

    changes = ", ".join(f"{op}: {n}" for op, n in sorted(result.summary.items())) or "none"
    if result.operation is Operation.outputs:
        console.info(f"outputs of '{result.stack}':")
        for key, value in result.outputs.items():
            console.info(escape(f"  {key}: {value}"))
        return
    if result.operation is Operation.drift:
        drifted = result.drifted
        if not drifted:
            console.info(f"[green]✓[/green] no drift in '{result.stack}' ({changes})")
            return
        console.info(f"[red]✗[/red] drift in '{result.stack}':")
        for region, entry in result.log.by_region(drifted).items():
            for resource in entry["resources"]:
                diffs = ", ".join(resource.get("diffs", [])) or "changed"
                console.info(escape(f"  {region}: {resource['type']} {resource['name']}: {diffs}"))
        return
    per_region = result.log.by_region(result.log.changed())
    regions = "; ".join(
        f"{region}: " + (", ".join(f"{op} {n}" for op, n in sorted(e["changes"].items())) or "-")
        for region, e in per_region.items()
    )
    console.info(
        f"[green]✓[/green] {result.operation.value} '{result.stack}': {changes}"
        + (escape(f" ({regions})") if regions else "")
    )


@app.callback()
def target(
    ctx: typer.Context,
    *,
    kubeconfig: Annotated[
        Path | None,
        like(
            KubeconfigOption,
            help="Kubeconfig holding every region's kubeContext. "
            "[default: $KUBECONFIG, else ~/.kube/config]",
        ),
    ] = None,
    backend_url: BackendOption = None,
    secrets_provider: SecretsOption = None,
) -> None:
    """Every infra command takes --kubeconfig, --backend-url and --secrets-provider."""
    ctx.obj = InfraTarget(RootOptions.of(ctx), kubeconfig, backend_url, secrets_provider)


ExpectNoChanges = Annotated[
    bool,
    typer.Option(
        "--expect-no-changes", help="Exit 1 if anything would change (a CI gate on drift)."
    ),
]


@app.command()
def preview(
    ctx: typer.Context,
    *,
    policy_pack: PolicyPackOption = None,
    expect_no_changes: ExpectNoChanges = False,
) -> None:
    """Show what `up` would change, per region (`-o json` for CI)."""
    from opsctl.infra import Operation

    InfraTarget.of(ctx).run(
        Operation.preview, policy_packs=policy_pack, expect_no_changes=expect_no_changes
    )


@app.command()
def up(
    ctx: typer.Context,
    *,
    policy_pack: PolicyPackOption = None,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh/--no-refresh",
            help="Refresh from the clusters first, so objects changed outside Pulumi are put "
            "back (--no-refresh: compare with the saved state only; faster).",
        ),
    ] = True,
) -> None:
    """Create or update every region of the stack, repairing drift."""
    from opsctl.infra import Operation

    InfraTarget.of(ctx).run(Operation.up, policy_packs=policy_pack, refresh=refresh)


@app.command()
def destroy(
    ctx: typer.Context,
    *,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete every resource.")] = False,
) -> None:
    """Delete every resource of the stack (needs --yes). Operator CRDs are kept."""
    from opsctl.errors import UserInputError
    from opsctl.infra import Operation

    if not yes:
        raise UserInputError("destroy deletes every region's resources; pass --yes to confirm")
    InfraTarget.of(ctx).run(Operation.destroy)


@app.command()
def refresh(ctx: typer.Context) -> None:
    """Reconcile Pulumi's state with what the clusters actually hold."""
    from opsctl.infra import Operation

    InfraTarget.of(ctx).run(Operation.refresh)


@app.command()
def drift(ctx: typer.Context) -> None:
    """Report objects changed outside Pulumi, per region (refresh in preview mode); exit 1 on
    drift. The state is not changed; `up` puts the objects back."""
    from opsctl.infra import Operation

    InfraTarget.of(ctx).run(Operation.drift)


@app.command()
def outputs(ctx: typer.Context) -> None:
    """Print the stack's outputs (per region: kube context and endpoints)."""
    from opsctl.infra import Operation

    InfraTarget.of(ctx).run(Operation.outputs)
