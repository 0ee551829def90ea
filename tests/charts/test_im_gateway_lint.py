"""`helm lint --strict` with the pinned helm, for the defaults and every ci scenario."""

from __future__ import annotations

import pytest

from tests.charts.helmkit import CHART, SCENARIOS, Helm, kube_version, scenario_file, value_args

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("scenario", ["defaults", *SCENARIOS])
def test_lint_strict_passes(helm: Helm, scenario: str) -> None:
    values = [] if scenario == "defaults" else [scenario_file(scenario)]
    result = helm.run(
        "lint", "--strict", "--kube-version", kube_version(), str(CHART), *value_args(values)
    )
    assert "[ERROR]" not in result.output
    assert "[WARNING]" not in result.output
    assert "1 chart(s) linted, 0 chart(s) failed" in result.output


def test_every_scenario_is_linted() -> None:
    # The scenarios are discovered from ci/; make sure discovery found the shipped ones.
    assert {"minimal", "production", "ingress"} <= set(SCENARIOS)


def test_lint_strict_fails_on_a_schema_violation(helm: Helm) -> None:
    """The same command must fail when the values are bad, or the passes above prove nothing."""
    result = helm.run(
        "lint",
        "--strict",
        "--kube-version",
        kube_version(),
        str(CHART),
        *value_args(sets={"gateway.replicas": "0"}),
        check=False,
    )
    assert result.returncode != 0
    assert "/gateway/replicas" in result.output
