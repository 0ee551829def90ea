"""pytest plugin: one real local stack per test session.

``tests/conftest.py`` loads it (``pytest_plugins``); conftests need not import its fixtures.

The ``local_stack`` fixture starts the whole stack once (in a temporary state dir, on a free
block of ports), yields the running :class:`~opsctl.local.LocalStack` and stops it when the
session ends. ``local_stack.info`` has every URL, port and the HS256 secret path; failure tests
use ``local_stack.kill("gw-1")``, ``.stop(name)``, ``.start(name)`` and ``.restart(name)``, and
should leave the component running again (``local_stack.up()`` restores whatever is down).

``local_stack_with_cluster`` is a second full stack whose kube-state-metrics watches the
``kube_cluster`` fixture's simulated cluster (job ``kube-state-metrics`` in its Prometheus);
only tests that ask for it pay for it.

``multi_region_stack`` is the multi-region stack of the ``staging`` spec (two regions: a
Kafka, Redis, Cassandra DC, gateway and dispatcher each, a witness DC, MirrorMaker 2, one
Prometheus), also started once per session and only for the tests that ask for it;
``multi_region_stack.info.regions`` has each region's endpoints, ``.imgw_env(region)`` its
settings. Component names are ``<region>/<component>`` (``us-east/gw-1``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from opsctl.errors import OpsctlError
from opsctl.local._config import PORT_BLOCK_SIZE, LocalConfig, SpecValues, resolve_config
from opsctl.local._procs import find_free_port_block
from opsctl.local._stack import LocalStack
from opsctl.paths import DEFAULT_INFRA_DIR
from opsctl.spec import load_stack

MULTI_REGION_STACK = "staging"

if TYPE_CHECKING:
    from opsctl.cluster.pytest_plugin import KubeCluster


def start_test_stack(
    state_dir: Path,
    *,
    im: bool = True,
    gateways: int = 2,
    kubeconfig: Path | None = None,
    kube_context: str | None = None,
) -> LocalStack:
    """Bring up a stack in ``state_dir`` on a free port block; pytest.fail() with the
    component's log tail if it does not come up (nothing is left running then)."""
    config = resolve_config(
        state_dir=state_dir,
        base_port=find_free_port_block(),
        gateways=gateways,
        im=im,
        kubeconfig=kubeconfig,
        kube_context=kube_context,
        env={},  # the developer's OPSCTL_LOCAL_* must not leak into tests
    )
    return _up(LocalStack(config))


def start_multi_region_stack(
    state_dir: Path, *, stack: str = MULTI_REGION_STACK, gateways: int = 1
) -> LocalStack:
    """Bring up every region of ``stack`` in ``state_dir`` on free port blocks (one per
    region); pytest.fail() as start_test_stack does."""
    spec = SpecValues.from_spec(load_stack(DEFAULT_INFRA_DIR, stack), stack)
    regions = len(spec.region_names)
    config: LocalConfig = resolve_config(
        state_dir=state_dir,
        base_port=find_free_port_block(PORT_BLOCK_SIZE * regions),
        gateways=gateways,
        spec_stack=stack,
        regions=regions,
        env={},
    )
    return _up(LocalStack(config, spec=spec))


def _up(stack: LocalStack) -> LocalStack:
    try:
        stack.up()
    except OpsctlError as error:
        hint = f"\n  hint: {error.hint}" if error.hint else ""
        pytest.fail(f"local stack did not come up: {error.message}{hint}", pytrace=False)
    return stack


@pytest.fixture(scope="session")
def _local_stack_of_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # The stack belongs to this fixture, which only this plugin defines: a conftest that
    # re-exports ``local_stack`` (an older layout did) gets the same stack, not a second one.
    stack = start_test_stack(tmp_path_factory.mktemp("local-stack", numbered=True))
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def local_stack(_local_stack_of_session: LocalStack) -> LocalStack:
    """The running local stack (session-scoped): Redis, Kafka, Cassandra, Prometheus,
    Alertmanager, the dispatcher and two gateways. Stopped when the session ends."""
    return _local_stack_of_session


@pytest.fixture(scope="session")
def local_stack_with_cluster(
    tmp_path_factory: pytest.TempPathFactory, kube_cluster: KubeCluster
) -> Iterator[LocalStack]:
    """A full local stack (session-scoped) plus kube-state-metrics watching ``kube_cluster``.
    Stopped when the session ends, before the cluster is deleted."""
    state_dir = tmp_path_factory.mktemp("local-stack-with-cluster", numbered=True)
    stack = start_test_stack(
        state_dir, kubeconfig=kube_cluster.kubeconfig, kube_context=kube_cluster.context
    )
    try:
        yield stack
    finally:
        stack.down()


@pytest.fixture(scope="session")
def multi_region_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The running multi-region stack of the staging spec (session-scoped); stopped when the
    session ends. Only the tests that ask for it start it."""
    stack = start_multi_region_stack(tmp_path_factory.mktemp("multi-region-stack", numbered=True))
    try:
        yield stack
    finally:
        stack.down()


__all__ = [
    "local_stack",
    "local_stack_with_cluster",
    "multi_region_stack",
    "start_multi_region_stack",
    "start_test_stack",
]
