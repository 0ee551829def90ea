"""opsctl demo: the README's main job - a local stack, a smoke load test, its verdict, and
nothing left running afterwards."""

from __future__ import annotations

from typing import Annotated

import typer

from opsctl.cli._options import RootOptions


def demo(
    ctx: typer.Context,
    *,
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="Load profile to run against the stack.")
    ] = "smoke",
) -> None:
    """Start the local stack (own state dir and free ports), run the smoke load test, print the
    verdict and the report path, stop the stack. Exit code = the verdict's (0 pass, 1 SLO
    breached, 3 unreliable)."""
    from opsctl import console
    from opsctl.loadtest.profiles import load_profile, profile_path
    from opsctl.loadtest.session import execute
    from opsctl.loadtest.targets import Target
    from opsctl.local import LocalStack, find_free_port_block, load_recorded, resolve_config
    from opsctl.local._progress import RichReporter
    from opsctl.paths import REPO_ROOT

    resolved = RootOptions.of(ctx).settings
    loaded = load_profile(profile)  # bad input: exit 2 before anything starts
    state_dir = REPO_ROOT / ".state" / "demo"
    if load_recorded(state_dir) is not None:  # left over from an interrupted demo
        LocalStack.recorded(state_dir).down(wipe=True)
    config = resolve_config(
        state_dir=state_dir,
        base_port=find_free_port_block(),
        infra_dir=resolved.infra_dir,
    )
    reporter = RichReporter(console.console) if console.verbosity >= 0 else None
    stack = LocalStack(config, reporter=reporter)
    console.info(f"[bold]1/3[/bold] local stack up in {config.state_dir}")
    try:
        info = stack.up()
        console.info(f"[bold]2/3[/bold] '{loaded.name}' load test against {info.gateway_ws_urls}")
        target = Target(
            urls=info.gateway_ws_urls,
            jwt_secret_file=info.jwt_secret_file,
            jwt_issuer=info.jwt_issuer,
            jwt_audience=info.jwt_audience,
            gateways=len(info.gateway_ws_urls),
            source="demo local stack",
        )
        outcome = execute(loaded, profile_path(profile), target)
    finally:
        console.info("[bold]3/3[/bold] local stack down")
        stack.down(wipe=True)
    verdict = outcome.verdict
    console.data_console().print(
        f"verdict: {verdict.status.value}  report: {outcome.paths['html']}"
    )
    raise typer.Exit(int(verdict.exit_code))
