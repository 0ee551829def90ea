"""opsctl alerts: build, lint, test and ship the alert rules and their routing.

The group callback resolves ``--rules-dir`` into an :class:`AlertsTarget`; the ``silence``
group's resolves the Alertmanager into a :class:`SilenceTarget`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated

import typer

from opsctl.cli._group import OpsctlGroup, help_values
from opsctl.cli._options import (
    AlertmanagerOption,
    LocalStateDirOption,
    NamespaceOption,
    OnRoot,
    OutDirOption,
    PrometheusUrlOption,
    RegionOption,
    RootOptions,
    like,
    one_prometheus,
)
from opsctl.cli._output import (
    ObjectsFor,
    apply_command,
    print_table,
    report_files,
    write_region_files,
)

app = typer.Typer(
    cls=OpsctlGroup, help="Alert rules and routing as code: build, lint, test, render."
)

RulesDirOption = Annotated[
    Path | None,
    typer.Option(
        "--rules-dir",
        help="Rule sources to use instead of alerts/rules.",
        file_okay=False,
        show_default=False,
    ),
]


@help_values("alerts")
def _constants() -> dict[str, object]:
    from opsctl.alerts._live import MAX_SILENCE

    return {"max_silence": f"{MAX_SILENCE.days}d"}


@dataclass(frozen=True)
class AlertsTarget(OnRoot):
    """The stack and the rule sources the alerts commands work on."""

    rules_dir: Path | None

    @cached_property
    def sources(self) -> Path:
        from opsctl.alerts import RULES_DIR

        return self.rules_dir or RULES_DIR


@app.callback()
def target(ctx: typer.Context, *, rules_dir: RulesDirOption = None) -> None:
    """Every alerts command takes --rules-dir (also after it)."""
    ctx.obj = AlertsTarget(RootOptions.of(ctx), rules_dir)


@app.command()
def build(ctx: typer.Context, *, out: OutDirOption = Path("build/alerts")) -> None:
    """Write the Prometheus rule files (sources + SLO rules) and alertmanager.yml for a stack."""
    from opsctl import alerts

    target = AlertsTarget.of(ctx)
    built = alerts.build(target.spec, out, target.sources)
    report_files(target.settings, [str(path) for path in [*built.rule_files, built.alertmanager]])


@app.command()
def lint(
    ctx: typer.Context,
    *,
    prometheus_url: PrometheusUrlOption = None,
    state_dir: LocalStateDirOption = None,
) -> None:
    """Labels, annotations, runbooks; promtool --lint=all; amtool; with a live Prometheus
    (--prometheus-url or --state-dir), every metric a rule uses must exist there."""
    from opsctl import alerts, console

    target = AlertsTarget.of(ctx)
    live = None
    if prometheus_url or state_dir is not None:
        live = one_prometheus(prometheus_url, state_dir)
    checked = alerts.lint(target.spec, target.sources, prometheus_url=live)
    if target.json:
        console.emit_json({"stack": target.stack, "checked": checked, "problems": []})
    else:
        console.info(f"[green]✓[/green] {len(checked)} rule files pass promtool lint")


@app.command("test")
def run_rule_tests(ctx: typer.Context) -> None:
    """Run the promtool unit tests in alerts/tests against the built rules (exit 1 on failure)."""
    from opsctl import alerts, console

    target = AlertsTarget.of(ctx)
    passed = alerts.run_tests(target.spec, target.sources)
    if target.json:
        console.emit_json({"stack": target.stack, "passed": passed})
    else:
        console.info(f"[green]✓[/green] {len(passed)} promtool test files pass")


@app.command()
def coverage(ctx: typer.Context) -> None:
    """Exit 1 when a rule has no test or a severity/team pair routes to no receiver."""
    from opsctl import alerts, console
    from opsctl.errors import CheckFailed

    target = AlertsTarget.of(ctx)
    gaps = alerts.coverage(target.spec, target.sources)
    if target.json:
        console.emit_json({"stack": target.stack, "gaps": gaps})
    if gaps:
        raise CheckFailed(f"{len(gaps)} coverage gaps:\n  " + "\n  ".join(gaps))
    console.info("[green]✓[/green] every rule is tested and every severity/team pair routes")


@app.command()
def render(
    ctx: typer.Context,
    *,
    out: OutDirOption = Path("build/alerts/render"),
    region: RegionOption = None,
) -> None:
    """Write PrometheusRule resources per region (labels kube-prometheus-stack selects on)."""
    from opsctl import alerts
    from opsctl.kube import select_regions

    target = AlertsTarget.of(ctx)
    spec = target.spec
    rules = alerts.ruleset(spec, target.sources)
    written = write_region_files(
        out,
        select_regions(spec, region),
        "prometheusrules.yaml",
        lambda where: alerts.prometheus_rules(spec, where, rules),
    )
    report_files(target.settings, written)


@app.command("list")
def list_alerts(
    ctx: typer.Context,
    *,
    prometheus_url: PrometheusUrlOption = None,
    state_dir: LocalStateDirOption = None,
) -> None:
    """Firing and pending alerts from a Prometheus (default: the local stack's)."""
    from opsctl import console
    from opsctl.alerts import _live

    prometheus = one_prometheus(prometheus_url, state_dir)
    alerts = _live.list_alerts(prometheus)
    if RootOptions.of(ctx).json:
        console.emit_json([alert.as_dict() for alert in alerts])
        return
    print_table(
        f"alerts at {prometheus}",
        ("state", "alert", "severity", "labels", "since"),
        (
            (
                alert.state,
                alert.name,
                alert.labels.get("severity", ""),
                ", ".join(
                    f"{k}={v}"
                    for k, v in sorted(alert.labels.items())
                    if k not in {"alertname", "severity"}
                ),
                alert.active_since or "",
            )
            for alert in alerts
        ),
    )
    firing = sum(a.state == "firing" for a in alerts)
    console.info(f"{firing} firing, {sum(a.state == 'pending' for a in alerts)} pending")


silence_app = typer.Typer(cls=OpsctlGroup, help="Silences through the Alertmanager API v2.")
app.add_typer(silence_app, name="silence")


@dataclass(frozen=True)
class SilenceTarget(OnRoot):
    """The Alertmanager the silence commands talk to."""

    alertmanager_url: str | None
    state_dir: Path | None

    @cached_property
    def alertmanager(self) -> str:
        """--alertmanager-url > $OPSCTL_ALERTMANAGER_URL > the running local stack's."""
        from opsctl import endpoints

        return endpoints.alertmanager(self.alertmanager_url, self.state_dir)


@silence_app.callback()
def silence_target(
    ctx: typer.Context,
    *,
    alertmanager_url: AlertmanagerOption = None,
    state_dir: LocalStateDirOption = None,
) -> None:
    """Every silence command takes --alertmanager-url and --state-dir (also after it)."""
    ctx.obj = SilenceTarget(RootOptions.of(ctx), alertmanager_url, state_dir)


@silence_app.command("create")
def silence_create(
    ctx: typer.Context,
    *,
    author: Annotated[str, typer.Option(help="Who silences (required).")],
    comment: Annotated[str, typer.Option(help="Why: a ticket or change id (required).")],
    expires: Annotated[
        str, typer.Option(help="How long, e.g. 30m, 2h (required, at most {alerts.max_silence}).")
    ],
    matcher: Annotated[
        list[str] | None,
        typer.Option("--matcher", "-m", help="name=value, name!=value, name=~regex (repeatable)."),
    ] = None,
    namespace: Annotated[
        str | None, like(NamespaceOption, help="Scope to one namespace (deploy windows).")
    ] = None,
    region: Annotated[
        str | None, like(RegionOption, help="Scope to one region (deploy windows).")
    ] = None,
) -> None:
    """Create a silence; every input is checked before anything is sent."""
    from opsctl import console
    from opsctl.alerts import _live

    target = SilenceTarget.of(ctx)
    request = _live.SilenceRequest.build(
        matchers=matcher or [],
        author=author,
        comment=comment,
        expires=expires,
        namespace=namespace,
        region=region,
    )
    silence_id = _live.create_silence(target.alertmanager, request)
    if target.json:
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
) -> None:
    """Active and pending silences."""
    from opsctl import console
    from opsctl.alerts import _live

    target = SilenceTarget.of(ctx)
    silences = _live.list_silences(target.alertmanager, include_expired=include_expired)
    if target.json:
        console.emit_json(silences)
        return
    print_table(
        f"silences at {target.alertmanager}",
        ("id", "state", "matchers", "ends", "by", "comment"),
        (
            (
                silence["id"],
                silence["status"]["state"],
                ", ".join(_live.format_matcher(m) for m in silence["matchers"]),
                silence["endsAt"],
                silence["createdBy"],
                silence["comment"],
            )
            for silence in silences
        ),
    )


