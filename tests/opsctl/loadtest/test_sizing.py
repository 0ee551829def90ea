"""Sizing a distributed run from the profile and the generator's measured costs."""

from __future__ import annotations

import pytest

from opsctl.errors import UserInputError
from opsctl.loadtest import sizing
from opsctl.loadtest.profiles import load_profile
from opsctl.loadtest.sizing import size_run

pytestmark = pytest.mark.unit


def test_peak_fits_one_small_worker() -> None:
    run = size_run(load_profile("peak"))  # 5000 users, light rates
    assert run.workers == 1
    assert run.users_per_worker == 5000
    # 5000 sessions at the measured cost each, with headroom, on top of the process itself.
    assert run.worker_memory_mib >= sizing.WORKER_BASE_MIB + 5000 * sizing.IDLE_SESSION_KIB / 1024
    assert 50 <= run.worker_cpu_milli <= 1000


def test_a_prod_sized_run_spreads_by_cpu_and_by_ports() -> None:
    peak = load_profile("peak")
    run = size_run(peak, users=1_000_000)
    by_ports = 1_000_000 / sizing.MAX_USERS_PER_WORKER
    assert run.workers >= by_ports
    assert run.users_per_worker <= sizing.MAX_USERS_PER_WORKER
    assert run.expected_cpu_cores / run.workers <= sizing.TARGET_CPU_UTILISATION
    busy = load_profile("capacity")  # 1.2 msg/s per user with fan-out: CPU-bound
    heavy = size_run(busy, users=200_000)
    assert heavy.workers > 200_000 / sizing.MAX_USERS_PER_WORKER
    assert heavy.worker_cpu_milli == 1000  # one single-threaded process: at most a core


def test_flags_override_and_say_so() -> None:
    run = size_run(load_profile("peak"), workers=4, worker_cpu="750m", worker_memory="1Gi")
    assert (run.workers, run.worker_cpu, run.worker_memory) == (4, "750m", "1024Mi")
    assert run.users_per_worker == 1250
    assert run.overridden == ("workers", "worker-cpu", "worker-memory")
    assert "given: workers, worker-cpu, worker-memory" in run.describe()


@pytest.mark.parametrize("text", ["x", "-1", "0m"])
def test_bad_cpu_is_bad_input(text: str) -> None:
    with pytest.raises(UserInputError, match="--worker-cpu"):
        size_run(load_profile("peak"), worker_cpu=text)
