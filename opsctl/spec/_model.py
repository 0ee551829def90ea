"""The typed stack spec: the single source of truth for one environment.

Field names are camelCase in YAML (Pulumi's convention) and snake_case in Python.
Every model forbids unknown fields and is strict about types, so a typo or a quoted
number is an error, not a silent default.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from opsctl.spec._units import parse_duration, parse_storage

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
# registry/path:tag or registry/path@sha256:digest; a tag or digest is mandatory.
_IMAGE_REF = re.compile(
    r"^(?P<name>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


def _dns_label(value: str) -> str:
    if not _DNS_LABEL.match(value):
        raise ValueError(
            f"'{value}' is not a DNS label (lowercase letters, digits and '-', at most 63)"
        )
    return value


def _image_ref(value: str) -> str:
    match = _IMAGE_REF.match(value)
    if match is None:
        raise ValueError(f"'{value}' is not an image reference like registry/name:1.2.3")
    if not match["tag"] and not match["digest"]:
        raise ValueError(f"'{value}' has no tag or digest; pin a version")
    if match["tag"] == "latest":
        raise ValueError(f"'{value}' uses the mutable tag 'latest'; pin a version")
    return value


def _storage(value: str) -> str:
    parse_storage(value)
    return value


def _duration(value: str) -> str:
    parse_duration(value)
    return value


def _cidr(value: str) -> str:
    try:
        network = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"'{value}' is not a CIDR block like 203.0.113.0/24 ({exc})") from None
    return str(network)


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
Cidr = Annotated[str, AfterValidator(_cidr)]
ImageRef = Annotated[str, AfterValidator(_image_ref)]
Storage = Annotated[str, AfterValidator(_storage)]
Duration = Annotated[str, AfterValidator(_duration)]
Percent = Annotated[float, Field(gt=0, lt=100)]
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class SpecModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        strict=True,
        frozen=True,
    )


class GatewaySizing(SpecModel):
    replicas: PositiveInt = Field(description="Baseline pods (the HPA's minimum).")
    max_replicas: PositiveInt = Field(description="The HPA's ceiling.")
    connections_per_pod: PositiveInt = Field(
        description="Target concurrent connections per pod; drives the HPA and capacity plans."
    )


class DispatcherSizing(SpecModel):
    replicas: PositiveInt
    max_replicas: PositiveInt


class KafkaSpec(SpecModel):
    brokers: PositiveInt
    message_partitions: PositiveInt = Field(description="Partitions of the message topic.")
    storage: Storage = Field(description="Volume size per broker.")
    replication_factor: PositiveInt
    min_insync_replicas: PositiveInt


class CassandraSpec(SpecModel):
    nodes: PositiveInt
    storage: Storage = Field(description="Volume size per node.")
    replication_factor: PositiveInt


class RedisSpec(SpecModel):
    shards: PositiveInt
    replicas_per_shard: NonNegativeInt


class MonitoringSpec(SpecModel):
    retention: Duration
    storage: Storage


class Region(SpecModel):
    name: DnsLabel
    kube_context: str = Field(min_length=1)
    role: Literal["primary", "secondary"]
    zones: list[DnsLabel] = Field(min_length=1)
    # Where this region's traffic to the other regions comes from (its NAT gateways): their
    # Kafka external listeners admit only these (docs/security.md). Required with peers.
    egress_cidrs: list[Cidr] = Field(
        default_factory=list,
        description="CIDR blocks this region's cross-region traffic leaves from; the other "
        "regions' Kafka external listener admits only these.",
    )
    peak_concurrent_users: NonNegativeInt = Field(
        description="Planned peak of concurrent users in this region."
    )
    gateway: GatewaySizing
    dispatcher: DispatcherSizing
    kafka: KafkaSpec
    cassandra: CassandraSpec
    redis: RedisSpec
    monitoring: MonitoringSpec


class Images(SpecModel):
    gateway: ImageRef
    dispatcher: ImageRef


class Slos(SpecModel):
    availability: Percent = Field(description="Percent of successful sends over 30 days.")
    delivery_latency_p99_ms: PositiveInt
    connect_success: Percent = Field(description="Percent of successful WebSocket connects.")


class ReconnectBudget(SpecModel):
    reconnects_per_second: PositiveInt = Field(
        description="Cluster-wide reconnects/s that rollouts and drains may cause."
    )


class Receiver(SpecModel):
    name: DnsLabel
    type: Literal["pagerduty", "slack", "webhook"]
    # Secrets never live in the spec, only the name of the Kubernetes Secret holding them:
    # the routing key (pagerduty), the webhook URL (slack), or a bearer token (webhook).
    secret_ref: DnsLabel | None = None
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$")] | None = None  # webhook only


class Team(SpecModel):
    name: DnsLabel
    page_receiver: DnsLabel
    ticket_receiver: DnsLabel


class Alerting(SpecModel):
    receivers: list[Receiver] = Field(min_length=1)
    teams: list[Team] = Field(min_length=1)


class Auth(SpecModel):
    """How the gateways check client tokens: RS256 against the identity provider's JWKS.

    The JWKS is the IdP's ``jwks_uri`` or a Kubernetes Secret holding ``jwks.json`` (never the
    keys themselves). With a JWKS, the issuer and the audience are required (a check in
    ``_semantics``): an IdP signs tokens for many services, and one minted for another must not
    open a session here.
    """

    jwks_url: Annotated[str, Field(pattern=r"^https://[^\s/?#]+(/[^\s]*)?$")] | None = Field(
        None, description="The IdP's jwks_uri (https); the gateways reload it without a restart."
    )
    jwks_secret_ref: DnsLabel | None = Field(
        None, description="A Secret in the gateway namespace with the key jwks.json."
    )
    issuer: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="Required value of the tokens' iss claim."
    )
    audience: Annotated[str, Field(min_length=1)] | None = Field(
        None, description="Value the tokens' aud claim must contain."
    )


Operators = Literal["managed", "external"]


class StackSpec(SpecModel):
    environment: DnsLabel
    # Required, no default: whether a stack installs operators decides what `up` and `destroy`
    # touch, so every stack says it (prod: managed; the simulated local and staging: external).
    operators: Operators = Field(
        description="managed: the stack installs the operators (cert-manager, Strimzi, "
        "cass-operator, redis-operator, Prometheus Operator) as Helm releases. external: a "
        "platform team runs them; the stack installs only their pinned CRDs (kept on destroy) "
        "and assumes the controllers run.",
    )
    images: Images
    slos: Slos
    reconnect_budget: ReconnectBudget
    alerting: Alerting
    # Optional for now (the shipped stacks predate it); a stack that sets it gets checked.
    auth: Auth | None = None
    regions: list[Region] = Field(min_length=1)

    @property
    def primary(self) -> Region:
        return next(region for region in self.regions if region.role == "primary")

    def region(self, name: str) -> Region:
        for region in self.regions:
            if region.name == name:
                return region
        raise KeyError(name)