@silence_app.command("expire")
def silence_expire(
    ctx: typer.Context,
    silence_id: Annotated[str, typer.Argument(help="The silence to end now.")],
) -> None:
    """End a silence now."""
    from opsctl import console
    from opsctl.alerts import _live

    _live.expire_silence(SilenceTarget.of(ctx).alertmanager, silence_id)
    console.info(f"expired {silence_id}")


@app.command()
def diff(
    ctx: typer.Context,
    *,
    prometheus_url: PrometheusUrlOption = None,
    state_dir: LocalStateDirOption = None,
) -> None:
    """Rules in git against a live Prometheus's /api/v1/rules; exit 1 when they differ."""
    from opsctl import alerts, console
    from opsctl.alerts import _diff
    from opsctl.errors import CheckFailed

    target = AlertsTarget.of(ctx)
    wanted = alerts.ruleset(target.spec, target.sources)
    prometheus = one_prometheus(prometheus_url, state_dir)
    diffs = _diff.diff(wanted, prometheus)
    if target.json:
        console.emit_json([d.as_dict() for d in diffs])
    elif diffs:
        print_table(
            f"git ({target.stack}) vs {prometheus}",
            ("change", "group", "rule", "detail"),
            ((entry.change, entry.group, entry.rule, entry.detail) for entry in diffs),
        )
    if diffs:
        raise CheckFailed(f"{len(diffs)} rules differ between git and {prometheus}")
    console.info(f"[green]✓[/green] {prometheus} runs exactly the rules in git")


@apply_command(app, kind="PrometheusRules")
def _prometheus_rules(ctx: typer.Context) -> tuple[str, ObjectsFor]:
    """Server-side apply the PrometheusRules to each region's cluster (its kubeContext)."""
    from opsctl import alerts
    from opsctl.alerts._render import NAMESPACE

    target = AlertsTarget.of(ctx)
    spec = target.spec
    rules = alerts.ruleset(spec, target.sources)
    return NAMESPACE, lambda region: alerts.prometheus_rules(spec, region, rules)
