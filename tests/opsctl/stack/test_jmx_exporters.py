"""The JMX exporter mappings for MirrorMaker 2 and Cassandra's cross-DC metrics, run in the
real agent against the real metric classes of the pinned Kafka (connect-mirror) and Cassandra
jars: each probe JVM registers the MBeans exactly as MirrorMaker 2 and Cassandra do, and the
test reads what the agent serves. And the builders mount the same MirrorMaker 2 mapping."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from opsctl.local._config import resolve_config
from opsctl.local._exporters import jmx_agent_jar, jmx_exporter_config
from opsctl.local._jvm import jar_dir
from opsctl.spec import parse_spec
from opsctl.stack import build_stack
from tests.support import shipped_spec, wait_for

# MirrorMaker 2's metrics exactly as its tasks create them (package-private API, hence the
# package): a source task for us-east -> eu-central, and a checkpoint task for the peer's
# dispatcher group.
MIRROR_PROBE = """\
package org.apache.kafka.connect.mirror;

import java.util.HashMap;
import java.util.Map;
import org.apache.kafka.common.TopicPartition;

public class MirrorMetricsProbe {
    public static void main(String[] args) throws Exception {
        Map<String, String> props = new HashMap<>();
        props.put("name", "us-east->eu-central.MirrorSourceConnector");
        props.put("connector.class", "org.apache.kafka.connect.mirror.MirrorSourceConnector");
        props.put("source.cluster.alias", "us-east");
        props.put("target.cluster.alias", "eu-central");
        props.put("task.assigned.partitions", "im.messages-0,im.deliveries-1");
        MirrorSourceMetrics source = new MirrorSourceTaskConfig(props).metrics();
        TopicPartition remote = new TopicPartition("us-east.im.messages", 0);
        source.countRecord(remote);
        source.recordAge(remote, 1500);
        source.replicationLatency(remote, 250);
        source.recordBytes(remote, 321);
        Map<String, String> checkpoint = new HashMap<>(props);
        checkpoint.put("task.consumer.groups", "im-dispatcher.us-east");
        MirrorCheckpointMetrics checkpoints = new MirrorCheckpointTaskConfig(checkpoint).metrics();
        checkpoints.checkpointLatency(
            new TopicPartition("im.messages", 0), "im-dispatcher.us-east", 40);
        System.out.println("ready");
        Thread.sleep(120_000);
    }
}
"""

CASSANDRA_PROBE = """\
import java.util.concurrent.TimeUnit;
import org.apache.cassandra.metrics.CASClientRequestMetrics;
import org.apache.cassandra.metrics.CASClientWriteRequestMetrics;
import org.apache.cassandra.metrics.HintsServiceMetrics;
import org.apache.cassandra.metrics.MessagingMetrics;

