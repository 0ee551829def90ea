"""opsctl infra: preview, up, destroy, refresh and read outputs of a stack with Pulumi.

Drives infra/ through the Pulumi Automation API. Needs the pulumi CLI; everything that can be
checked without it (spec, kube contexts, passphrase) is checked before anything changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opsctl.cli._options import OutputOption, StackOption, settings
from opsctl.settings import OutputFormat

if TYPE_CHECKING:
    from opsctl.infra import Operation

app = typer.Typer(
    help="Provision a stack's regions with Pulumi (infra/): preview, up, destroy, refresh, "
    "outputs. Local file backend and passphrase secrets by default.",
    no_args_is_help=True,
)

KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="Kubeconfig holding every region's kubeContext. [env: KUBECONFIG] "
        "[default: ~/.kube/config]",
        show_default=False,
        dir_okay=False,
    ),
]
BackendOption = Annotated[
    str | None,
    typer.Option(
        "--backend-url",
        help="Pulumi state backend. [env: OPSCTL_PULUMI_BACKEND_URL] "
        "[default: file://<repo>/.state/pulumi]",
        show_default=False,
    ),
]
SecretsOption = Annotated[
    str | None,
    typer.Option(
        "--secrets-provider",
        help="Pulumi secrets provider. [env: OPSCTL_PULUMI_SECRETS_PROVIDER] "
        "[default: passphrase, from PULUMI_CONFIG_PASSPHRASE(_FILE)]",
        show_default=False,
    ),
]
PolicyOption = Annotated[
    bool,
    typer.Option("--policy/--no-policy", help="Enforce the policy pack in infra/policy."),
]


def _run(
    ctx: typer.Context,
    operation: Operation,
    *,
    stack: str | None,
    output: OutputFormat | None,
    kubeconfig: Path | None,
    backend_url: str | None,
    secrets_provider: str | None,
    policy: bool,
) -> None:
    from opsctl import console
    from opsctl.infra import resolve_config, run_operation

    resolved = settings(ctx, stack=stack, output=output)
    config = resolve_config(
        stack=resolved.stack,
        infra_dir=resolved.infra_dir,
        backend_url=backend_url,
        secrets_provider=secrets_provider,
        kubeconfig=kubeconfig,
        policy=policy,
    )
    echo = None if console.verbosity < 0 else (lambda line: console.info(line.rstrip()))
    result = run_operation(config, operation, on_output=echo)
    if resolved.output is OutputFormat.json:
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


@app.command()
def preview(
    ctx: typer.Context,
    *,
    stack: StackOption = None,
    output: OutputOption = None,
    kubeconfig: KubeconfigOption = None,
    backend_url: BackendOption = None,
    secrets_provider: SecretsOption = None,
    policy: PolicyOption = True,
) -> None:
    """Show what `up` would change, with the policy pack enforced."""
    from opsctl.infra import Operation

    _run(ctx, Operation.preview, stack=stack, output=output, kubeconfig=kubeconfig,
         backend_url=backend_url, secrets_provider=secrets_provider, policy=policy)  # fmt: skip


@app.command()
def up(
    ctx: typer.Context,
    *,
    stack: StackOption = None,
    output: OutputOption = None,
    kubeconfig: KubeconfigOption = None,
    backend_url: BackendOption = None,
    secrets_provider: SecretsOption = None,
    policy: PolicyOption = True,
) -> None:
    """Create or update every region of the stack."""
    from opsctl.infra import Operation

    _run(ctx, Operation.up, stack=stack, output=output, kubeconfig=kubeconfig,
         backend_url=backend_url, secrets_provider=secrets_provider, policy=policy)  # fmt: skip


@app.command()
def destroy(
    ctx: typer.Context,
    *,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete every resource.")] = False,
    stack: StackOption = None,
    output: OutputOption = None,
    kubeconfig: KubeconfigOption = None,
    backend_url: BackendOption = None,
    secrets_provider: SecretsOption = None,
) -> None:
    """Delete every resource of the stack (needs --yes)."""
    from opsctl.errors import UserInputError
    from opsctl.infra import Operation

    if not yes:
        raise UserInputError("destroy deletes every region's resources; pass --yes to confirm")
    _run(ctx, Operation.destroy, stack=stack, output=output, kubeconfig=kubeconfig,
         backend_url=backend_url, secrets_provider=secrets_provider, policy=False)  # fmt: skip


@app.command()
def refresh(
    ctx: typer.Context,
    *,
    stack: StackOption = None,
    output: OutputOption = None,
    kubeconfig: KubeconfigOption = None,
    backend_url: BackendOption = None,
    secrets_provider: SecretsOption = None,
) -> None:
    """Reconcile Pulumi's state with what the clusters actually hold."""
    from opsctl.infra import Operation

    _run(ctx, Operation.refresh, stack=stack, output=output, kubeconfig=kubeconfig,
         backend_url=backend_url, secrets_provider=secrets_provider, policy=False)  # fmt: skip


@app.command()
def outputs(
    ctx: typer.Context,
    *,
    stack: StackOption = None,
    output: OutputOption = None,
    backend_url: BackendOption = None,
    secrets_provider: SecretsOption = None,
) -> None:
    """Print the stack's outputs (per region: kube context and endpoints)."""
    from opsctl.infra import Operation

    _run(ctx, Operation.outputs, stack=stack, output=output, kubeconfig=None,
         backend_url=backend_url, secrets_provider=secrets_provider, policy=False)  # fmt: skip
