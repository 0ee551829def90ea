"""What a run records and summarises, in every Locust process, and the files it leaves behind.

Each process keeps its own ``Measurements``: message accounting (counters the sessions and
the sequence tracker bump), its generator health (CPU and hub lag, once a second) and its clock
estimate. Locust's own statistics hold the request and delivery latencies (``recorder``).

Files in the run directory (``LOADTEST_OUT``), merged by opsctl/loadtest/runner.py:

- ``worker-<i>.json``: each worker (or the single local process): counters, health, clock;
  rewritten with every report to the master and once more when it quits;
- ``timeline.jsonl``: the master, one line per second (live progress, the report's plots);
- ``master.json``: the master (or the single process) when it quits: every Locust entry,
  the errors, and delivery percentiles over the merged latency histogram.

Clock offsets of workers are estimated against the master's clock over Locust's own message
channel, not through the gateway: a slow or asymmetric gateway path would bias an NTP-style
estimate by half its extra delay and hide exactly the latency being measured.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from locust.env import Environment
from locust.event import Events
from locust.runners import MasterRunner, Runner, WorkerRunner

from loadtests.clock import ClockSync
from loadtests.health import HealthSampler
from loadtests.kube import PROGRESS_INTERVAL_S, PublishError, ResultsPublisher
from loadtests.session import Record
from opsctl.loadtest.placement import CROSS, SAME

HEALTH_SAMPLES_KEPT = 600  # the last ten minutes in each report to the master
ERRORS_KEPT = 50
CLOCK_ROUNDS = 1000
CLOCK_FAST_ROUNDS = 20  # the first exchanges come quickly, to correct early deliveries
PUBLISH_ATTEMPTS = 5  # the final results, with a second between tries


@dataclass
class Measurements:
    """One process's own records."""

    clock: ClockSync
    counters: Counter[str] = field(default_factory=Counter)
    health: HealthSampler = field(default_factory=HealthSampler)


def recorder(environment: Environment) -> Record:
    """A request (or delivery) into Locust's statistics; an empty type is not recorded."""

    def record(kind: str, name: str, elapsed_ms: float, error: BaseException | None) -> None:
        if not kind:
            return
        environment.events.request.fire(
            request_type=kind,
            name=name,
            response_time=elapsed_ms,
            response_length=0,
            exception=error,
            context={},
        )

    return record


