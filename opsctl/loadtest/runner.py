"""Run a profile with headless Locust: one master and N worker processes on this machine.

The Locust side (``loadtests/locustfile.py``; its files come from ``loadtests/reporting.py``)
writes ``timeline.jsonl`` (master, every second), ``worker-<i>.json`` (each worker) and
``master.json`` (final figures) into the run directory; this module starts the processes, shows
live progress and merges those files into one summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opsctl.errors import CheckFailed
from opsctl.loadtest.placement import format_region_targets
from opsctl.loadtest.profiles import Profile
from opsctl.loadtest.targets import Target, free_port
from opsctl.paths import REPO_ROOT
from opsctl.poll import WaitTimeout, wait_until

LOCUSTFILE = REPO_ROOT / "loadtests" / "locustfile.py"
DEFAULT_RUNS_DIR = REPO_ROOT / ".state" / "loadtest"
_START_GRACE_S = 60.0  # imports, worker connect, spawn
_STOP_GRACE_S = 10.0
_WORKER_START_SLACK_S = 2.0  # workers start their clock a little after the master's

Progress = Callable[[dict[str, Any], float], None]  # (latest timeline line, run time)


@dataclass
class RunOptions:
    profile: Profile
    profile_file: Path
    target: Target
    workers: int = 1
    out_dir: Path | None = None
    users: int | None = None  # override (capacity steps)
    duration_s: float | None = None  # override (capacity steps)
    worker_env: list[dict[str, str]] = field(default_factory=list)  # per worker, tests only


@dataclass
class RunResult:
    out_dir: Path
    summary: dict[str, Any]


def new_run_dir(base: Path = DEFAULT_RUNS_DIR, profile: str = "run") -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    path = base / f"{stamp}-{profile}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def _locust_env(options: RunOptions, out_dir: Path, run_id: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
            "LOADTEST_PROFILE": str(options.profile_file),
            "LOADTEST_TARGETS": ",".join(options.target.urls),
            "LOADTEST_REGION_TARGETS": (
                format_region_targets(options.target.regions) if options.profile.regions else ""
            ),
            "LOADTEST_JWT_SECRET_FILE": str(options.target.jwt_secret_file),
            "LOADTEST_JWT_ISSUER": options.target.jwt_issuer or "",
            "LOADTEST_JWT_AUDIENCE": options.target.jwt_audience or "",
            "LOADTEST_RUN_ID": run_id,
            "LOADTEST_OUT": str(out_dir),
            "LOADTEST_WORKERS": str(options.workers),
            "LOADTEST_DURATION_S": str(options.duration_s or ""),
        }
    )
    return env


def run_shape(
    profile: Profile, users: int | None = None, duration_s: float | None = None
) -> tuple[int, float, float]:
    """(users, spawn rate, Locust run time) of a whole profile, or of a capacity step that
    overrides users and the sending window (ramping within five seconds)."""
    count = users or profile.users
    spawn_rate = max(profile.spawn_rate, count / 5) if users else profile.spawn_rate
    run_time = (duration_s or profile.duration_s) + profile.drain_s
    if profile.stages and duration_s is None:
        run_time = profile.run_time_s
    return count, spawn_rate, run_time + _WORKER_START_SLACK_S


def run_locust(
    options: RunOptions,
    progress: Progress | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> RunResult:
    profile = options.profile
    out_dir = options.out_dir or new_run_dir(profile=profile.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_id = f"lt{uuid.uuid4().hex[:8]}"
    users, spawn_rate, run_time = run_shape(profile, options.users, options.duration_s)
    port = free_port()
    env = _locust_env(options, out_dir, run_id)
    env.update(extra_env or {})
    base = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--skip-log-setup"]
    master_cmd = [
        *base,
        "--master",
        "--headless",
        "--master-bind-host=127.0.0.1",
        f"--master-bind-port={port}",
        f"--expect-workers={options.workers}",
        f"--users={users}",
        f"--spawn-rate={spawn_rate}",
        f"--run-time={int(run_time + 0.999)}s",
        "--stop-timeout=1",
        f"--csv={out_dir / 'locust'}",
        "--csv-full-history",
        "--exit-code-on-error=0",
        "--only-summary",
    ]
    worker_cmd = [*base, "--worker", "--master-host=127.0.0.1", f"--master-port={port}"]
    procs: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    try:
        with (out_dir / "master.log").open("wb") as log:
            procs.append(
                subprocess.Popen(
                    master_cmd, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
                )
            )
        for index in range(options.workers):
            worker_env = dict(env)
            if index < len(options.worker_env):
                worker_env.update(options.worker_env[index])
            with (out_dir / f"worker-{index}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen(
                        worker_cmd,
                        cwd=REPO_ROOT,
                        env=worker_env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        _wait(procs, out_dir, run_time, started, progress)
    finally:
        _stop_all(procs)
    master_rc = procs[0].returncode if procs else None
    if not (out_dir / "master.json").is_file():
        tail = _tail(out_dir / "master.log")
        raise CheckFailed(
            f"the Locust master ended without results (exit {master_rc})",
            hint=f"log {out_dir / 'master.log'}:\n{tail}",
        )
    summary = collect(out_dir, options, users=users, run_time=run_time, run_id=run_id)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return RunResult(out_dir=out_dir, summary=summary)


def _wait(
    procs: list[subprocess.Popen[bytes]],
    out_dir: Path,
    run_time: float,
    started: float,
    progress: Progress | None,
) -> None:
    """Until the master exits: fail early on a crashed worker, show progress twice a second."""
    timeout = run_time + _START_GRACE_S
    master = procs[0]

    def master_done() -> bool:
        if master.poll() is not None:
            return True
        for index, worker in enumerate(procs[1:]):
            if worker.poll() is not None and worker.returncode not in (0, None):
                raise CheckFailed(
                    f"a Locust worker exited with {worker.returncode}",
                    hint=_tail(out_dir / f"worker-{index}.log"),
                )
        if progress is not None:
            latest = _last_line(out_dir / "timeline.jsonl")
            if latest is not None:
                progress(latest, run_time)
        return False

    try:
        left = max(started + timeout - time.monotonic(), 0.0)
        wait_until("the Locust master to finish", master_done, timeout=left, interval=0.5)
    except WaitTimeout:
        raise CheckFailed(
            f"the load test did not finish within {timeout:.0f} s", hint=f"logs in {out_dir}"
        ) from None


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + _STOP_GRACE_S
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=3)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _last_line(path: Path) -> dict[str, Any] | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            parsed: dict[str, Any] = json.loads(line)
            return parsed
        except ValueError:
            continue
    return None


def read_timeline(out_dir: Path) -> list[dict[str, Any]]:
    path = out_dir / "timeline.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def saturated(
    samples: list[list[float]], max_cpu_pct: float, max_lag_ms: float, run_of: int = 2
) -> bool:
    """True when ``run_of`` consecutive one-second samples were over a limit."""
    streak = 0
    for _t, cpu, lag in samples:
        streak = streak + 1 if cpu > max_cpu_pct or lag > max_lag_ms else 0
        if streak >= run_of:
            return True
    return False


def merge_workers(
    reports: list[Mapping[str, Any]], max_cpu_pct: float, max_lag_ms: float
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    counters: Counter[str] = Counter()
    workers = []
    for report in sorted(reports, key=lambda r: int(r.get("worker_index", 0))):
        counters.update(report.get("counters", {}))
        samples = report.get("health", [])
        workers.append(
            {
                "index": report.get("worker_index"),
                "pid": report.get("pid"),
                "cpu_max_pct": max((s[1] for s in samples), default=None),
                "lag_max_ms": max((s[2] for s in samples), default=None),
                "samples": len(samples),
                "saturated": saturated(samples, max_cpu_pct, max_lag_ms),
                "clock": report.get("clock", {}),
                "health": samples,
            }
        )
    return dict(counters), workers


def collect(
    out_dir: Path, options: RunOptions, *, users: int, run_time: float, run_id: str
) -> dict[str, Any]:
    master = json.loads((out_dir / "master.json").read_text(encoding="utf-8"))
    reports = []
    for path in sorted(out_dir.glob("worker-*.json")):
        try:
            reports.append(json.loads(path.read_text(encoding="utf-8")))
        except ValueError:
            continue
    if len(reports) < options.workers:  # fall back on what the master last heard
        seen = {r.get("worker_index") for r in reports}
        reports += [r for r in master.get("worker_reports", []) if r["worker_index"] not in seen]
    generator = options.profile.generator
    counters, workers = merge_workers(reports, generator.max_cpu_pct, generator.max_lag_ms)
    entries = master.get("entries", [])
    connect = [e for e in entries if e["type"] == "CONNECT"]
    requests = [e for e in entries if e["type"] != "DELIVER"]
    return {
        "run_id": run_id,
        "profile": options.profile.name,
        "profile_file": str(options.profile_file),
        "target": list(options.target.urls),
        "target_source": options.target.source,
        "gateways": options.target.gateways,
        "workers": options.workers,
        "users": users,
        "run_time_s": run_time,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "delivery": master.get("delivery", {}),
        "delivery_regions": master.get("delivery_regions", {}),
        "regions": regions_summary(options),
        "connect": {
            "attempts": sum(e["requests"] for e in connect),
            "failures": sum(e["failures"] for e in connect),
        },
        "requests": {
            "total": sum(e["requests"] for e in requests),
            "failures": sum(e["failures"] for e in requests),
        },
        "entries": entries,
        "errors": master.get("errors", []),
        "counters": counters,
        "workers_health": workers,
        "generator_saturated": any(w["saturated"] for w in workers),
        "storms": storm_figures(options.profile, counters, entries),
        "timeline": read_timeline(out_dir),
    }


def regions_summary(options: RunOptions) -> dict[str, Any]:
    """Where the users were placed (a profile's region mix) and each region's gateways."""
    regions = options.profile.regions
    if regions is None:
        return {}
    return {
        "mix": dict(regions.mix),
        "cross_share": regions.cross_share,
        "targets": {r: list(options.target.regions.get(r, ())) for r in regions.mix},
    }


def storm_figures(
    profile: Profile, counters: Mapping[str, int], entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Per scheduled storm: who dropped, connect success, and the time until the last is back
    (Locust's merged max of the ``STORM storm<i>`` entry; None unless every one came back)."""
    figures = []
    by_name = {e["name"]: e for e in entries if e["type"] == "STORM"}
    for index, storm in enumerate(profile.storms):
        dropped = int(counters.get(f"storm{index}_dropped", 0))
        back = int(counters.get(f"storm{index}_reconnected", 0))
        attempts = int(counters.get(f"storm{index}_attempts", 0))
        entry = by_name.get(f"storm{index}", {})
        figures.append(
            {
                "index": index,
                "at_s": storm.at_s,
                "share_pct": storm.share_pct,
                "dropped": dropped,
                "reconnected": back,
                "gave_up": int(counters.get(f"storm{index}_gave_up", 0)),
                "connect_attempts": attempts,
                "connect_success_pct": round(100.0 * back / attempts, 3) if attempts else None,
                "reconnect_p50_ms": entry.get("p50_ms"),
                "reconnect_p99_ms": entry.get("p99_ms"),
                "all_back_ms": entry.get("max_ms") if dropped and back == dropped else None,
            }
        )
    return figures
