"""The local IM stack: Redis, Kafka (KRaft), Cassandra, Prometheus, Alertmanager and the IM
processes, run as supervised processes on 127.0.0.1 under one state dir.

    from opsctl.local import LocalStack, resolve_config
    stack = LocalStack(resolve_config(state_dir=path))
    info = stack.up()      # idempotent; rolls back and raises ComponentFailed on failure
    stack.kill("gw-1")     # failure drills: stop/kill/start/restart one component
    stack.down(wipe=True)

The spec (``LocalConfig.spec_stack``, ``opsctl local up --stack``) says what runs: a one-region
spec runs one copy of everything; a two-region spec (staging) runs every region on its own port
block (components named ``<region>/<component>``), one Cassandra cluster with a DC per region
plus a ``witness`` DC (127.0.0.1/.2/.3, same ports), one MirrorMaker 2 between the regions'
Kafkas, one Prometheus and one Alertmanager (``StackInfo.regions`` has each region's endpoints).

Layout, from the bottom up:

- ``_config``: ``LocalConfig`` (every port, path and size, resolved from flags, environment and
  defaults), ``HOST``, ``SpecValues`` (what the stack takes from the stack spec) and ``Site``
  (where one region's processes run: its port block, Cassandra node and DC);
- ``_errors``: the errors the stack raises; ``_health``: the health checks (Redis PING, CQL,
  Kafka metadata, HTTP);
- ``_procs``: spawning, signalling, sweeping and finding processes and ports; ``run_once``
  for one-shot steps (migrations);
- ``_jvm``: JVM flags, the ``java`` command line and the jars of Kafka, Cassandra and
  MirrorMaker 2 (``connect-mirror``);
- ``_exporters``: the metric exporters' wiring (JMX agents, redis_exporter, kube-state-metrics);
- ``_secrets``: the stack's CA, server certificate and one password per identity (generated
  once per state dir, only paths leave it); ``_cassandra_auth``: Cassandra's roles and grants,
  set up as prod's (docs/security.md);
- ``_render``: every config file a component reads, rendered by pure functions;
- ``_components``: one ``Component`` per process (command line, environment, port, health
  check, ``prepare`` step), the start and stop orders (``Phase`` and waves, ``StopGroup``)
  and the migrations run before the IM processes;
- ``_stack``: ``LocalStack``, which starts, stops, records and inspects the components;
- ``_extra_broker``: a second Kafka broker joined to a running one-region stack, for the faults
  one broker cannot show (the ``kafka-partition-leaderless`` drill);
- ``_progress``: progress output for the CLI; ``pytest_plugin``: the session-scoped stack
  fixture for tests.
"""

from opsctl.local._config import (
    DEFAULT_BASE_PORT,
    DEFAULT_STATE_DIR,
    ENV_BASE_PORT,
    ENV_GATEWAYS,
    ENV_STATE_DIR,
    PORT_BLOCK_SIZE,
    LocalConfig,
    Ports,
    parse_port_overrides,
    resolve_config,
    resolve_state_dir,
)
from opsctl.local._errors import (
    ArtifactMissing,
    ComponentFailed,
    PortInUse,
    StackConflict,
    StackNotRunning,
    UnknownComponent,
)
from opsctl.local._procs import find_free_port_block
from opsctl.local._stack import (
    ComponentStatus,
    LocalStack,
    NullReporter,
    RegionInfo,
    Reporter,
    StackInfo,
    load_recorded,
)

__all__ = [
    "DEFAULT_BASE_PORT",
    "DEFAULT_STATE_DIR",
    "ENV_BASE_PORT",
    "ENV_GATEWAYS",
    "ENV_STATE_DIR",
    "PORT_BLOCK_SIZE",
    "ArtifactMissing",
    "ComponentFailed",
    "ComponentStatus",
    "LocalConfig",
    "LocalStack",
    "NullReporter",
    "PortInUse",
    "Ports",
    "RegionInfo",
    "Reporter",
    "StackConflict",
    "StackInfo",
    "StackNotRunning",
    "UnknownComponent",
    "find_free_port_block",
    "load_recorded",
    "parse_port_overrides",
    "resolve_config",
    "resolve_state_dir",
]
