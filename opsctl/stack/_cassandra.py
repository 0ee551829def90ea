"""Cassandra with cass-operator: one CassandraDatacenter per region, all in one cluster.

Each region's datacenter seeds from the other regions' published seed names, and a Job in the
primary region sets NetworkTopologyStrategy replication for the app keyspace, the control
keyspace (the shard map: its LWTs need a majority over every DC) and the system keyspaces that
must span DCs, with each region's replication factor; then it creates the control keyspace's
tables from the gateway's own migrations (gateway/migrations/control/).
"""

from __future__ import annotations

from typing import Any

from opsctl.paths import REPO_ROOT
from opsctl.spec import Region, StackSpec
from opsctl.stack import _names as n
from opsctl.stack._certs import CASSANDRA_INTERNODE_TLS_SECRET
from opsctl.stack._k8s import RESTRICTED_CONTAINER
from opsctl.stack._model import Component, HelmRelease, Manifest
from opsctl.stack._names import small
from opsctl.stack._sizing import profile
from opsctl.stack._versions import CASS_OPERATOR, CASSANDRA_SERVER_VERSION, CASSANDRA_TOOLS_IMAGE

API = "cassandra.datastax.com/v1beta1"
SUPERUSER_SECRET = f"{n.CASSANDRA_CLUSTER}-superuser"
TLS_DIR = "/etc/cassandra-tls"
CLIENT_TLS_DIR = "/etc/cassandra-client-tls"
# The roles cass-operator creates from their Secrets (keys username, password).
ROLES = (n.CASSANDRA_MIGRATE_ROLE, *n.CASSANDRA_APP_ROLES)
# Keyspaces whose data must exist in every DC (auth would fail over badly otherwise).
SYSTEM_KEYSPACES = ("system_auth", "system_distributed", "system_traces")
# The gateway's control keyspace migrations (the shard map); gateway.migrate records them in
# the keyspace's schema_migrations when it runs (every statement is IF NOT EXISTS).
CONTROL_MIGRATIONS = REPO_ROOT / "gateway" / "migrations" / "control"
CQL_DIR = "/cql"


def _release(region: Region) -> HelmRelease:
    return HelmRelease(
        name="cass-operator",
        namespace=n.CASS_OPERATOR_NAMESPACE,
        chart=CASS_OPERATOR.chart,
        repo=CASS_OPERATOR.repo,
        version=CASS_OPERATOR.version,
        values={
            "global": {"clusterScoped": True},
            "replicaCount": 1,
            "resources": {
                "requests": {"cpu": "100m", "memory": "128Mi"},
                "limits": {"cpu": "500m", "memory": "512Mi"},
            },
            "admissionWebhooks": {"enabled": not small(region)},
        },
    )


def replication(spec: StackSpec) -> dict[str, Any]:
    """NetworkTopologyStrategy: each region's datacenter keeps its spec'd number of replicas."""
    return {
        "class": "NetworkTopologyStrategy",
        **{region.name: region.cassandra.replication_factor for region in spec.regions},
    }


def _racks(region: Region) -> list[dict[str, Any]]:
    # One rack per zone (as many as there are nodes to fill them): replicas land in distinct
    # zones because NetworkTopologyStrategy places them on distinct racks.
    zones = region.zones[: min(region.cassandra.nodes, len(region.zones))]
    return [{"name": zone, "nodeAffinityLabels": {n.ZONE_KEY: zone}} for zone in zones]


