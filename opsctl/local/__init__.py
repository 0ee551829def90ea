"""The local IM stack: Redis, Kafka (KRaft), Cassandra, Prometheus, Alertmanager and the IM
processes, run as supervised processes on 127.0.0.1 under one state dir.

    from opsctl.local import LocalStack, resolve_config
    stack = LocalStack(resolve_config(state_dir=path))
    info = stack.up()      # idempotent; rolls back and raises ComponentFailed on failure
    stack.kill("gw-1")     # failure drills: stop/kill/start/restart one component
    stack.down(wipe=True)

Layout, from the bottom up:

- ``_config``: ``LocalConfig`` (every port, path and size, resolved from flags, environment and
  defaults), ``HOST``, and ``SpecValues`` (what the stack takes from the ``local`` stack spec);
- ``_errors``: the errors the stack raises; ``_health``: the health checks (Redis PING, CQL,
  Kafka metadata, HTTP);
- ``_procs``: spawning, signalling, sweeping and finding processes and ports; ``run_once``
  for one-shot steps (migrations);
- ``_jvm``: JVM flags, the ``java`` command line and the jars of Kafka and Cassandra;
- ``_exporters``: the metric exporters' wiring (JMX agents, redis_exporter, kube-state-metrics);
- ``_render``: every config file a component reads, rendered by pure functions;
- ``_components``: one ``Component`` per process (command line, environment, port, health
  check, ``prepare`` step), and the start and stop orders (``Phase``, ``StopGroup``);
- ``_stack``: ``LocalStack``, which starts, stops, records and inspects the components;
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
