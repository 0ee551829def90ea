"""Run outputs: summary JSON, verdict and timeline CSVs, and a self-contained HTML report.

Each says which SLOs the verdict applied (the stack's, or the profile's named override).

Plots are inline SVG drawn here (no plotting library): latency percentiles over time, users
vs throughput, connection churn, and the loss/dup/order counters.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opsctl.loadtest.verdict import Status, Verdict

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")
_W, _H, _PAD = 640, 220, 44

TIMELINE_FIELDS = (
    "t",
    "users",
    "msgs_per_s",
    "requests_per_s",
    "failures",
    "connects_per_s",
    "disconnects_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "lost",
    "duplicated",
    "out_of_order",
    "worker_cpu_max",
    "worker_lag_max_ms",
)


def svg_chart(
    title: str, series: dict[str, Sequence[tuple[float, float | None]]], unit: str
) -> str:
    """A line chart; points with a None value are left out."""
    points = [(x, y) for values in series.values() for x, y in values if y is not None]
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img">',
        f"<title>{html.escape(title)}</title>",
        f'<text x="{_PAD}" y="16" font-size="13" font-weight="bold">{html.escape(title)}</text>',
    ]
    if not points:
        parts.append(f'<text x="{_PAD}" y="{_H // 2}" font-size="12">no data</text></svg>')
        return "".join(parts)
    x_max = max(*(x for x, _ in points), 1.0)
    y_max = max(*(y for _, y in points), 1.0) * 1.1
    plot_w, plot_h = _W - 2 * _PAD, _H - 2 * _PAD

    def sx(x: float) -> float:
        return _PAD + plot_w * x / x_max

    def sy(y: float) -> float:
        return _H - _PAD - plot_h * y / y_max

    parts.append(
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - _PAD}" y2="{_H - _PAD}" stroke="#444"/>'
        f'<line x1="{_PAD}" y1="{_PAD}" x2="{_PAD}" y2="{_H - _PAD}" stroke="#444"/>'
    )
    for tick in range(5):
        y = y_max * tick / 4
        parts.append(
            f'<text x="{_PAD - 4}" y="{sy(y) + 4:.1f}" font-size="10" text-anchor="end">'
            f"{y:.3g}</text>"
            f'<line x1="{_PAD}" y1="{sy(y):.1f}" x2="{_W - _PAD}" y2="{sy(y):.1f}" '
            'stroke="#eee"/>'
        )
        x = x_max * tick / 4
        parts.append(
            f'<text x="{sx(x):.1f}" y="{_H - _PAD + 14}" font-size="10" text-anchor="middle">'
            f"{x:.0f}s</text>"
        )
    parts.append(
        f'<text x="{_W - _PAD}" y="{_PAD - 6}" font-size="10" text-anchor="end">'
        f"{html.escape(unit)}</text>"
    )
    for index, (name, values) in enumerate(series.items()):
        colour = _COLOURS[index % len(_COLOURS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values if y is not None)
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{coords}"/>'
            f'<text x="{_PAD + 8 + 110 * index}" y="{_H - 8}" font-size="11" fill="{colour}">'
            f"{html.escape(name)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _series(timeline: list[dict[str, Any]], key: str) -> list[tuple[float, float | None]]:
    return [(float(row["t"]), row.get(key)) for row in timeline]


def write_timeline_csv(path: Path, timeline: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=TIMELINE_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for row in timeline:
            writer.writerow(row)


VERDICT_FIELDS = ("check", "threshold", "measured", "status", "slo_source")


def write_verdict_csv(path: Path, verdict: Verdict) -> None:
    """One row per check; ``slo_source`` says which SLOs the thresholds came from."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(VERDICT_FIELDS)
        for check in verdict.checks:
            writer.writerow(
                (
                    check.name,
                    check.threshold,
                    check.measured,
                    check.status.value,
                    verdict.slo_source,
                )
            )


REGION_FIELDS = ("deliveries", "count", "p50_ms", "p95_ms", "p99_ms", "max_ms")
LOCALITIES = ("cross", "same")