public class CassandraMetricsProbe {
    public static void main(String[] args) throws Exception {
        CASClientRequestMetrics read = new CASClientRequestMetrics("CASRead");
        CASClientWriteRequestMetrics write = new CASClientWriteRequestMetrics("CASWrite");
        write.addNano(TimeUnit.MILLISECONDS.toNanos(12));
        read.addNano(TimeUnit.MILLISECONDS.toNanos(8));
        write.timeouts.mark();
        read.unavailables.mark();
        write.unfinishedCommit.inc();
        write.conditionNotMet.inc();
        write.contention.update(3);
        HintsServiceMetrics.hintsSucceeded.mark();
        new MessagingMetrics();
        System.out.println("ready");
        Thread.sleep(120_000);
    }
}
"""


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not on PATH (Java 17 is a prerequisite, see README)")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


@contextlib.contextmanager
def _run_probe(
    tmp_path: Path, *, jars: Path, source_name: str, source: str, main: str, mapping: Path
) -> Iterator[str]:
    """Compile the probe against ``jars``, run it under the agent, yield one scrape."""
    config = resolve_config(env={})
    agent = jmx_agent_jar(config)
    if not agent.is_file() or not jars.is_dir():
        pytest.fail(f"{agent} or {jars} missing: run `make setup-demo`", pytrace=False)
    src = tmp_path / "src" / source_name
    src.parent.mkdir(parents=True)
    src.write_text(source)
    out = tmp_path / "classes"
    classpath = f"{jars}/*"
    subprocess.run(
        [_tool("javac"), "-d", str(out), "-cp", classpath, str(src)],
        check=True,
        capture_output=True,
        timeout=180,
    )
    port = _free_port()
    log = (tmp_path / "probe.log").open("w")
    process = subprocess.Popen(
        [
            _tool("java"),
            f"-javaagent:{agent}=127.0.0.1:{port}:{mapping}",
            "-cp",
            f"{out}:{classpath}",
            main,
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert process.stdout is not None
        # The probe prints "ready" once every MBean is registered (Cassandra logs to stdout
        # first); EOF means it died.
        lines = []
        while (line := process.stdout.readline()) and line.strip() != "ready":
            lines.append(line)
        assert line.strip() == "ready", (
            "".join(lines)[-2000:] + (tmp_path / "probe.log").read_text()
        )

        def served() -> bool:
            try:
                return bool(_scrape(port))
            except OSError:
                return False

        wait_for("the agent's /metrics", served, timeout=30)
        yield _scrape(port)
    finally:
        process.kill()
        process.wait(timeout=10)
        log.close()


def _series(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.mark.integration
def test_mirrormaker_mapping_matches_kafka_4_connect_mirror_mbeans(tmp_path: Path) -> None:
    config = resolve_config(env={})
    mapping = jmx_exporter_config(config, "mirrormaker")
    assert mapping.is_file()
    with _run_probe(
        tmp_path,
        jars=jar_dir(config, "connect-mirror"),
        source_name="org/apache/kafka/connect/mirror/MirrorMetricsProbe.java",
        source=MIRROR_PROBE,
        main="org.apache.kafka.connect.mirror.MirrorMetricsProbe",
        mapping=mapping,
    ) as scrape:
        series = _series(scrape)
    where = 'partition="0",source="us-east"'
    target = 'target="eu-central",topic="us-east.im.messages"'
    assert series[f"kafka_connect_mirror_records_total{{{where},{target}}}"] == 1.0
    assert series[f"kafka_connect_mirror_bytes_total{{{where},{target}}}"] == 321.0
    for stat in ("last", "max", "min", "avg"):
        age = f'kafka_connect_mirror_record_age_seconds{{{where},stat="{stat}",{target}}}'
        assert series[age] == pytest.approx(1.5), stat
        latency = (
            f'kafka_connect_mirror_replication_latency_seconds{{{where},stat="{stat}",{target}}}'
        )
        assert series[latency] == pytest.approx(0.25), stat
        checkpoint = (
            'kafka_connect_mirror_checkpoint_latency_seconds{group="im-dispatcher.us-east",'
            f'{where},stat="{stat}",target="eu-central",topic="im.messages"}}'
        )
        assert series[checkpoint] == pytest.approx(0.04), stat
    # Every mirror MBean is mapped by a rule: no default-named kafka_connect_mirror_* leaks.
    unmapped = [name for name in series if "mirrorsourceconnector" in name.lower()]
    assert unmapped == []


@pytest.mark.integration
def test_cassandra_mapping_exports_cas_hints_and_internode_latency(tmp_path: Path) -> None:
    config = resolve_config(env={})
    with _run_probe(
        tmp_path,
        jars=jar_dir(config, "cassandra"),
        source_name="CassandraMetricsProbe.java",
        source=CASSANDRA_PROBE,
        main="CassandraMetricsProbe",
        mapping=jmx_exporter_config(config, "cassandra"),
    ) as scrape:
        series = _series(scrape)
    assert series['cassandra_cas_requests_total{scope="CASWrite"}'] == 1.0
    assert series['cassandra_cas_requests_total{scope="CASRead"}'] == 1.0
    assert series['cassandra_cas_latency_seconds{quantile="0.99",scope="CASWrite"}'] > 0.01
    assert series['cassandra_cas_latency_seconds{quantile="0.5",scope="CASRead"}'] > 0.005
    assert series['cassandra_cas_timeouts_total{scope="CASWrite"}'] == 1.0
    assert series['cassandra_cas_unavailables_total{scope="CASRead"}'] == 1.0
    assert series['cassandra_cas_unfinishedcommit_total{scope="CASWrite"}'] == 1.0
    assert series["cassandra_cas_conditionnotmet_total"] == 1.0
    assert series['cassandra_cas_contention{quantile="0.99"}'] == 3.0
    assert series["cassandra_hints_hintssucceeded_total"] == 1.0
    assert "cassandra_hints_hintsfailed_total" in series
    assert "cassandra_hints_hintstimedout_total" in series
    assert 'cassandra_messaging_crossnode_latency_seconds{quantile="0.99"}' in series


@pytest.mark.unit
def test_every_mirror_maker_loads_the_shipped_mapping() -> None:
    from opsctl.paths import REPO_ROOT

    shipped = (REPO_ROOT / "alerts" / "exporters" / "mirrormaker-jmx.yaml").read_text()
    spec = parse_spec(shipped_spec("prod"))
    for plan in build_stack(spec, dashboards=[]).regions:
        objects = plan.objects()
        (mirror,) = [o for o in objects if o["kind"] == "KafkaMirrorMaker2"]
        ref = mirror["spec"]["metricsConfig"]["valueFrom"]["configMapKeyRef"]
        assert mirror["spec"]["metricsConfig"]["type"] == "jmxPrometheusExporter"
        (config,) = [
            o
            for o in objects
            if o["kind"] == "ConfigMap"
            and o["metadata"]["name"] == ref["name"]
            and o["metadata"]["namespace"] == mirror["metadata"]["namespace"]
        ]
        assert config["data"][ref["key"]] == shipped
        (monitor,) = [o for o in objects if o["kind"] == "PodMonitor"]
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        endpoint = monitor["spec"]["podMetricsEndpoints"][0]
        assert endpoint["port"] == "tcp-prometheus"
        assert {"action": "replace", "targetLabel": "region", "replacement": plan.region.name} in (
            endpoint["relabelings"]
        )
