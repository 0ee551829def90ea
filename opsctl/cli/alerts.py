"""opsctl alerts: build, lint, test and ship the alert rules and their routing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opsctl.cli._options import OutputOption, StackOption, settings
from opsctl.settings import OutputFormat, Settings

if TYPE_CHECKING:
    from opsctl.spec import StackSpec

app = typer.Typer(help="Alert rules and routing as code: build, lint, test, render.")

OutDirOption = Annotated[
    Path, typer.Option("--out", help="Directory to write into (created if missing).")
]
RulesDirOption = Annotated[
    Path | None,
    typer.Option(
        "--rules-dir", help="Rule sources to use instead of alerts/rules.", file_okay=False
    ),
]
RegionOption = Annotated[
    str | None, typer.Option("--region", "-r", help="Only this region (default: every region).")
]


def _spec(
    ctx: typer.Context, stack: str | None, output: OutputFormat | None
) -> tuple[Settings, StackSpec]:
    from opsctl.spec import load_stack

    resolved = settings(ctx, stack=stack, output=output)
    return resolved, load_stack(resolved.infra_dir, resolved.stack)


def _sources(rules_dir: Path | None) -> Path:
    from opsctl.alerts import RULES_DIR

    return rules_dir or RULES_DIR


@app.command()
def build(
    ctx: typer.Context,
    *,
    rules_dir: RulesDirOption = None,
    out: OutDirOption = Path("build/alerts"),
    stack: StackOption = None,
    output: OutputOption = None,
) -> None:
    """Write the Prometheus rule files (sources + SLO rules) and alertmanager.yml for a stack."""
    from opsctl import alerts, console

    resolved, spec = _spec(ctx, stack, output)
    built = alerts.build(spec, out, _sources(rules_dir))
    files = [str(path) for path in [*built.rule_files, built.alertmanager]]
    if resolved.output is OutputFormat.json:
        console.emit_json({"stack": resolved.stack, "files": files})
    else:
        for path in files:
            console.data_console().print(path)


@app.command()
def lint(
    ctx: typer.Context,
    *,
    rules_dir: RulesDirOption = None,
    stack: StackOption = None,
    output: OutputOption = None,
) -> None:
    """Required labels, annotations and runbooks; `promtool check rules --lint=all`; amtool."""
    from opsctl import alerts, console

    resolved, spec = _spec(ctx, stack, output)
    checked = alerts.lint(spec, _sources(rules_dir))
    if resolved.output is OutputFormat.json:
        console.emit_json({"stack": resolved.stack, "checked": checked, "problems": []})
    else:
        console.info(f"[green]✓[/green] {len(checked)} rule files pass promtool lint")


@app.command("test")
def run_rule_tests(
    ctx: typer.Context,
    *,
    rules_dir: RulesDirOption = None,
    stack: StackOption = None,
    output: OutputOption = None,
) -> None:
    """Run the promtool unit tests in alerts/tests against the built rules (exit 1 on failure)."""
    from opsctl import alerts, console

    resolved, spec = _spec(ctx, stack, output)
    passed = alerts.run_tests(spec, _sources(rules_dir))
    if resolved.output is OutputFormat.json:
        console.emit_json({"stack": resolved.stack, "passed": passed})
    else:
        console.info(f"[green]✓[/green] {len(passed)} promtool test files pass")


@app.command()
def coverage(
    ctx: typer.Context,
    *,
    rules_dir: RulesDirOption = None,
    stack: StackOption = None,
    output: OutputOption = None,
) -> None:
    """Exit 1 when a rule has no test or a severity/team pair routes to no receiver."""
    from opsctl import alerts, console
    from opsctl.errors import CheckFailed

    resolved, spec = _spec(ctx, stack, output)
    gaps = alerts.coverage(spec, _sources(rules_dir))
    if resolved.output is OutputFormat.json:
        console.emit_json({"stack": resolved.stack, "gaps": gaps})
    if gaps:
        raise CheckFailed(f"{len(gaps)} coverage gaps:\n  " + "\n  ".join(gaps))
    console.info("[green]✓[/green] every rule is tested and every severity/team pair routes")


@app.command()
def render(
    ctx: typer.Context,
    *,
    rules_dir: RulesDirOption = None,
    out: OutDirOption = Path("build/alerts/render"),
    region: RegionOption = None,
    stack: StackOption = None,
    output: OutputOption = None,
) -> None:
    """Write PrometheusRule resources per region (labels kube-prometheus-stack selects on)."""
    import yaml

    from opsctl import alerts, console
    from opsctl.errors import UserInputError

    resolved, spec = _spec(ctx, stack, output)
    regions = spec.regions
    if region is not None:
        regions = [r for r in spec.regions if r.name == region]
        if not regions:
            names = ", ".join(r.name for r in spec.regions)
            raise UserInputError(
                f"--region: '{region}' is not a region of '{resolved.stack}' ({names})"
            )
    rules = alerts.ruleset(spec, _sources(rules_dir))
    written = []
    for target in regions:
        objects = alerts.prometheus_rules(spec, target, rules)
        path = out / target.name / "prometheusrules.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False, width=1000))
        written.append(str(path))
    if resolved.output is OutputFormat.json:
        console.emit_json({"stack": resolved.stack, "files": written})
    else:
        for shown in written:
            console.data_console().print(shown)
