"""One complete run: the SLOs that apply, reachability check, Locust, verdict, reports, terminal
output."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from opsctl import console
from opsctl.loadtest.live import live_progress, regions_table, verdict_table
from opsctl.loadtest.profiles import Profile, check_regions
from opsctl.loadtest.report import write_reports
from opsctl.loadtest.runner import RunOptions, RunResult, run_locust
from opsctl.loadtest.slo import AppliedSlo, apply_slo
from opsctl.loadtest.targets import Target, check_reachable
from opsctl.loadtest.verdict import Verdict, judge

if TYPE_CHECKING:
    from opsctl.loadtest.oncluster import ClusterRun


@dataclass(frozen=True)
class Outcome:
    result: RunResult
    verdict: Verdict
    paths: dict[str, Path]


def execute(
    profile: Profile,
    profile_file: Path,
    target: Target,
    *,
    workers: int = 1,
    out_dir: Path | None = None,
    worker_env: list[dict[str, str]] | None = None,
    show: bool = True,
) -> Outcome:
    """Run ``profile`` against ``target``, judged against the target's stack SLOs (or the
    profile's override): a bad override fails here, before any load."""
    applied = apply_slo(profile, target.stack_slos(), profile_file)
    check_regions(profile, profile_file, target.regions, target.source)
    check_reachable(target)
    if profile.regions is not None:  # every gateway a user of the mix may connect to
        mixed = tuple(u for r in profile.regions.mix for u in target.regions[r])
        check_reachable(replace(target, urls=tuple(u for u in mixed if u not in target.urls)))
    options = RunOptions(
        profile=profile,
        profile_file=profile_file,
        target=target,
        workers=workers,
        out_dir=out_dir,
        worker_env=worker_env or [],
    )
    err = console.console
    label = f"{profile.name} -> {len(target.urls)} gateway(s)"
    if profile.regions is not None:
        label = f"{profile.name} -> {', '.join(profile.regions.mix)}"
    with live_progress(err, show and console.verbosity >= 0, label) as progress:
        result = run_locust(options, progress)
    return _judge_and_report(result, applied, show)


def execute_on_cluster(cluster_run: ClusterRun, *, show: bool = True) -> Outcome:
    """The same, as a distributed run in the region's cluster: the SLOs and sizing are
    settled (and shown) before anything is created."""
    profile = cluster_run.profile
    if profile.regions is not None:
        from opsctl.errors import UserInputError

        raise UserInputError(
            f"profile {profile.name}: a region mix (regions:) runs from this machine only",
            hint="drop --on-cluster, or run one region per cluster without regions:",
        )
    applied = apply_slo(profile, cluster_run.target.target.stack_slos(), cluster_run.profile_file)
    console.info(f"sizing: {cluster_run.sizing.describe()}")
    console.info(f"image: {cluster_run.target.image}; target: {', '.join(cluster_run.target.urls)}")
    label = f"{profile.name} -> {cluster_run.target.region} ({cluster_run.sizing.workers} workers)"
    with live_progress(console.console, show and console.verbosity >= 0, label) as progress:
        result = cluster_run.execute(progress)
    return _judge_and_report(result, applied, show)


def _judge_and_report(result: RunResult, applied: AppliedSlo, show: bool) -> Outcome:
    err = console.console
    profile = result.summary["profile"]
    verdict = judge(result.summary, applied)
    paths = write_reports(result.out_dir, result.summary, verdict)
    if show and console.verbosity >= 0:
        verdict_table(err, verdict, f"{profile}: {verdict.status.value.upper()}")
        if result.summary.get("delivery_regions"):
            regions_table(err, result.summary["delivery_regions"])
    console.info(f"report: {paths['html']}")
    console.info(
        f"summary: {paths['summary']}  csv: {paths['verdict_csv']}, {paths['timeline']},"
        f" {paths['locust_csv']}"
    )
    return Outcome(result=result, verdict=verdict, paths=paths)
