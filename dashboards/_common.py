"""Variables, selectors and panel helpers shared by every dashboard."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard, prometheus, timeseries
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
REGION = 'region=~"$region"'
GATEWAY = f'job="im-gateway", {REGION}, instance=~"$instance"'
DISPATCHER = f'job="im-dispatcher", {REGION}'
RELAY = f'job="im-relay", {REGION}'
TAGS = ["im-platform", "generated"]


def base(
    uid: str, title: str, description: str, *, instance_job: str = "im-gateway"
) -> dashboard.Dashboard:
    """A dashboard with the datasource, region and instance variables every view uses."""
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("utc")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            dashboard.QueryVariable("region")
            .label("Region")
            .datasource(DATASOURCE)
            .query("label_values(up, region)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_variable(
            dashboard.QueryVariable("instance")
            .label("Instance")
            .datasource(DATASOURCE)
            .query(f'label_values(up{{job="{instance_job}", {REGION}}}, instance)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )


def rate(metric: str, matchers: str) -> str:
    """``rate(metric{matchers}[$__rate_interval])``."""
    return f"rate({metric}{{{matchers}}}[{RATE}])"


def summed(expr: str, by: str = "") -> str:
    """``sum(expr)``, or ``sum by (labels) (expr)``."""
    return f"sum by ({by}) ({expr})" if by else f"sum({expr})"


def gateway_rate(metric: str, *, by: str = "") -> str:
    """The gateways' summed per-second rate of ``metric`` (optionally by some labels)."""
    return summed(rate(metric, GATEWAY), by=by)


def dispatcher_rate(metric: str, *, by: str = "") -> str:
    """The dispatchers' summed per-second rate of ``metric`` (optionally by some labels)."""
    return summed(rate(metric, DISPATCHER), by=by)


def relay_rate(metric: str, *, by: str = "") -> str:
    """The relays' summed per-second rate of ``metric`` (optionally by some labels)."""
    return summed(rate(metric, RELAY), by=by)


def quantiles(buckets: str, *levels: float) -> tuple[tuple[str, str], ...]:
    """``series`` targets for the given quantiles of a histogram, legends p50, p99, ..."""
    return tuple((f"histogram_quantile({q:g}, {buckets})", f"p{q * 100:g}") for q in levels)


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return (
        prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    )


def series(
    title: str, unit: str, *targets: tuple[str, str], description: str = ""
) -> timeseries.Panel:
    """A time series panel; targets are (PromQL, legend) pairs."""
    panel = (
        timeseries.Panel()
        .title(title)
        .unit(unit)
        .datasource(DATASOURCE)
        .description(description)
        .line_width(1)
        .fill_opacity(10)
        .height(8)
        .span(12)
    )
    for index, (expr, legend) in enumerate(targets):
        panel = panel.with_target(query(expr, legend, chr(ord("A") + index)))
    return panel
