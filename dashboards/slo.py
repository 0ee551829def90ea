"""SLO overview: burn rates per window and the error budget left, for every SLO in the spec."""

from __future__ import annotations

from grafana_foundation_sdk.builders import common, dashboard, stat

from dashboards._common import DATASOURCE, base, query, series
from opsctl.alerts._slo import BURN_RATES, slis
from opsctl.spec import StackSpec

UID = "im-slo-overview"


def build(spec: StackSpec) -> dashboard.Dashboard:
    board = base(
        UID,
        "IM / SLO overview",
        "Burn rate of each SLO's 30-day error budget (1 = burning exactly the budget) and the "
        "budget left. Thresholds come from the stack spec; one Prometheus per region, so pick "
        "the region with the data source.",
    )
    page_fast = max(factor for _, _, _, factor in BURN_RATES)
    for sli in slis(spec.slos):
        budget = round(1 - sli.objective, 10)
        board = board.with_row(dashboard.Row(f"{sli.title} ({sli.objective * 100:g}%)"))
        board = board.with_panel(
            stat.Panel()
            .title(f"{sli.name}: error budget left (30 days)")
            .unit("percentunit")
            .datasource(DATASOURCE)
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
            .with_target(
                query(f'im:slo_error_budget_remaining:ratio{{slo="{sli.name}"}}', "budget left")
            )
            .height(8)
            .span(6)
        )
        burn_windows = [("5m", "5m"), ("1h", "1h"), ("6h", "6h"), ("3d", "3d")]
        board = board.with_panel(
            series(
                f"{sli.name}: burn rate",
                "x",
                *[
                    (f'im:slo_errors:ratio_rate{window}{{slo="{sli.name}"}} / {budget}', legend)
                    for window, legend in burn_windows
                ],
                description=f"Pages above {page_fast}x over 1h and 5m together.",
            ).span(18)
        )
    return board