def datacenter(spec: StackSpec, region: Region) -> Manifest:
    cassandra = region.cassandra
    seeds = [n.cassandra_seed_host(spec, peer) for peer in spec.regions if peer.name != region.name]
    pod_resources = profile("cassandra", region)
    dc_spec: dict[str, Any] = {
        "clusterName": n.CASSANDRA_CLUSTER,
        "serverType": "cassandra",
        "serverVersion": CASSANDRA_SERVER_VERSION,
        "size": cassandra.nodes,
        "racks": _racks(region),
        "resources": pod_resources,
        "superuserSecretName": SUPERUSER_SECRET,
        "storageConfig": {
            "cassandraDataVolumeClaimSpec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": cassandra.storage}},
            }
        },
        "config": {
            "cassandra-yaml": {
                "num_tokens": 16,
                "authenticator": "PasswordAuthenticator",
                "authorizer": "CassandraAuthorizer",
                "server_encryption_options": {
                    "internode_encryption": "all",
                    "ssl_context_factory": {
                        "class_name": "org.apache.cassandra.security.PEMBasedSslContextFactory"
                    },
                    "keystore": f"{TLS_DIR}/tls-combined.pem",
                    "truststore": f"{TLS_DIR}/ca.crt",
                    "require_client_auth": True,
                },
                # The client port speaks TLS only; clients log in with their role's password.
                "client_encryption_options": {
                    "enabled": True,
                    "optional": False,
                    "ssl_context_factory": {
                        "class_name": "org.apache.cassandra.security.PEMBasedSslContextFactory"
                    },
                    "keystore": f"{CLIENT_TLS_DIR}/tls-combined.pem",
                    "require_client_auth": False,
                },
            },
            "jvm-server-options": {
                "initial_heap_size": "512M" if small(region) else "8G",
                "max_heap_size": "512M" if small(region) else "8G",
            },
        },
        "podTemplateSpec": {
            "spec": {
                "containers": [
                    {
                        "name": "cassandra",
                        "volumeMounts": [
                            {"name": "internode-tls", "mountPath": TLS_DIR, "readOnly": True},
                            {"name": "client-tls", "mountPath": CLIENT_TLS_DIR, "readOnly": True},
                        ],
                    }
                ],
                "volumes": [
                    {
                        "name": "internode-tls",
                        "secret": {"secretName": CASSANDRA_INTERNODE_TLS_SECRET},
                    },
                    {
                        "name": "client-tls",
                        "secret": {"secretName": n.CASSANDRA_CLIENT_TLS_SECRET},
                    },
                ],
            }
        },
    }
    if seeds:
        dc_spec["additionalSeeds"] = seeds
    # The IM roles, created (LOGIN, not superuser) by the operator from Secrets made outside
    # the stack; their permissions come from the keyspace Job (role_grants).
    dc_spec["users"] = [
        {"secretName": n.cassandra_role_secret(role), "superuser": False} for role in ROLES
    ]
    meta = n.metadata(spec, region, "cassandra", region.name, n.DATA_NAMESPACE)
    meta["annotations"] = {
        # Published for the other regions' additionalSeeds (external-dns).
        "im.platform/seed-host": n.cassandra_seed_host(spec, region),
    }
    return {"apiVersion": API, "kind": "CassandraDatacenter", "metadata": meta, "spec": dc_spec}


def _cql_map(mapping: dict[str, Any]) -> str:
    return "{" + ", ".join(f"'{key}': '{value}'" for key, value in mapping.items()) + "}"


def keyspace_cql(spec: StackSpec) -> str:
    strategy = _cql_map(replication(spec))
    lines = []
    for keyspace in (n.CASSANDRA_KEYSPACE, n.CASSANDRA_CONTROL_KEYSPACE):
        lines += [
            f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {strategy};",
            f"ALTER KEYSPACE {keyspace} WITH replication = {strategy};",
        ]
    lines += [f"ALTER KEYSPACE {name} WITH replication = {strategy};" for name in SYSTEM_KEYSPACES]
    lines += [
        f"{grant};" for grant in role_grants([n.CASSANDRA_KEYSPACE, n.CASSANDRA_CONTROL_KEYSPACE])
    ]
    return "\n".join(lines) + "\n"


def role_grants(keyspaces: list[str]) -> list[str]:
    """Least privilege, the same in prod (the keyspace Job) and locally (opsctl.local): migrate
    may create and alter keyspaces and use the IM ones (it creates their tables and the shard
    map); the gateway and the dispatcher may only read and write the IM keyspaces' rows."""
    migrate = n.CASSANDRA_MIGRATE_ROLE
    grants = [f"GRANT {p} ON ALL KEYSPACES TO {migrate}" for p in ("CREATE", "ALTER")]
    for keyspace in keyspaces:
        grants += [f"GRANT {p} ON KEYSPACE {keyspace} TO {migrate}" for p in ("SELECT", "MODIFY")]
        grants += [
            f"GRANT {p} ON KEYSPACE {keyspace} TO {role}"
            for role in n.CASSANDRA_APP_ROLES
            for p in ("SELECT", "MODIFY")
        ]
    return grants


