"""opsctl alerts: build, lint, test and ship the alert rules and their routing."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from opsctl.cli._options import (
    AlertmanagerOption,
    DryRunOption,
    KubeconfigOption,
    LocalStateDirOption,
    OutputOption,
    PrometheusOption,
    RegionOption,
    StackOption,
    settings,
)
from opsctl.cli._output import apply_in_namespace, report_files, write_region_files
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
    from opsctl import alerts

    resolved, spec = _spec(ctx, stack, output)
    built = alerts.build(spec, out, _sources(rules_dir))
    report_files(resolved, [str(path) for path in [*built.rule_files, built.alertmanager]])


@app.command()
def lint(
    ctx: typer.Context,
    *,
    rules_dir: RulesDirOption = None,
    prometheus_url: PrometheusOption = None,
    state_dir: LocalStateDirOption = None,
    stack: StackOption = None,
    output: OutputOption = None,
) -> None:
    """Labels, annotations, runbooks; promtool --lint=all; amtool; with a live Prometheus
    (--prometheus-url or --state-dir), every metric a rule uses must exist there."""
    from opsctl import alerts, console, endpoints

    resolved, spec = _spec(ctx, stack, output)
    live = None
    if prometheus_url is not None or state_dir is not None:
        live = endpoints.prometheus(prometheus_url, state_dir)
    checked = alerts.lint(spec, _sources(rules_dir), prometheus_url=live)
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
    from opsctl import alerts
    from opsctl.kube import select_regions

    resolved, spec = _spec(ctx, stack, output)
    regions = select_regions(spec, region)
    rules = alerts.ruleset(spec, _sources(rules_dir))
    written = write_region_files(
        out,
        regions,
        "prometheusrules.yaml",
        lambda target: alerts.prometheus_rules(spec, target, rules),
    )
    report_files(resolved, written)


@app.command("list")
def list_alerts(
    ctx: typer.Context,
    *,
    prometheus_url: PrometheusOption = None,
    state_dir: LocalStateDirOption = None,
    output: OutputOption = None,
) -> None:
    """Firing and pending alerts from a Prometheus (default: the local stack's)."""
    from rich.table import Table

    from opsctl import console, endpoints
    from opsctl.alerts import _live

    resolved = settings(ctx, output=output)
    prometheus = endpoints.prometheus(prometheus_url, state_dir)
    alerts = _live.list_alerts(prometheus)
    if resolved.output is OutputFormat.json:
        console.emit_json([alert.as_dict() for alert in alerts])
        return
    table = Table(title=f"alerts at {prometheus}", title_justify="left")
    for column in ("state", "alert", "severity", "labels", "since"):
        table.add_column(column, overflow="fold")
    for alert in alerts:
        extra = {k: v for k, v in alert.labels.items() if k not in {"alertname", "severity"}}
        table.add_row(
            alert.state,
            alert.name,
            alert.labels.get("severity", ""),
            ", ".join(f"{k}={v}" for k, v in sorted(extra.items())),
            alert.active_since or "",
        )
    console.data_console().print(table)
    console.info(f"{sum(a.state == 'firing' for a in alerts)} firing, "
                 f"{sum(a.state == 'pending' for a in alerts)} pending")  # fmt: skip


silence_app = typer.Typer(help="Silences through the Alertmanager API v2.")
app.add_typer(silence_app, name="silence")


@silence_app.command("create")
def silence_create(
    ctx: typer.Context,
    *,
    author: Annotated[str, typer.Option(help="Who silences (required).")],
    comment: Annotated[str, typer.Option(help="Why: a ticket or change id (required).")],
    expires: Annotated[str, typer.Option(help="How long, e.g. 30m, 2h (required, at most 7d).")],
    matcher: Annotated[
        list[str] | None,
        typer.Option("--matcher", "-m", help="name=value, name!=value, name=~regex (repeatable)."),
    ] = None,
    namespace: Annotated[
        str | None, typer.Option(help="Scope to one namespace (deploy windows).")
    ] = None,
    region: Annotated[
        str | None, typer.Option(help="Scope to one region (deploy windows).")
    ] = None,
    alertmanager_url: AlertmanagerOption = None,
    state_dir: LocalStateDirOption = None,
    output: OutputOption = None,
) -> None:
    """Create a silence; every input is checked before anything is sent."""
    from opsctl import console, endpoints
    from opsctl.alerts import _live

    resolved = settings(ctx, output=output)
    request = _live.SilenceRequest.build(
        matchers=matcher or [], author=author, comment=comment, expires=expires,
        namespace=namespace, region=region,
    )  # fmt: skip
    alertmanager = endpoints.alertmanager(alertmanager_url, state_dir)
    silence_id = _live.create_silence(alertmanager, request)
    if resolved.output is OutputFormat.json:
        console.emit_json({"silenceID": silence_id, "expiresIn": expires})
    else:
        console.data_console().print(silence_id)
        shown = ", ".join(_live.format_matcher(m) for m in request.matchers)
        console.info(f"silenced for {expires}: {shown}")


@silence_app.command("list")
def silence_list(
    ctx: typer.Context,
    *,
    include_expired: Annotated[bool, typer.Option(help="Also show expired silences.")] = False,
    alertmanager_url: AlertmanagerOption = None,
    state_dir: LocalStateDirOption = None,
    output: OutputOption = None,
) -> None:
    """Active and pending silences."""
    from rich.table import Table

    from opsctl import console, endpoints
    from opsctl.alerts import _live

    resolved = settings(ctx, output=output)
    alertmanager = endpoints.alertmanager(alertmanager_url, state_dir)
    silences = _live.list_silences(alertmanager, include_expired=include_expired)
    if resolved.output is OutputFormat.json:
        console.emit_json(silences)
        return
    table = Table(title=f"silences at {alertmanager}", title_justify="left")
    for column in ("id", "state", "matchers", "ends", "by", "comment"):
        table.add_column(column, overflow="fold")
    for silence in silences:
        matchers = ", ".join(_live.format_matcher(m) for m in silence["matchers"])
        table.add_row(silence["id"], silence["status"]["state"], matchers, silence["endsAt"],
                      silence["createdBy"], silence["comment"])  # fmt: skip
    console.data_console().print(table)


@silence_app.command("expire")
def silence_expire(
    ctx: typer.Context,
    silence_id: Annotated[str, typer.Argument(help="The silence to end now.")],
    *,
    alertmanager_url: AlertmanagerOption = None,
    state_dir: LocalStateDirOption = None,
) -> None:
    """End a silence now."""
    from opsctl import console, endpoints
    from opsctl.alerts import _live

    alertmanager = endpoints.alertmanager(alertmanager_url, state_dir)
    _live.expire_silence(alertmanager, silence_id)
    console.info(f"expired {silence_id}")


@app.command()
def diff(
    ctx: typer.Context,
    *,
    rules_dir: RulesDirOption = None,
    prometheus_url: PrometheusOption = None,
    state_dir: LocalStateDirOption = None,
    stack: StackOption = None,
    output: OutputOption = None,
) -> None:
    """Rules in git against a live Prometheus's /api/v1/rules; exit 1 when they differ."""
    from rich.table import Table

    from opsctl import alerts, console, endpoints
    from opsctl.alerts import _diff
    from opsctl.errors import CheckFailed

    resolved, spec = _spec(ctx, stack, output)
    wanted = alerts.ruleset(spec, _sources(rules_dir))
    prometheus = endpoints.prometheus(prometheus_url, state_dir)
    diffs = _diff.diff(wanted, prometheus)
    if resolved.output is OutputFormat.json:
        console.emit_json([d.as_dict() for d in diffs])
    elif diffs:
        table = Table(title=f"git ({resolved.stack}) vs {prometheus}", title_justify="left")
        for column in ("change", "group", "rule", "detail"):
            table.add_column(column, overflow="fold")
        for entry in diffs:
            table.add_row(entry.change, entry.group, entry.rule, entry.detail)
        console.data_console().print(table)
    if diffs:
        raise CheckFailed(f"{len(diffs)} rules differ between git and {prometheus}")
    console.info(f"[green]✓[/green] {prometheus} runs exactly the rules in git")


@app.command()
def apply(
    ctx: typer.Context,
    *,
    region: RegionOption = None,
    kubeconfig: KubeconfigOption = None,
    dry_run: DryRunOption = False,
    rules_dir: RulesDirOption = None,
    stack: StackOption = None,
    output: OutputOption = None,
) -> None:
    """Server-side apply the PrometheusRules to each region's cluster (its kubeContext)."""
    from opsctl import alerts
    from opsctl.alerts._render import NAMESPACE
    from opsctl.kube import select_regions

    resolved, spec = _spec(ctx, stack, output)
    rules = alerts.ruleset(spec, _sources(rules_dir))
    regions = select_regions(spec, region)
    apply_in_namespace(
        resolved,
        regions,
        NAMESPACE,
        lambda target: alerts.prometheus_rules(spec, target, rules),
        kubeconfig=kubeconfig,
        dry_run=dry_run,
        kind="PrometheusRules",
    )
