"""Rules that span fields. Each returns (field path, problem); the loader adds file positions."""

from __future__ import annotations

from collections.abc import Iterator

from opsctl.spec._model import Region, StackSpec
from opsctl.spec._yaml import Path

Finding = tuple[Path, str]


def _regions(spec: StackSpec) -> Iterator[Finding]:
    first_seen: dict[str, int] = {}
    for index, region in enumerate(spec.regions):
        if region.name in first_seen:
            yield (
                ("regions", index, "name"),
                f"duplicate region name '{region.name}' (also regions[{first_seen[region.name]}])",
            )
        else:
            first_seen[region.name] = index
    if len(spec.regions) > 1:
        for index, region in enumerate(spec.regions):
            if not region.egress_cidrs:
                yield (
                    ("regions", index, "egressCidrs"),
                    "required with more than one region: the other regions' Kafka admits "
                    "MirrorMaker 2 only from these addresses",
                )
    primaries = [i for i, region in enumerate(spec.regions) if region.role == "primary"]
    if not primaries:
        yield ("regions",), "no region has role 'primary'; exactly one must"
    for index in primaries[1:]:
        yield (
            ("regions", index, "role"),
            f"a second primary (regions[{primaries[0]}] is primary); exactly one region may be",
        )


def _sizing(index: int, region: Region) -> Iterator[Finding]:
    at: Path = ("regions", index)
    gateway, dispatcher = region.gateway, region.dispatcher
    if gateway.replicas > gateway.max_replicas:
        yield (
            (*at, "gateway", "replicas"),
            f"{gateway.replicas} is greater than maxReplicas ({gateway.max_replicas})",
        )
    capacity = gateway.max_replicas * gateway.connections_per_pod
    if capacity < region.peak_concurrent_users:
        yield (
            (*at, "peakConcurrentUsers"),
            f"{region.peak_concurrent_users} exceeds the gateway's maximum capacity "
            f"({gateway.max_replicas} pods x {gateway.connections_per_pod} = {capacity})",
        )
    if dispatcher.replicas > dispatcher.max_replicas:
        yield (
            (*at, "dispatcher", "replicas"),
            f"{dispatcher.replicas} is greater than maxReplicas ({dispatcher.max_replicas})",
        )
    kafka = region.kafka
    if kafka.replication_factor > kafka.brokers:
        yield (
            (*at, "kafka", "replicationFactor"),
            f"{kafka.replication_factor} is greater than the region's brokers ({kafka.brokers})",
        )
    if kafka.min_insync_replicas > kafka.replication_factor:
        yield (
            (*at, "kafka", "minInsyncReplicas"),
            f"{kafka.min_insync_replicas} is greater than replicationFactor "
            f"({kafka.replication_factor}); every produce would fail",
        )
    if kafka.message_partitions < dispatcher.max_replicas:
        yield (
            (*at, "kafka", "messagePartitions"),
            f"{kafka.message_partitions} is fewer than dispatcher.maxReplicas "
            f"({dispatcher.max_replicas}); the extra consumers would sit idle",
        )
    cassandra = region.cassandra
    if cassandra.replication_factor > cassandra.nodes:
        yield (
            (*at, "cassandra", "replicationFactor"),
            f"{cassandra.replication_factor} is greater than the region's nodes "
            f"({cassandra.nodes})",
        )
    if len(set(region.zones)) != len(region.zones):
        yield (*at, "zones"), "zones must be unique"


def _alerting(spec: StackSpec) -> Iterator[Finding]:
    names: dict[str, int] = {}
    for index, receiver in enumerate(spec.alerting.receivers):
        at: Path = ("alerting", "receivers", index)
        if receiver.name in names:
            yield (*at, "name"), f"duplicate receiver name '{receiver.name}'"
        names.setdefault(receiver.name, index)
        if receiver.type == "webhook" and receiver.url is None:
            yield (*at, "url"), "a webhook receiver needs url (secretRef, if set, holds its token)"
        if receiver.type != "webhook":
            if receiver.secret_ref is None:
                yield (*at, "secretRef"), f"a {receiver.type} receiver needs secretRef (its key)"
            if receiver.url is not None:
                yield (*at, "url"), f"a {receiver.type} receiver takes its URL from secretRef"
    teams: set[str] = set()
    for index, team in enumerate(spec.alerting.teams):
        at = ("alerting", "teams", index)
        if team.name in teams:
            yield (*at, "name"), f"duplicate team name '{team.name}'"
        teams.add(team.name)
        for field, alias in (
            ("page_receiver", "pageReceiver"),
            ("ticket_receiver", "ticketReceiver"),
        ):
            target = getattr(team, field)
            if target not in names:
                yield (*at, alias), f"unknown receiver '{target}'; known: {', '.join(names)}"


def _auth(spec: StackSpec) -> Iterator[Finding]:
    auth = spec.auth
    if auth is None:
        # Without it the chart would mount a JWKS the gateways cannot check claims against.
        yield ("auth",), "required: jwksUrl or jwksSecretRef, with issuer and audience"
        return
    if auth.jwks_url is None and auth.jwks_secret_ref is None:
        yield ("auth",), "set jwksUrl or jwksSecretRef: the gateways need the IdP's keys"
        return
    if auth.jwks_url is not None and auth.jwks_secret_ref is not None:
        yield ("auth", "jwksSecretRef"), "set jwksUrl or jwksSecretRef, not both"
    # A JWKS without both checks accepts a token the IdP minted for any service.
    if auth.issuer is None:
        yield ("auth", "issuer"), "required with a JWKS (the tokens' iss)"
    if auth.audience is None:
        yield ("auth", "audience"), "required with a JWKS (the tokens' aud)"


def check(spec: StackSpec) -> list[Finding]:
    findings = list(_regions(spec))
    for index, region in enumerate(spec.regions):
        findings.extend(_sizing(index, region))
    findings.extend(_alerting(spec))
    findings.extend(_auth(spec))
    return findings
