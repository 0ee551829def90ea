"""Namespaces, default-deny NetworkPolicies and ResourceQuotas of a region."""

from __future__ import annotations

from typing import Any

from opsctl.spec import Region, StackSpec, parse_storage
from opsctl.stack import _names as n
from opsctl.stack._kafka import peer_cidrs
from opsctl.stack._model import Component, Manifest

# Pod security per namespace: our own workloads run restricted; operators' data pods need
# baseline (Cassandra and Kafka images run as fixed non-root users but ask for capabilities).
_NAMESPACES = {
    n.APP_NAMESPACE: "restricted",
    n.DATA_NAMESPACE: "baseline",
    n.MONITORING_NAMESPACE: "privileged",  # node-exporter needs host namespaces
    n.CERT_MANAGER_NAMESPACE: "restricted",
    n.STRIMZI_NAMESPACE: "restricted",
    n.CASS_OPERATOR_NAMESPACE: "restricted",
    n.REDIS_OPERATOR_NAMESPACE: "restricted",
}
# Namespaces whose traffic is denied unless a policy allows it.
DEFAULT_DENY = (n.APP_NAMESPACE, n.DATA_NAMESPACE)
_OPERATOR_NAMESPACES = (n.STRIMZI_NAMESPACE, n.CASS_OPERATOR_NAMESPACE, n.REDIS_OPERATOR_NAMESPACE)


def _namespace(spec: StackSpec, region: Region, name: str, level: str) -> Manifest:
    meta = n.metadata(spec, region, "platform", name)
    meta["labels"] |= {
        "pod-security.kubernetes.io/enforce": level,
        "pod-security.kubernetes.io/warn": level,
    }
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def _netpol(
    spec: StackSpec, region: Region, name: str, namespace: str, body: dict[str, Any]
) -> Manifest:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": n.metadata(spec, region, "platform", name, namespace),
        "spec": body,
    }


def _from_namespaces(*names: str) -> list[dict[str, Any]]:
    return [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}
        for name in names
    ]


def _ports(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port} for port in ports]