def region_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Cross-region and same-region delivery latency (a profile's region mix), one row each;
    none without a mix."""
    by_region = summary.get("delivery_regions") or {}
    return [
        {
            "deliveries": f"{loc}-region",
            **{k: by_region.get(loc, {}).get(k) for k in REGION_FIELDS[1:]},
        }
        for loc in LOCALITIES
        if by_region
    ]


def write_regions_csv(path: Path, summary: dict[str, Any]) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=REGION_FIELDS)
        writer.writeheader()
        for row in region_rows(summary):
            writer.writerow(row)


def _regions_html(summary: dict[str, Any]) -> str:
    rows = region_rows(summary)
    if not rows:
        return ""
    placed = summary.get("regions", {})
    mix = ", ".join(f"{r} {share:g}" for r, share in placed.get("mix", {}).items())
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(row[k]))}</td>" for k in REGION_FIELDS) + "</tr>"
        for row in rows
    )
    return (
        "<h2>Delivery across regions</h2>"
        f"<p>users placed {html.escape(mix)}; cross-region DM pairs "
        f"{placed.get('cross_share', 0):g}. A delivery is cross-region when the sender's and "
        "the receiver's gateways are in different regions.</p>"
        "<table><tr>" + "".join(f"<th>{k}</th>" for k in REGION_FIELDS) + f"</tr>{cells}</table>"
    )


def render_html(summary: dict[str, Any], verdict: Verdict) -> str:
    timeline = summary.get("timeline", [])
    colour = {"pass": "#2ca02c", "fail": "#d62728", "unreliable": "#ff7f0e"}[verdict.status.value]
    rows = "".join(
        f"<tr><td>{html.escape(c.name)}</td><td>{html.escape(c.threshold)}</td>"
        f"<td>{html.escape(c.measured)}</td>"
        f'<td style="color:{"#2ca02c" if c.status is Status.passed else "#d62728"}">'
        f"{c.status.value}</td></tr>"
        for c in verdict.checks
    )
    entries = "".join(
        f"<tr><td>{html.escape(e['type'])}</td><td>{html.escape(e['name'])}</td>"
        f"<td>{e['requests']}</td><td>{e['failures']}</td><td>{e['p50_ms']}</td>"
        f"<td>{e['p95_ms']}</td><td>{e['p99_ms']}</td></tr>"
        for e in summary.get("entries", [])
    )
    workers = "".join(
        f"<tr><td>{w['index']}</td><td>{w['cpu_max_pct']}</td><td>{w['lag_max_ms']}</td>"
        f"<td>{'yes' if w['saturated'] else 'no'}</td>"
        f"<td>{w['clock'].get('offset_ms')}</td><td>{w['clock'].get('best_rtt_ms')}</td></tr>"
        for w in summary.get("workers_health", [])
    )
    counters = summary.get("counters", {})
    charts = [
        svg_chart(
            "Delivery latency percentiles (per second)",
            {p: _series(timeline, f"{p}_ms") for p in ("p50", "p95", "p99")},
            "ms",
        ),
        svg_chart(
            "Users vs throughput",
            {
                "users": _series(timeline, "users"),
                "delivered msg/s": _series(timeline, "msgs_per_s"),
            },
            "count",
        ),
        svg_chart(
            "Connection churn",
            {
                "connects/s": _series(timeline, "connects_per_s"),
                "disconnects/s": _series(timeline, "disconnects_per_s"),
            },
            "per s",
        ),
        svg_chart(
            "Loss, duplicates, out of order (cumulative)",
            {k: _series(timeline, k) for k in ("lost", "duplicated", "out_of_order")},
            "messages",
        ),
        svg_chart(
            "Generator health (worst worker)",
            {
                "cpu %": _series(timeline, "worker_cpu_max"),
                "hub lag ms": _series(timeline, "worker_lag_max_ms"),
            },
            "",
        ),
    ]
    counter_rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in sorted(counters.items())
    )
    target = html.escape(", ".join(summary.get("target", [])))
    source = html.escape(str(summary.get("target_source")))
    shape = (
        f"{summary.get('users')} users, {summary.get('workers')} workers,"
        f" run time {summary.get('run_time_s')} s"
    )
    title = f"Load test {summary.get('profile')} - {verdict.status.value.upper()}"
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:24px}}table{{border-collapse:collapse;margin:8px 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px}}svg{{display:block;margin:12px 0}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p style="font-size:20px;color:{colour}"><b>verdict: {verdict.status.value}</b>
(exit {int(verdict.exit_code)})</p>
<p>profile {html.escape(str(summary.get("profile_file")))}; target
{target} ({source}); {shape},
finished {html.escape(str(summary.get("finished_at")))}</p>
<h2>SLO checks</h2><p>judged against {html.escape(verdict.slo_source)}</p>
<table><tr><th>check</th><th>threshold</th><th>measured</th><th>status</th></tr>
{rows}</table>
{_regions_html(summary)}
<h2>Plots</h2>{"".join(charts)}
<h2>Requests</h2><table><tr><th>type</th><th>name</th><th>count</th><th>failures</th>
<th>p50 ms</th><th>p95 ms</th><th>p99 ms</th></tr>{entries}</table>
<h2>Message accounting</h2><table>{counter_rows}</table>
<h2>Workers</h2><table><tr><th>worker</th><th>max cpu %</th><th>max hub lag ms</th>
<th>saturated</th><th>clock offset ms</th><th>best rtt ms</th></tr>{workers}</table>
</body></html>
"""


def write_reports(out_dir: Path, summary: dict[str, Any], verdict: Verdict) -> dict[str, Path]:
    """Write summary.json (with the verdict), verdict.csv, timeline.csv and report.html, and
    with a region mix delivery_regions.csv; return their paths (and Locust's locust_stats.csv)."""
    summary = {**summary, "verdict": verdict.as_dict()}
    paths = {
        "summary": out_dir / "summary.json",
        "verdict_csv": out_dir / "verdict.csv",
        "timeline": out_dir / "timeline.csv",
        "html": out_dir / "report.html",
        "locust_csv": out_dir / "locust_stats.csv",
    }
    paths["summary"].write_text(json.dumps(summary, indent=2), encoding="utf-8")
    write_verdict_csv(paths["verdict_csv"], verdict)
    write_timeline_csv(paths["timeline"], summary.get("timeline", []))
    paths["html"].write_text(render_html(summary, verdict), encoding="utf-8")
    if summary.get("delivery_regions"):
        paths["regions_csv"] = out_dir / "delivery_regions.csv"
        write_regions_csv(paths["regions_csv"], summary)
    return paths