def control_migrations() -> dict[str, str]:
    """ConfigMap keys (``control-NNNN_name.cql``) -> CQL of the control keyspace's tables."""
    return {
        f"control-{path.name}": path.read_text()
        for path in sorted(CONTROL_MIGRATIONS.glob("[0-9][0-9][0-9][0-9]_*.cql"))
    }


def keyspace_script(region: Region) -> str:
    """The Job's shell: the keyspaces first, then each control migration inside its keyspace,
    in order; any failure fails the pod (the Job retries it)."""
    host = n.cassandra_service(region).split(":")[0]
    # --ssl: the client port is TLS only (SSL_CERTFILE and SSL_VALIDATE in the env).
    cqlsh = f'cqlsh --ssl "{host}" {n.CASSANDRA_CQL_PORT} -u "$CQL_USER" -p "$CQL_PASSWORD"'
    return (
        "set -e\n"
        f"{cqlsh} -f {CQL_DIR}/keyspace.cql\n"
        f"for file in {CQL_DIR}/control-*.cql; do\n"
        f'  {cqlsh} -k {n.CASSANDRA_CONTROL_KEYSPACE} -f "$file"\n'
        "done\n"
    )


def keyspace_objects(spec: StackSpec, region: Region) -> list[Manifest]:
    """The CQL as a ConfigMap and a Job that applies it (idempotent; retried until all DCs up)."""
    name = "im-cassandra-keyspace"
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": n.metadata(spec, region, "cassandra", name, n.DATA_NAMESPACE),
        "data": {"keyspace.cql": keyspace_cql(spec), **control_migrations()},
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": n.metadata(spec, region, "cassandra", name, n.DATA_NAMESPACE),
        "spec": {
            "backoffLimit": 30,
            "template": {
                "metadata": {"labels": n.labels(spec, region, "cassandra")},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 999,
                        "runAsGroup": 999,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "cqlsh",
                            "image": CASSANDRA_TOOLS_IMAGE,
                            "command": ["sh", "-c", keyspace_script(region)],
                            "env": [
                                {
                                    "name": "CQL_USER",
                                    "valueFrom": {
                                        "secretKeyRef": {
                                            "name": SUPERUSER_SECRET,
                                            "key": "username",
                                        }
                                    },
                                },
                                {
                                    "name": "CQL_PASSWORD",
                                    "valueFrom": {
                                        "secretKeyRef": {
                                            "name": SUPERUSER_SECRET,
                                            "key": "password",
                                        }
                                    },
                                },
                                {"name": "HOME", "value": "/tmp"},
                                {"name": "SSL_CERTFILE", "value": f"{CLIENT_TLS_DIR}/ca.crt"},
                                {"name": "SSL_VALIDATE", "value": "true"},
                            ],
                            "resources": profile("job", region),
                            "securityContext": RESTRICTED_CONTAINER,
                            "volumeMounts": [
                                {"name": "cql", "mountPath": CQL_DIR, "readOnly": True},
                                {
                                    "name": "client-tls",
                                    "mountPath": CLIENT_TLS_DIR,
                                    "readOnly": True,
                                },
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "cql", "configMap": {"name": name}},
                        {
                            "name": "client-tls",
                            "secret": {
                                "secretName": n.CASSANDRA_CLIENT_TLS_SECRET,
                                "items": [{"key": n.CA_CERT_KEY, "path": n.CA_CERT_KEY}],
                            },
                        },
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    return [config, job]


def build(spec: StackSpec, region: Region) -> Component:
    objects = [datacenter(spec, region)]
    if region.role == "primary":
        objects += keyspace_objects(spec, region)
    return Component(
        name="cassandra",
        type_name="Cassandra",
        releases=(_release(region),),
        objects=tuple(objects),
        depends_on=("platform", "pki"),
    )
