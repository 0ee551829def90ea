"""One row per region: workloads, load, latency, SLO burn, backends and firing alerts; on a
multi-region stack also the home share, the cross-region replication lag and conflicts."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from opsctl.errors import UserInputError
from opsctl.spec import StackSpec
from opsctl.status._collect import QUERIES, RegionStatus, region_status

__all__ = ["NO_SHARD_MAP", "QUERIES", "RegionStatus", "collect", "parse_prometheus_urls"]

# Where the shard map is read from: the local stack's Cassandra. On clusters it lives in the
# in-cluster Cassandra, which opsctl does not reach.
NO_SHARD_MAP = (
    "no shard map source: it is read from a running local stack of this stack "
    "(opsctl local up --stack <stack>, --state-dir)"
)


def parse_prometheus_urls(values: list[str], spec: StackSpec) -> dict[str, str]:
    """REGION=URL pairs; a bare URL applies to a single-region stack."""
    names = [region.name for region in spec.regions]
    urls: dict[str, str] = {}
    for value in values:
        region, sep, url = value.partition("=")
        if not sep:
            if len(names) != 1:
                raise UserInputError(
                    f"--prometheus-url: '{value}' needs REGION=URL ({', '.join(names)})"
                )
            region, url = names[0], value
        if region not in names:
            raise UserInputError(
                f"--prometheus-url: '{region}' is not a region ({', '.join(names)})"
            )
        if not url.startswith(("http://", "https://")):
            raise UserInputError(f"--prometheus-url: '{url}' is not an http(s) URL")
        urls[region] = url.rstrip("/")
    return urls


def collect(
    spec: StackSpec,
    *,
    kubeconfig: Path | None,
    prometheus_urls: dict[str, str],
    shared_prometheus_url: str | None = None,
    shard_map: Callable[[], dict[str, float]] | None = None,
) -> list[RegionStatus]:
    """Every region in parallel; each row carries its own errors.

    ``shared_prometheus_url``: one Prometheus scraping every region (the local multi-region
    stack's), for regions without their own. ``shard_map``: returns each region's home share
    (a multi-region stack); without it, or when it fails, the rows say why.
    """
    with ThreadPoolExecutor(max_workers=max(1, len(spec.regions)) + 1) as pool:
        homes = pool.submit(shard_map) if shard_map is not None else None
        futures = [
            pool.submit(
                region_status,
                spec,
                region,
                kubeconfig=kubeconfig,
                prometheus_url=prometheus_urls.get(region.name),
                shared_prometheus_url=shared_prometheus_url,
            )
            for region in spec.regions
        ]
        rows = [future.result() for future in futures]
        if len(spec.regions) > 1:
            _add_homes(rows, homes)
        return rows


def _add_homes(rows: list[RegionStatus], homes: Future[dict[str, float]] | None) -> None:
    if homes is None:
        for row in rows:
            row.shard_map_error = NO_SHARD_MAP
        return
    try:
        share = homes.result()
    except Exception as exc:  # Cassandra unreachable, no map yet: a reason in every row
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        for row in rows:
            row.shard_map_error = f"unreachable: {message}"[:200]
        return
    for row in rows:
        row.home_share = share.get(row.region, 0.0)
