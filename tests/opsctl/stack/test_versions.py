"""The chart pins and the CRD pins agree: custom resources are checked against the CRDs of the
operator release each chart installs."""

from __future__ import annotations

import pytest

from opsctl.cluster.crds import CRD_SOURCES, pinned_versions
from opsctl.stack import CHART_PINS, ChartPin

pytestmark = pytest.mark.unit


def test_every_chart_names_a_registered_crd_project_once() -> None:
    projects = [pin.crd_project for pin in CHART_PINS]
    assert sorted(projects) == sorted(CRD_SOURCES)


@pytest.mark.parametrize("pin", CHART_PINS, ids=lambda pin: pin.chart)
def test_chart_app_version_is_the_pinned_crd_version(pin: ChartPin) -> None:
    key = CRD_SOURCES[pin.crd_project].version_key
    assert pinned_versions()[key] == pin.app_version, (
        f"{pin.chart} {pin.version} ships {pin.app_version} but tools/go/versions.env pins "
        f"{key}={pinned_versions()[key]}"
    )