def network_policies(spec: StackSpec, region: Region) -> list[Manifest]:
    policies = []
    for namespace in DEFAULT_DENY:
        policies += [
            _netpol(
                spec,
                region,
                "default-deny",
                namespace,
                {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
            ),
            _netpol(
                spec,
                region,
                "allow-dns",
                namespace,
                {
                    "podSelector": {},
                    "policyTypes": ["Egress"],
                    "egress": [
                        {
                            "to": _from_namespaces("kube-system"),
                            "ports": [
                                {"protocol": "UDP", "port": 53},
                                {"protocol": "TCP", "port": 53},
                            ],
                        }
                    ],
                },
            ),
            _netpol(
                spec,
                region,
                "allow-same-namespace",
                namespace,
                {
                    "podSelector": {},
                    "policyTypes": ["Ingress", "Egress"],
                    "ingress": [{"from": [{"podSelector": {}}]}],
                    "egress": [{"to": [{"podSelector": {}}]}],
                },
            ),
            _netpol(
                spec,
                region,
                "allow-monitoring-scrape",
                namespace,
                {
                    "podSelector": {},
                    "policyTypes": ["Ingress"],
                    "ingress": [{"from": _from_namespaces(n.MONITORING_NAMESPACE)}],
                },
            ),
        ]
    # The data stores: the app and the operators reach in; other regions reach the TLS ports
    # that replicate, Cassandra's storage port and Kafka's external listener (for their
    # MirrorMaker 2), only from their egress addresses; the region's own nodes meet through
    # the same-namespace rule (Strimzi's own NetworkPolicy for the
    # listener admits the same, from _kafka's networkPolicyPeers).
    data_ports = _ports(n.KAFKA_PORTS["tls"], n.CASSANDRA_CQL_PORT, n.REDIS_PORT)
    cross_region = _ports(n.KAFKA_PORTS["external"], n.CASSANDRA_INTERNODE_PORT)
    peers = [{"ipBlock": {"cidr": cidr}} for cidr in peer_cidrs(spec, region)]
    # Cassandra's storage port too: it was open to any source, and a node that can reach it
    # can join the ring's gossip (internode TLS checks the certificate, not the address).
    from_peers = [{"from": peers, "ports": cross_region}] if peers else []
    policies += [
        _netpol(
            spec,
            region,
            "allow-app-clients",
            n.DATA_NAMESPACE,
            {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": _from_namespaces(n.APP_NAMESPACE), "ports": data_ports}],
            },
        ),
        _netpol(
            spec,
            region,
            "allow-operators",
            n.DATA_NAMESPACE,
            {
                "podSelector": {},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": _from_namespaces(*_OPERATOR_NAMESPACES)}],
            },
        ),
        _netpol(
            spec,
            region,
            "allow-cross-region-replication",
            n.DATA_NAMESPACE,
            {
                "podSelector": {},
                "policyTypes": ["Ingress", "Egress"],
                "ingress": from_peers,
                "egress": [{"ports": cross_region}],
            },
        ),
        _netpol(
            spec,
            region,
            "allow-kube-apiserver",
            n.DATA_NAMESPACE,
            {
                # Strimzi's and cass-operator's pods read their own resources.
                "podSelector": {},
                "policyTypes": ["Egress"],
                "egress": [{"ports": _ports(443, 6443)}],
            },
        ),
    ]
    return policies


def _quota(spec: StackSpec, region: Region, namespace: str, hard: dict[str, str]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": n.metadata(spec, region, "platform", "im-quota", namespace),
        "spec": {"hard": hard},
    }


def _gib(size: int) -> str:
    return f"{max(1, -(-size // 2**30))}Gi"


def resource_quotas(spec: StackSpec, region: Region) -> list[Manifest]:
    """Quotas sized from the spec: the HPA ceilings plus a rollout's surge, with headroom."""
    from opsctl.stack import _sizing

    app = _sizing.app_totals(region, relay=len(spec.regions) > 1)
    data = _sizing.data_totals(region)
    storage = (
        region.kafka.brokers * parse_storage(region.kafka.storage)
        + region.cassandra.nodes * parse_storage(region.cassandra.storage)
        + _sizing.kafka_controller_count(region) * parse_storage("10Gi")
        + _sizing.redis_pod_count(region) * parse_storage(_sizing.redis_storage(region))
    )
    return [
        _quota(
            spec,
            region,
            n.APP_NAMESPACE,
            {
                "pods": str(app.pods),
                "requests.cpu": f"{app.cpu_millis}m",
                "requests.memory": _gib(app.memory_bytes),
                "limits.cpu": f"{app.cpu_limit_millis}m",
                "limits.memory": _gib(app.memory_limit_bytes),
            },
        ),
        _quota(
            spec,
            region,
            n.DATA_NAMESPACE,
            {
                "pods": str(data.pods),
                "requests.cpu": f"{data.cpu_millis}m",
                "requests.memory": _gib(data.memory_bytes),
                "limits.cpu": f"{data.cpu_limit_millis}m",
                "limits.memory": _gib(data.memory_limit_bytes),
                "requests.storage": _gib(int(storage * 1.1)),
            },
        ),
    ]


def limit_ranges(spec: StackSpec, region: Region) -> list[Manifest]:
    """Defaults for containers operators create without resources, so quotas admit them."""
    from opsctl.stack._sizing import DEFAULT_CONTAINER

    cpu, memory, cpu_limit, memory_limit = DEFAULT_CONTAINER
    return [
        {
            "apiVersion": "v1",
            "kind": "LimitRange",
            "metadata": n.metadata(spec, region, "platform", "im-container-defaults", namespace),
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "defaultRequest": {"cpu": cpu, "memory": memory},
                        "default": {"cpu": cpu_limit, "memory": memory_limit},
                    }
                ]
            },
        }
        for namespace in DEFAULT_DENY
    ]


def build(spec: StackSpec, region: Region) -> Component:
    objects = [_namespace(spec, region, name, level) for name, level in _NAMESPACES.items()]
    objects += limit_ranges(spec, region)
    objects += resource_quotas(spec, region)
    objects += network_policies(spec, region)
    return Component(name="platform", type_name="Platform", objects=tuple(objects))
