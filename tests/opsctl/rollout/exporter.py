"""A stand-in for one gateway (or dispatcher) pod's /metrics, driven by a profile file.

Run: python -m tests.opsctl.rollout.exporter --port P --profile FILE. The profile (JSON) gives
rates per second; counters grow by rate x elapsed time on every scrape, and the file is
re-read each time, so a test changes the pod's behaviour by rewriting it. Prometheus adds the
``namespace`` and ``pod`` labels as target labels, as the ServiceMonitor does for real pods.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector

BUCKETS_MS = (1, 5, 10, 25, 50, 100, 150, 200, 250, 300, 400, 500, 1000, 2500, 5000, 10000)
DEFAULTS: dict[str, float | None] = {
    "rps": 0.0,  # sends per second
    "error_ratio": 0.0,  # share of sends failing with reason kafka
    "latency_ms": 50.0,  # every delivery takes this long
    "connections": 0.0,
    "connect_rps": 0.0,
    "connect_fail_ratio": 0.0,  # share of connects refused with backend_error
    "abnormal_disconnect_rps": 0.0,
    "drain_disconnect_rps": 0.0,
    "lag": None,  # im_dispatcher_consumer_lag when set
    "batch_rps": None,  # dispatcher batches attempted per second, when set
    "batch_fail_ratio": 0.0,  # share of those batches retried after an error
}


class PodCollector(Collector):
    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.last = time.monotonic()
        self.totals: dict[str, float] = {}
        self.lock = threading.Lock()

    def _rates(self) -> dict[str, Any]:
        try:
            loaded = json.loads(self.profile.read_text())
        except (OSError, ValueError):
            loaded = {}
        return {**DEFAULTS, **loaded}

    def _add(self, key: str, amount: float) -> float:
        self.totals[key] = self.totals.get(key, 0.0) + amount
        return self.totals[key]

    def _dispatcher(self, rates: dict[str, Any], dt: float) -> list[Any]:
        families: list[Any] = []
        if rates["lag"] is not None:
            lag = GaugeMetricFamily(
                "im_dispatcher_consumer_lag", "records behind", labels=["partition"]
            )
            lag.add_metric(["0"], float(rates["lag"]))
            families.append(lag)
        if rates["batch_rps"] is not None:
            batches = rates["batch_rps"] * dt
            committed = self._add("batches_ok", batches * (1 - rates["batch_fail_ratio"]))
            failed = self._add("batches_failed", batches * rates["batch_fail_ratio"])
            retried = CounterMetricFamily(
                "im_dispatcher_batch_failures", "batches retried", labels=["stage"]
            )
            retried.add_metric(["persist"], failed)
            families.append(retried)
            latency = HistogramMetricFamily(
                "im_dispatcher_batch_latency_seconds", "consume to commit", labels=[]
            )
            latency.add_metric([], [("0.5", committed), ("+Inf", committed)], 0.1 * committed)
            families.append(latency)
        return families

    def collect(self) -> Iterator[Any]:
        with self.lock:
            rates = self._rates()
            now = time.monotonic()
            dt, self.last = now - self.last, now
            sends = rates["rps"] * dt
            accepted = self._add("accepted", sends * (1 - rates["error_ratio"]))
            failed = self._add("failed", sends * rates["error_ratio"])
            observed = self._add("deliveries", sends)
            self._add("latency_sum", sends * rates["latency_ms"] / 1000)
            connects = rates["connect_rps"] * dt
            ok = self._add("connect_ok", connects * (1 - rates["connect_fail_ratio"]))
            bad = self._add("connect_bad", connects * rates["connect_fail_ratio"])
            lost = self._add("lost", rates["abnormal_disconnect_rps"] * dt)
            drained = self._add("drained", rates["drain_disconnect_rps"] * dt)
            dispatcher = self._dispatcher(rates, dt)
            # Histogram buckets: everything observed so far landed at the current latency.
            for bound in BUCKETS_MS:
                if bound >= rates["latency_ms"]:
                    self._add(f"le{bound}", sends)
                else:
                    self._add(f"le{bound}", 0.0)

        counter = CounterMetricFamily("im_gateway_messages_accepted", "sends acked", labels=[])
        counter.add_metric([], accepted)
        yield counter
        failures = CounterMetricFamily("im_gateway_messages_failed", "refused", labels=["reason"])
        failures.add_metric(["kafka"], failed)
        yield failures
        histogram = HistogramMetricFamily(
            "im_gateway_delivery_latency_seconds", "delivery latency", labels=[]
        )
        buckets = [(str(bound / 1000), self.totals[f"le{bound}"]) for bound in BUCKETS_MS]
        buckets.append(("+Inf", observed))
        histogram.add_metric([], buckets, self.totals["latency_sum"])
        yield histogram
        connect = CounterMetricFamily("im_gateway_connects", "connects", labels=["reason"])
        connect.add_metric(["accepted"], ok)
        connect.add_metric(["backend_error"], bad)
        yield connect
        disconnects = CounterMetricFamily(
            "im_gateway_disconnects", "disconnects", labels=["reason"]
        )
        disconnects.add_metric(["connection_lost"], lost)
        disconnects.add_metric(["drain"], drained)
        disconnects.add_metric(["client_close"], 0.0)
        yield disconnects
        gauge = GaugeMetricFamily("im_gateway_connections_active", "open sessions", labels=[])
        gauge.add_metric([], rates["connections"])
        yield gauge
        yield from dispatcher


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--profile", type=Path, required=True)
    args = parser.parse_args()
    for name in list(REGISTRY._names_to_collectors.values()):
        with contextlib.suppress(KeyError):
            REGISTRY.unregister(name)
    REGISTRY.register(PodCollector(args.profile))
    start_http_server(args.port, addr="127.0.0.1")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()


if __name__ == "__main__":
    main()
