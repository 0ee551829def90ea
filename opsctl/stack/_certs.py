"""cert-manager and the PKI: one root CA per environment, shared by every region.

The primary region creates the root CA (self-signed); every other region gets a copy of its
Secret, so certificates issued anywhere chain to the same root and cross-region links (Kafka
MirrorMaker 2, Cassandra internode) trust each other.
"""

from __future__ import annotations

from typing import Any

from opsctl.spec import Region, StackSpec
from opsctl.stack import _names as n
from opsctl.stack._k8s import resources, zone_spread
from opsctl.stack._model import Component, HelmRelease, Manifest, SecretCopy
from opsctl.stack._names import small
from opsctl.stack._versions import CERT_MANAGER

CERT_API = "cert-manager.io/v1"
GATEWAY_TLS_SECRET = "im-gateway-tls"
KAFKA_EXTERNAL_TLS_SECRET = "im-kafka-external-tls"
CASSANDRA_INTERNODE_TLS_SECRET = "im-cassandra-internode-tls"
_FEATURE_GATES = "AdditionalCertificateOutputFormats=true"


def _release(region: Region) -> HelmRelease:
    replicas = 1 if small(region) else 2
    pod = resources("10m", "64Mi", "200m", "256Mi")

    def part(name: str) -> dict[str, Any]:
        labels = {"app.kubernetes.io/instance": "cert-manager", "app.kubernetes.io/name": name}
        return {
            "replicaCount": replicas,
            "resources": pod,
            "podDisruptionBudget": {"enabled": replicas > 1, "maxUnavailable": 1},
            "topologySpreadConstraints": zone_spread(labels),
        }

    values: dict[str, Any] = {
        "crds": {"enabled": True, "keep": True},
        "featureGates": _FEATURE_GATES,
        **part("cert-manager"),
        "webhook": {**part("webhook"), "featureGates": _FEATURE_GATES},
        "cainjector": part("cainjector"),
        "startupapicheck": {"resources": pod},
    }
    return HelmRelease(
        name="cert-manager",
        namespace=n.CERT_MANAGER_NAMESPACE,
        chart=CERT_MANAGER.chart,
        repo=CERT_MANAGER.repo,
        version=CERT_MANAGER.version,
        values=values,
    )


def _cluster_issuer(spec: StackSpec, region: Region, name: str, body: dict[str, Any]) -> Manifest:
    return {
        "apiVersion": CERT_API,
        "kind": "ClusterIssuer",
        "metadata": n.metadata(spec, region, "pki", name),
        "spec": body,
    }


def _certificate(
    spec: StackSpec, region: Region, name: str, namespace: str, body: dict[str, Any]
) -> Manifest:
    return {
        "apiVersion": CERT_API,
        "kind": "Certificate",
        "metadata": n.metadata(spec, region, "pki", name, namespace),
        "spec": {
            "secretName": name,
            "duration": "2160h",  # 90 days
            "renewBefore": "360h",
            "privateKey": {"algorithm": "ECDSA", "size": 256, "rotationPolicy": "Always"},
            "issuerRef": {"group": "cert-manager.io", "kind": "ClusterIssuer", "name": n.CA_ISSUER},
            **body,
        },
    }


def root_ca_objects(spec: StackSpec, region: Region) -> list[Manifest]:
    return [
        _cluster_issuer(spec, region, n.SELF_SIGNED_ISSUER, {"selfSigned": {}}),
        {
            "apiVersion": CERT_API,
            "kind": "Certificate",
            "metadata": n.metadata(spec, region, "pki", n.ROOT_CA_SECRET, n.CERT_MANAGER_NAMESPACE),
            "spec": {
                "isCA": True,
                "commonName": f"im-platform {spec.environment} root CA",
                "secretName": n.ROOT_CA_SECRET,
                "duration": "87600h",  # 10 years; rotating it is a planned, cross-region event
                "privateKey": {"algorithm": "ECDSA", "size": 384},
                "issuerRef": {
                    "group": "cert-manager.io",
                    "kind": "ClusterIssuer",
                    "name": n.SELF_SIGNED_ISSUER,
                },
            },
        },
    ]


def certificates(spec: StackSpec, region: Region) -> list[Manifest]:
    domain = n.region_domain(spec, region)
    pods = f"{n.CASSANDRA_CLUSTER}-{region.name}-all-pods-service.{n.DATA_NAMESPACE}.svc"
    return [
        _certificate(
            spec,
            region,
            GATEWAY_TLS_SECRET,
            n.APP_NAMESPACE,
            {"dnsNames": [f"chat.{domain}"], "usages": ["server auth"]},
        ),
        _certificate(
            spec,
            region,
            KAFKA_EXTERNAL_TLS_SECRET,
            n.DATA_NAMESPACE,
            {
                "dnsNames": [f"kafka-bootstrap.{domain}", f"*.kafka.{domain}"],
                "usages": ["server auth"],
            },
        ),
        _certificate(
            spec,
            region,
            n.KAFKA_TLS_SECRET,
            n.DATA_NAMESPACE,
            {"dnsNames": n.kafka_dns_names(), "usages": ["server auth"]},
        ),
        _certificate(
            spec,
            region,
            n.REDIS_TLS_SECRET,
            n.DATA_NAMESPACE,
            {"dnsNames": n.redis_dns_names(), "usages": ["server auth", "client auth"]},
        ),
        _certificate(
            spec,
            region,
            n.CASSANDRA_CLIENT_TLS_SECRET,
            n.DATA_NAMESPACE,
            {
                "dnsNames": [n.cassandra_service(region).rsplit(":", 1)[0], f"*.{pods}"],
                "usages": ["server auth"],
                "additionalOutputFormats": [{"type": "CombinedPEM"}],
            },
        ),
        _certificate(
            spec,
            region,
            CASSANDRA_INTERNODE_TLS_SECRET,
            n.DATA_NAMESPACE,
            {
                "dnsNames": [n.cassandra_seed_host(spec, region), f"*.{pods}"],
                "usages": ["server auth", "client auth"],
                # Key and chain in one PEM: Cassandra's PEMBasedSslContextFactory reads it
                # directly, so no keystore password has to live in the CassandraDatacenter.
                "additionalOutputFormats": [{"type": "CombinedPEM"}],
            },
        ),
    ]


def build(spec: StackSpec, region: Region) -> Component:
    copies: tuple[SecretCopy, ...] = ()
    objects: list[Manifest] = []
    if region.role == "primary":
        objects += root_ca_objects(spec, region)
    else:
        copies = (
            SecretCopy(
                name=n.ROOT_CA_SECRET,
                namespace=n.CERT_MANAGER_NAMESPACE,
                source_region=spec.primary.name,
                source_namespace=n.CERT_MANAGER_NAMESPACE,
                source_name=n.ROOT_CA_SECRET,
            ),
        )
    objects.append(
        _cluster_issuer(spec, region, n.CA_ISSUER, {"ca": {"secretName": n.ROOT_CA_SECRET}})
    )
    objects += certificates(spec, region)
    return Component(
        name="pki",
        type_name="Pki",
        releases=(_release(region),),
        objects=tuple(objects),
        secret_copies=copies,
        depends_on=("platform",),
    )
