"""opsctl infra: preview, up, destroy, refresh and read outputs of a stack with Pulumi.

Drives infra/ through the Pulumi Automation API. Needs the pulumi CLI; everything that can be
checked without it (spec, kube contexts, passphrase) is checked before anything changes.
The group callback resolves the options every infra command shares into an
:class:`InfraTarget`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opsctl.cli._group import OpsctlGroup, help_values
from opsctl.cli._options import KubeconfigOption, OnRoot, RootOptions, like

if TYPE_CHECKING:
    from opsctl.infra import Operation

app = typer.Typer(
    cls=OpsctlGroup,
    help="Provision a stack's regions with Pulumi (infra/): preview, up, destroy, refresh, "
    "outputs. Local file backend and passphrase secrets by default.",
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
PolicyOption = Annotated[
    bool,
    typer.Option("--policy/--no-policy", help="Enforce the policy pack in {infra.policy}."),
]


@dataclass(frozen=True)
class InfraTarget(OnRoot):
    """The stack and where its Pulumi state, secrets and clusters are."""

    kubeconfig: Path | None
    backend_url: str | None
    secrets_provider: str | None

    def run(self, operation: Operation, *, policy: bool = False) -> None:
        """Run the Pulumi operation, echo its output, and report the changes."""
        from opsctl import console
        from opsctl.infra import resolve_config, run_operation

        config = resolve_config(
            stack=self.stack,
            infra_dir=self.settings.infra_dir,
            backend_url=self.backend_url,
            secrets_provider=self.secrets_provider,
            kubeconfig=self.kubeconfig,
            policy=policy,
        )
        echo = None if console.verbosity < 0 else (lambda line: console.info(line.rstrip()))
        result = run_operation(config, operation, on_output=echo)
        if self.json:
            console.emit_json(
                {
                    "operation": result.operation.value,
                    "stack": result.stack,
                    "changes": result.summary,
                    "outputs": result.outputs,
                }
            )
        else:
            changes = ", ".join(f"{op}: {n}" for op, n in sorted(result.summary.items())) or "none"
            console.info(f"[green]✓[/green] {operation.value} '{result.stack}': {changes}")


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


@app.command()
def preview(ctx: typer.Context, *, policy: PolicyOption = True) -> None:
    """Show what `up` would change, with the policy pack enforced."""
    from opsctl.infra import Operation

    InfraTarget.of(ctx).run(Operation.preview, policy=policy)


@app.command()
def up(ctx: typer.Context, *, policy: PolicyOption = True) -> None:
    """Create or update every region of the stack."""
    from opsctl.infra import Operation

    InfraTarget.of(ctx).run(Operation.up, policy=policy)


@app.command()
def destroy(
    ctx: typer.Context,
    *,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete every resource.")] = False,
) -> None:
    """Delete every resource of the stack (needs --yes)."""
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
def outputs(ctx: typer.Context) -> None:
    """Print the stack's outputs (per region: kube context and endpoints)."""
    from opsctl.infra import Operation

    InfraTarget.of(ctx).run(Operation.outputs)
