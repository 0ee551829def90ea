"""How the local stack runs Java: JVM flags, the command line start, and the jars.

Kafka and Cassandra are the JVM services (``_components`` builds them), plus MirrorMaker 2
(Kafka's ``connect-mirror``) in a multi-region stack; their jars come from Maven Central into
the cache (``scripts/setup/jars.sh``), at the versions in ``scripts/setup/jars/versions.env``.
"""

from __future__ import annotations

from pathlib import Path

from opsctl.local._config import LocalConfig, jvm_versions
from opsctl.local._errors import ArtifactMissing

# What Cassandra 5 needs on Java 17 (module access for its off-heap, reflection and
# instrumentation tricks); mirrors the jvm17-server.options its distribution ships.
CASSANDRA_JAVA17_FLAGS = [
    "-Djdk.attach.allowAttachSelf=true",
    *(
        f"--add-exports={spec}=ALL-UNNAMED"
        for spec in (
            "java.base/jdk.internal.misc",
            "java.base/jdk.internal.ref",
            "java.base/sun.nio.ch",
            "java.management.rmi/com.sun.jmx.remote.internal.rmi",
            "java.rmi/sun.rmi.registry",
            "java.rmi/sun.rmi.server",
            "java.sql/java.sql",
            "java.base/java.lang.ref",
            "jdk.unsupported/sun.misc",
        )
    ),
    *(
        f"--add-opens={spec}=ALL-UNNAMED"
        for spec in (
            "java.base/java.lang.module",
            "java.base/jdk.internal.loader",
            "java.base/jdk.internal.ref",
            "java.base/jdk.internal.reflect",
            "java.base/jdk.internal.math",
            "java.base/jdk.internal.module",
            "java.base/jdk.internal.util.jar",
            "jdk.management/com.sun.management.internal",
            "java.base/sun.nio.ch",
            "java.base/java.io",
            "java.base/java.nio",
            "java.base/java.util.concurrent",
            "java.base/java.util.concurrent.atomic",
            "java.base/java.util",
            "java.base/java.lang",
            "java.base/java.math",
            "java.base/java.lang.reflect",
            "java.base/java.net",
        )
    ),
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]

# Start fast on one node: no waiting for gossip to settle, no ring delay, no fsync of system
# tables, no paxos rebuild. Fine for a throw-away local node, never for production.
CASSANDRA_FAST_START_FLAGS = [
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.ring_delay_ms=0",
    "-Dcassandra.unsafesystem=true",
    "-Dcassandra.skip_paxos_state_rebuild=true",
    "-Dcassandra.superuser_setup_delay_ms=0",
    # Passwords hashed with bcrypt's fewest rounds (prod keeps 10): every new connection
    # checks one, and a loaded 2-core machine took seconds per login at 10.
    "-Dcassandra.auth_bcrypt_gensalt_log2_rounds=4",
    "-Dcassandra.shutdown_announce_in_ms=0",
    # Estimating memtable row overhead inserts 100 000 rows at start by default.
    "-Dcassandra.memtable_row_overhead_computation_step=100",
]
# C1-only JIT: JVMs reach "serving" much sooner and leave CPU to the others on a small machine,
# at some cost in peak throughput (LocalConfig.jvm_quick_start turns it off).
JVM_QUICK_START_FLAGS = ["-XX:TieredStopAtLevel=1"]


def java_command(config: LocalConfig, heap: str, tuning: list[str]) -> list[str]:
    """The start of a JVM service's command line: java, its heap, GC tuning, exit on OOM."""
    return [
        str(config.java),
        "-Xms256m",  # a small initial heap: Cassandra mlockall()s what is committed at start
        f"-Xmx{heap}",
        *tuning,
        *(JVM_QUICK_START_FLAGS if config.jvm_quick_start else []),
        "-XX:+ExitOnOutOfMemoryError",
    ]


# Jar directory -> the versions.env key of its version (connect-mirror is Kafka's).
_VERSION_KEYS = {
    "kafka": "KAFKA_VERSION",
    "connect-mirror": "KAFKA_VERSION",
    "cassandra": "CASSANDRA_VERSION",
}
MIRRORMAKER_JARS = "connect-mirror"


def jar_dir(config: LocalConfig, name: str) -> Path:
    """Where scripts/setup/jars.sh put ``name``'s jars (``kafka``, ``cassandra`` or
    ``connect-mirror``)."""
    version = jvm_versions()[_VERSION_KEYS[name]]
    return config.cache_dir / "jars" / f"{name}-{version}"


def check_jars(config: LocalConfig, extra: tuple[str, ...] = ()) -> None:
    for name in ("kafka", "cassandra", *extra):
        path = jar_dir(config, name)
        if not (path / ".complete").is_file():
            raise ArtifactMissing(
                f"the {name} jars are not in the cache ({path})",
                hint="run `make setup` (scripts/setup/jars.sh fetches them from Maven Central)",
            )