def write_json(path: Path, data: Any) -> None:
    """Replace ``path`` atomically, so a reader never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)


def delivery_histogram(environment: Environment, locality: str | None = None) -> dict[int, int]:
    """Delivery latency (ms, rounded as Locust does) -> count, over every DELIVER entry, or
    only those of one ``locality`` (``cross``, ``same``: entries ``<kind>/<locality>``, which
    a profile's region mix records)."""
    merged: Counter[int] = Counter()
    for (name, method), entry in environment.stats.entries.items():
        if method == "DELIVER" and (locality is None or name.endswith(f"/{locality}")):
            merged.update(entry.response_times)
    return dict(merged)


def latency_figures(histogram: dict[int, int]) -> dict[str, Any]:
    return {
        "count": sum(histogram.values()),
        "p50_ms": percentile(histogram, 0.50),
        "p95_ms": percentile(histogram, 0.95),
        "p99_ms": percentile(histogram, 0.99),
        "max_ms": max(histogram, default=None),
    }


def percentile(histogram: dict[int, int], fraction: float) -> float | None:
    total = sum(histogram.values())
    if total <= 0:
        return None
    wanted = fraction * total
    running = 0
    for value in sorted(histogram):
        running += histogram[value]
        if running >= wanted:
            return float(value)
    return float(max(histogram))


class Reporting:
    """Locust event listeners that write the run's files; ``install`` hooks them up."""

    def __init__(
        self,
        measurements: Measurements,
        out_dir: Path,
        measure_from_s: float | None,
        *,
        pod_name: str = "",
        publisher: ResultsPublisher | None = None,
        regions: bool = False,
    ) -> None:
        self.measurements = measurements
        self.regions = regions  # the profile places users across regions
        self.out_dir = out_dir
        self.measure_from_s = measure_from_s
        self.pod_name = pod_name
        self.publisher = publisher  # master on a cluster: progress and results to a ConfigMap
        self.environment: Environment | None = None
        self.worker_reports: dict[str, dict[str, Any]] = {}  # master: last report per worker
        self.timeline_lines: list[str] = []  # master: what timeline.jsonl holds
        self._clock_greenlet: gevent.Greenlet | None = None

    def install(self, events: Events) -> None:
        events.init.add_listener(self._on_init)
        events.test_start.add_listener(self._on_test_start)
        events.report_to_master.add_listener(self._on_report_to_master)
        events.worker_report.add_listener(self._on_worker_report)
        events.quitting.add_listener(self._on_quitting)

    # ---- every process ---------------------------------------------------------------

    def snapshot(self, runner: Runner | None) -> dict[str, Any]:
        """This process's records, as worker-<i>.json and the report to the master carry them."""
        clock = self.measurements.clock
        return {
            "worker_index": getattr(runner, "worker_index", 0),
            "pid": os.getpid(),
            "counters": dict(self.measurements.counters),
            "health": self.measurements.health.samples[-HEALTH_SAMPLES_KEPT:],
            "clock": {
                "skew_ms": clock.skew_ms,
                "offset_ms": round(clock.offset_ms, 2),
                "best_rtt_ms": clock.best_rtt_ms,
                "samples": clock.samples,
                "corrected": clock.correct,
            },
            "users": runner.user_count if runner else 0,
            "pod": self.pod_name,
        }

    def _write_snapshot(self, runner: Runner | None) -> dict[str, Any]:
        snapshot = self.snapshot(runner)
        write_json(self.out_dir / f"worker-{snapshot['worker_index']}.json", snapshot)
        return snapshot

    def _on_init(self, environment: Environment, **_: Any) -> None:
        self.environment = environment
        runner = environment.runner
        if isinstance(runner, MasterRunner):
            runner.register_message("clock_ping", self._answer_clock_ping)
            if self.publisher is not None:
                gevent.spawn(self._publish_progress, environment)
        elif isinstance(runner, WorkerRunner):
            runner.register_message("clock_pong", self._take_clock_pong)

    def _on_test_start(self, environment: Environment, **_: Any) -> None:
        runner = environment.runner
        if isinstance(runner, MasterRunner):
            gevent.spawn(self._timeline, environment)
            if self.measure_from_s:
                gevent.spawn(self._reset_delivery_after, environment, self.measure_from_s)
            return
        self.measurements.health.start()
        if isinstance(runner, WorkerRunner) and self._clock_greenlet is None:
            self._clock_greenlet = gevent.spawn(self._clock_exchanges, runner)

    def _on_quitting(self, environment: Environment, **_: Any) -> None:
        if isinstance(environment.runner, MasterRunner):
            self._write_master_summary(environment)
            return
        self.measurements.health.stop()
        self._write_snapshot(environment.runner)
        if not isinstance(environment.runner, WorkerRunner):  # a single local process
            self._write_master_summary(environment)

    # ---- workers -------------------------------------------------------------------------

    def _on_report_to_master(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        if self.environment is None:
            return
        data["im"] = self._write_snapshot(self.environment.runner)

    def _take_clock_pong(self, environment: Environment, msg: Any, **_: Any) -> None:
        clock = self.measurements.clock
        clock.add_sample(float(msg.data["t0"]), float(msg.data["server"]), clock.local_ms())

    def _clock_exchanges(self, runner: WorkerRunner) -> None:
        for round_number in range(CLOCK_ROUNDS):
            runner.send_message("clock_ping", {"t0": self.measurements.clock.local_ms()})
            gevent.sleep(0.1 if round_number < CLOCK_FAST_ROUNDS else 5.0)

    # ---- master --------------------------------------------------------------------------

    def _answer_clock_ping(self, environment: Environment, msg: Any, **_: Any) -> None:
        reply = {"t0": msg.data["t0"], "server": time.time() * 1000.0}
        environment.runner.send_message("clock_pong", reply, client_id=msg.node_id)

    def _on_worker_report(self, client_id: str, data: dict[str, Any], **_: Any) -> None:
        if "im" in data:
            self.worker_reports[client_id] = data["im"]

    def worker_status(self, environment: Environment) -> dict[str, Any]:
        """Which workers the master hears from, by pod where they said (LOADTEST_POD_NAME)."""
        runner = environment.runner
        clients = list(runner.clients.values()) if isinstance(runner, MasterRunner) else []

        def name(client: Any) -> str:
            return str(self.worker_reports.get(client.id, {}).get("pod") or client.id)

        missing = [name(c) for c in clients if c.state == "missing"]
        ever = {str(r.get("pod")) for r in self.worker_reports.values() if r.get("pod")}
        return {
            "connected": len(clients) - len(missing),
            "seen": sorted(ever | {name(c) for c in clients}),
            "missing": sorted(missing),
        }

    def _publish_progress(self, environment: Environment) -> None:
        """Master on a cluster: the latest second and the workers, every couple of seconds."""
        assert self.publisher is not None
        while True:
            gevent.sleep(PROGRESS_INTERVAL_S)
            latest = json.loads(self.timeline_lines[-1]) if self.timeline_lines else {}
            runner = environment.runner
            state = runner.state if runner is not None else "?"
            progress = {"line": latest, "workers": self.worker_status(environment), "state": state}
            self.publisher.progress(progress)

    def _reset_delivery_after(self, environment: Environment, seconds: float) -> None:
        """Capacity steps: forget the delivery latencies of ramp-up and warm-up."""
        gevent.sleep(seconds)
        for (_name, method), entry in environment.stats.entries.items():
            if method == "DELIVER":
                entry.reset()

    def _timeline(self, environment: Environment) -> None:
        """One line per second for live progress and the report's time series."""
        previous: dict[int, int] = {}
        previous_counts: dict[str, int] = {}
        started = time.time()
        with (self.out_dir / "timeline.jsonl").open("a", encoding="utf-8") as out:
            while True:
                gevent.sleep(1.0)
                histogram = delivery_histogram(environment)
                window = {
                    k: v - previous.get(k, 0)
                    for k, v in histogram.items()
                    if v - previous.get(k, 0) > 0
                }
                previous = histogram
                totals = environment.stats.total
                counters: Counter[str] = Counter()
                for report in self.worker_reports.values():
                    counters.update(report["counters"])
                counts = {
                    "delivered": sum(histogram.values()),
                    "requests": totals.num_requests,
                    "failures": totals.num_failures,
                    "connects": counters["connects"],
                    "disconnects": counters["disconnects"],
                }
                deltas = {k: v - previous_counts.get(k, 0) for k, v in counts.items()}
                previous_counts = counts
                health = [r["health"][-1] for r in self.worker_reports.values() if r["health"]]
                line = {
                    "t": round(time.time() - started, 1),
                    "users": environment.runner.user_count if environment.runner else 0,
                    "msgs_per_s": deltas["delivered"],
                    "requests_per_s": deltas["requests"],
                    "failures": counts["failures"],
                    "connects_per_s": deltas["connects"],
                    "disconnects_per_s": deltas["disconnects"],
                    "p50_ms": percentile(window, 0.50),
                    "p95_ms": percentile(window, 0.95),
                    "p99_ms": percentile(window, 0.99),
                    "lost": counters["lost"],
                    "duplicated": counters["duplicated"],
                    "out_of_order": counters["out_of_order"],
                    "worker_cpu_max": max((h[1] for h in health), default=None),
                    "worker_lag_max_ms": max((h[2] for h in health), default=None),
                }
                text = json.dumps(line) + "\n"
                self.timeline_lines.append(text)
                out.write(text)
                out.flush()

    def _write_master_summary(self, environment: Environment) -> None:
        """The final aggregated Locust figures (master, or a single-process run)."""
        histogram = delivery_histogram(environment)
        entries = [
            {
                "type": method,
                "name": name,
                "requests": entry.num_requests,
                "failures": entry.num_failures,
                "avg_ms": round(entry.avg_response_time, 2),
                "p50_ms": entry.get_response_time_percentile(0.5),
                "p95_ms": entry.get_response_time_percentile(0.95),
                "p99_ms": entry.get_response_time_percentile(0.99),
                "max_ms": entry.max_response_time,
            }
            for (name, method), entry in environment.stats.entries.items()
        ]
        errors = [
            {"type": e.method, "name": e.name, "error": str(e.error), "count": e.occurrences}
            for e in environment.stats.errors.values()
        ]
        summary = {
            "delivery": latency_figures(histogram),
            # A region mix: cross-region deliveries apart from same-region ones.
            "delivery_regions": {
                locality: latency_figures(delivery_histogram(environment, locality))
                for locality in (CROSS, SAME)
            }
            if self.regions
            else {},
            "entries": entries,
            "errors": errors[:ERRORS_KEPT],
            "worker_reports": list(self.worker_reports.values()),
            "workers": self.worker_status(environment),
        }
        write_json(self.out_dir / "master.json", summary)
        if self.publisher is not None:
            self._publish_results(environment, summary)

    def _publish_results(self, environment: Environment, summary: dict[str, Any]) -> None:
        """The results to the ConfigMap, retried; the master exits 1 if they never land."""
        assert self.publisher is not None
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                self.publisher.results(summary, self.timeline_lines)
                return
            except PublishError as error:
                self.publisher.last_error = str(error)
                if attempt + 1 < PUBLISH_ATTEMPTS:
                    gevent.sleep(1.0)
        print(f"loadtest: could not publish the results: {self.publisher.last_error}", flush=True)
        environment.process_exit_code = 1
