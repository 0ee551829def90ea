"""Real Prometheus scraping exporter processes that play gateway pods, and a stable Deployment
shaped like the chart's. Shared by the rollout tests and benchmarks/rollout_rollback.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

from opsctl.loadtest.targets import free_port
from opsctl.paths import REPO_ROOT
from tests.support import wait_for

PROMETHEUS = "/usr/bin/prometheus"
STABLE = "im-gateway-gateway"
CANARY_POD = f"{STABLE}-canary-7d9f8c6b5-abcde"
STABLE_POD = f"{STABLE}-5c8b7d9f4-fghij"
DISPATCHER_DEPLOYMENT = "im-gateway-dispatcher"
DISPATCHER_POD = f"{DISPATCHER_DEPLOYMENT}-6b5c4d7f8-klmno"
DISPATCHER_CANARY_POD = f"{DISPATCHER_DEPLOYMENT}-canary-7f6d5c4b9-pqrst"
OLD_IMAGE = "registry.im.internal/im/gateway:0.1.0"
NEW_IMAGE = "registry.im.internal/im/gateway:0.2.0"
OLD_DISPATCHER_IMAGE = "registry.im.internal/im/dispatcher:0.1.0"
NEW_DISPATCHER_IMAGE = "registry.im.internal/im/dispatcher:0.2.0"

HEALTHY: dict[str, Any] = {
    "rps": 80.0,
    "error_ratio": 0.0,
    "latency_ms": 40.0,
    "connections": 5000.0,
    "connect_rps": 40.0,
}
BREACHING: dict[str, Any] = {**HEALTHY, "error_ratio": 0.05, "latency_ms": 900.0}
QUIET: dict[str, Any] = {**HEALTHY, "rps": 0.3, "connect_rps": 0.3, "connections": 3.0}
DISPATCHER: dict[str, Any] = {"lag": 12.0}
# A dispatcher pod that commits batches (for the dispatcher's own signals).
CONSUMING: dict[str, Any] = {"lag": 12.0, "batch_rps": 20.0, "batch_fail_ratio": 0.0}
LAGGING: dict[str, Any] = {"lag": 5000.0, "batch_rps": 20.0, "batch_fail_ratio": 0.2}
# `rollout start` timings the lab can keep up with: Prometheus scrapes every second.
LAB_TIMINGS = {
    "steps": "50,100",
    "interval": "3s",
    "bake": "3s",
    "drain_window": "1s",
    "min_samples": "20",
}


def flags(**values: str) -> list[str]:
    """Command-line flags in order: ``flags(drain_window="1s")`` is ``--drain-window 1s``."""
    return [part for key, value in values.items() for part in (f"--{key.replace('_', '-')}", value)]


class MetricsLab:
    """Exporters (one per pod name) and a Prometheus scraping them every second."""

    def __init__(self, workdir: Path, namespace: str, pods: dict[str, dict[str, Any]]) -> None:
        self.workdir = workdir
        self.namespace = namespace
        self.pods = pods
        self.processes: list[subprocess.Popen[bytes]] = []
        self.ports: dict[str, int] = {}
        self.url = ""

    def __enter__(self) -> MetricsLab:
        try:
            return self.start()
        except BaseException:
            self.stop()  # what started before the failure
            raise

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def profile_path(self, pod: str) -> Path:
        return self.workdir / f"{pod}.json"

    def set(self, pod: str, profile: dict[str, Any]) -> None:
        staging = self.profile_path(pod).with_suffix(".tmp")
        staging.write_text(json.dumps(profile))
        staging.replace(self.profile_path(pod))

    def start(self) -> MetricsLab:
        if not Path(PROMETHEUS).is_file():
            raise AssertionError("Prometheus is missing: apt-get install prometheus")
        self.workdir.mkdir(parents=True, exist_ok=True)
        targets = []
        for pod, profile in self.pods.items():
            self.set(pod, profile)
            port = free_port()
            self.ports[pod] = port
            self.processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.opsctl.rollout.exporter",
                        "--port",
                        str(port),
                        "--profile",
                        str(self.profile_path(pod)),
                    ],
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=(self.workdir / f"{pod}.log").open("wb"),
                )
            )
            targets.append(
                {
                    "targets": [f"127.0.0.1:{port}"],
                    "labels": {"namespace": self.namespace, "pod": pod},
                }
            )
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "im-gateway", "static_configs": targets}],
        }
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.processes.append(
            subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=(self.workdir / "prometheus.log").open("wb"),
            )
        )
        wait_for("Prometheus ready", self._ready, timeout=30)
        wait_for("every exporter scraped", lambda: self.value("count(up == 1)") == len(self.pods))
        time.sleep(3.0)  # a few scrapes, so rate() windows have points
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def value(self, query: str) -> float | None:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=5.0)
        result = response.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self.processes.clear()
        shutil.rmtree(self.workdir / "tsdb", ignore_errors=True)


def chart_labels(component: str) -> dict[str, str]:
    """The labels the chart gives a component's pods, and selects them by."""
    return {
        "app.kubernetes.io/name": "im-gateway",
        "app.kubernetes.io/instance": "im-gateway",
        "app.kubernetes.io/component": component,
    }


def stable_deployment(
    namespace: str, replicas: int = 4, image: str = OLD_IMAGE, component: str = "gateway"
) -> dict[str, Any]:
    """The chart's gateway (or dispatcher) Deployment, reduced to what a rollout touches."""
    selector = chart_labels(component)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": f"im-gateway-{component}",
            "namespace": namespace,
            "labels": dict(selector),
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
            },
            "selector": {"matchLabels": dict(selector)},
            "template": {
                "metadata": {"labels": dict(selector)},
                "spec": {
                    "terminationGracePeriodSeconds": 50,
                    "containers": [
                        {"name": component, "image": image, "ports": [{"containerPort": 8080}]}
                    ],
                },
            },
        },
    }


def service(namespace: str) -> dict[str, Any]:
    selector = chart_labels("gateway")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": STABLE, "namespace": namespace},
        "spec": {"selector": selector, "ports": [{"name": "ws", "port": 80, "targetPort": 8080}]},
    }


def opsctl_subprocess(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """opsctl with the rollout group mounted, in its own process (to kill it, or to run two)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.opsctl.rollout.cli_main", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextmanager
def killed_on_exit(process: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """The process, killed if it still runs when the block ends, so none outlives a failed test."""
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


class DeploymentWatch:
    """Polls one Deployment in a thread and records every distinct (generation, image,
    strategy, minReadySeconds) it shows, so a test can assert what was applied mid-rollout.
    ``on_change`` runs in the thread for each new state (e.g. to flip an exporter profile)."""

    def __init__(
        self,
        read: Callable[[], dict[str, Any] | None],
        on_change: Callable[[dict[str, Any]], None] | None = None,
        every: float = 0.1,
    ) -> None:
        self.read = read
        self.on_change = on_change
        self.every = every
        self.states: list[dict[str, Any]] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                found = self.read()
                if found is not None:
                    spec = found["spec"]
                    state = {
                        "generation": found["metadata"]["generation"],
                        "image": spec["template"]["spec"]["containers"][0]["image"],
                        "strategy": spec.get("strategy"),
                        "minReadySeconds": spec.get("minReadySeconds", 0),
                    }
                    if not self.states or self.states[-1] != state:
                        self.states.append(state)
                        if self.on_change is not None:
                            self.on_change(state)
            except Exception as error:  # reported by stop(), not lost in the thread
                self.errors.append(error)
                return
            self._stop.wait(self.every)

    def __enter__(self) -> DeploymentWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        if self.errors:
            raise self.errors[0]
