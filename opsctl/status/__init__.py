"""One row per region: workloads, load, latency, SLO burn, backends and firing alerts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from opsctl.errors import UserInputError
from opsctl.spec import StackSpec
from opsctl.status._collect import QUERIES, RegionStatus, region_status

__all__ = ["QUERIES", "RegionStatus", "collect", "parse_prometheus_urls"]


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
    spec: StackSpec, *, kubeconfig: Path | None, prometheus_urls: dict[str, str]
) -> list[RegionStatus]:
    """Every region in parallel; each row carries its own errors."""
    with ThreadPoolExecutor(max_workers=max(1, len(spec.regions))) as pool:
        futures = [
            pool.submit(
                region_status,
                spec,
                region,
                kubeconfig=kubeconfig,
                prometheus_url=prometheus_urls.get(region.name),
            )
            for region in spec.regions
        ]
        return [future.result() for future in futures]
