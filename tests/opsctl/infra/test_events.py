"""How engine steps become per-region reports (pure logic; no engine)."""

from __future__ import annotations

import pytest

from opsctl.infra._events import (
    STACK_GROUP,
    StepLog,
    clean_diagnostic,
    pending,
    region_of,
    urn_parts,
)

pytestmark = pytest.mark.unit

URN = (
    "urn:pulumi:staging::imstack::imstack:region:Region$imstack:pki:Pki$kubernetes:core/v1:Secret"
    "::us-east/secret/cert-manager/im-root-ca"
)


def test_urn_parts_take_the_last_type_and_the_name() -> None:
    assert urn_parts(URN) == ("kubernetes:core/v1:Secret", "us-east/secret/cert-manager/im-root-ca")


@pytest.mark.parametrize(
    ("name", "region"),
    [
        ("eu", "eu"),
        ("eu-k8s", "eu"),
        ("eu-west/namespace/_/im", "eu-west"),  # the longest region name wins
        ("eu/im-gateway:im/im-gateway", "eu"),
        ("imstack-staging", STACK_GROUP),
    ],
)
def test_resources_are_grouped_by_the_region_in_their_name(name: str, region: str) -> None:
    assert region_of(name, ["eu", "eu-west"]) == region


def test_changes_and_drift_are_reported_per_region_listing_every_region() -> None:
    log = StepLog(regions=("eu-central", "us-east"))
    log.record(URN, "create")
    log.record(URN.replace("im-root-ca", "other"), "same")
    log.record("urn:pulumi:s::imstack::pulumi:pulumi:Stack::imstack-s", "update")
    grouped = log.by_region(log.changed())
    assert grouped["eu-central"] == {"changes": {}, "resources": []}
    assert grouped["us-east"]["changes"] == {"create": 1}
    assert grouped[STACK_GROUP]["changes"] == {"update": 1}
    drift = StepLog(regions=("us-east",))
    drift.record(URN, "update")
    drift.record(URN + "2", "same")
    assert [step.name for step in drift.drifted()] == ["us-east/secret/cert-manager/im-root-ca"]


def test_pending_counts_only_changing_ops() -> None:
    assert pending({"same": 100, "read": 1, "refresh": 2}) == 0
    assert pending({"same": 100, "create": 2, "delete": 1}) == 3


def test_diagnostics_lose_the_inline_runtime_traceback() -> None:
    text = "python inline source runtime error: boom\nTraceback (most recent call last):\n  x"
    assert clean_diagnostic(text) == "python inline source runtime error: boom"
    assert clean_diagnostic("Exception: resource monitor shut down") == ""
