"""Cassandra's roles in the local stack, set up as prod's (opsctl/stack/_cassandra.py).

A new node knows only the default superuser ``cassandra``/``cassandra``. Once the nodes are
up, ``ensure_roles`` logs in with it (or, on any later start, as ``admin``), creates ``admin``
(a superuser with a generated password), drops ``cassandra``, and creates the roles of
``migrate`` (may create and alter keyspaces: it owns what it creates) and of the gateway and
the dispatcher. After the migrations ``grant_app`` lets those two read and write the IM
keyspaces, nothing else. Both are idempotent and cost one login each on later starts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from opsctl.local._secrets import CASSANDRA_ROLES, LocalSecrets
from opsctl.stack._cassandra import role_grants

DEFAULT_LOGIN = ("cassandra", "cassandra")
# The default role is created a moment after the node starts serving.
LOGIN_TIMEOUT_S = 90.0


class CassandraAuthFailed(RuntimeError):
    """The roles could not be set up (names the step, never a password)."""


def session(
    contact: Sequence[tuple[str, int]],
    secrets: LocalSecrets,
    role: str,
    *,
    password: str | None = None,
    timeout_s: float = 10.0,
) -> Any:
    """A driver session as ``role`` over verified TLS (the caller shuts its cluster down)."""
    from gateway.store import CassandraAuth

    if password is None:
        password = secrets.cassandra_password(role)
    auth = CassandraAuth(role, password, str(secrets.ca_cert))
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import RoundRobinPolicy

    profile = ExecutionProfile(load_balancing_policy=RoundRobinPolicy())
    cluster = Cluster(
        contact_points=[host for host, _ in contact],
        port=contact[0][1],
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        protocol_version=5,
        connect_timeout=timeout_s,
        control_connection_timeout=timeout_s,
        **auth.cluster_kwargs(),
    )
    try:
        return cluster.connect()
    except BaseException:
        cluster.shutdown()
        raise


def ensure_roles(
    contact: Sequence[tuple[str, int]],
    secrets: LocalSecrets,
    datacenters: Sequence[str] = (),
) -> None:
    """``admin``, then every role of CASSANDRA_ROLES with its password; ``datacenters``: a
    multi-DC cluster's, over which system_auth is replicated (a region down keeps logins)."""
    admin = _admin_session(contact, secrets, datacenters)
    try:
        # Only what is missing is written: a later start (a restore with a region still down)
        # must not need every DC (roles are written at EACH_QUORUM) nor a schema change.
        _replicate_auth(admin, datacenters)
        existing = {row.role for row in admin.execute("SELECT role FROM system_auth.roles")}
        if "cassandra" in existing:
            admin.execute("DROP ROLE cassandra")
        missing = [role for role in CASSANDRA_ROLES if role not in existing]
        for role in missing:
            admin.execute(
                f"CREATE ROLE {role} WITH LOGIN = true AND PASSWORD = %s",
                (secrets.cassandra_password(role),),
            )
        # migrate may create keyspaces (and owns what it creates), as in prod.
        _grant_missing(admin, role_grants([]))
    finally:
        admin.cluster.shutdown()


def grant_app(
    contact: Sequence[tuple[str, int]], secrets: LocalSecrets, keyspaces: list[str]
) -> None:
    """prod's grants (role_grants): the gateway and the dispatcher may read and write
    ``keyspaces`` and nothing else."""
    admin = session(contact, secrets, "admin")
    try:
        _grant_missing(admin, role_grants(keyspaces))
    finally:
        admin.cluster.shutdown()


def _grant_missing(admin: Any, grants: list[str]) -> None:
    """Run the grants not held yet (a repeated grant only draws a server warning, which the
    driver would log on every start)."""
    held = {
        (row.role, row.resource, permission)
        for row in admin.execute(
            "SELECT role, resource, permissions FROM system_auth.role_permissions"
        )
        for permission in row.permissions or ()
    }
    for grant in grants:
        # GRANT <permission> ON KEYSPACE <ks> TO <role> | GRANT <permission> ON ALL KEYSPACES ...
        words = grant.split()
        permission, role = words[1], words[-1]
        resource = "data" if words[3:5] == ["ALL", "KEYSPACES"] else f"data/{words[4]}"
        if (role, resource, permission) not in held:
            admin.execute(grant)


def _admin_session(
    contact: Sequence[tuple[str, int]], secrets: LocalSecrets, datacenters: Sequence[str]
) -> Any:
    from cassandra.cluster import NoHostAvailable

    deadline = time.monotonic() + LOGIN_TIMEOUT_S
    while True:
        try:
            return session(contact, secrets, "admin")
        except NoHostAvailable:
            pass
        try:
            default = session(contact, secrets, DEFAULT_LOGIN[0], password=DEFAULT_LOGIN[1])
        except NoHostAvailable as exc:
            if time.monotonic() > deadline:
                reasons = "; ".join(type(e).__name__ for e in exc.errors.values())
                raise CassandraAuthFailed(
                    f"cannot log in to Cassandra as admin nor as the default superuser "
                    f"within {LOGIN_TIMEOUT_S:.0f}s ({reasons})"
                ) from None
            time.sleep(1.0)
            continue
        try:
            # Before the first role is written: every DC then holds the roles.
            _replicate_auth(default, datacenters)
            default.execute(
                "CREATE ROLE IF NOT EXISTS admin WITH SUPERUSER = true AND LOGIN = true "
                "AND PASSWORD = %s",
                (secrets.cassandra_password("admin"),),
            )
        finally:
            default.cluster.shutdown()


def _replicate_auth(admin: Any, datacenters: Sequence[str]) -> None:
    if not datacenters:
        return
    row = admin.execute(
        "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = 'system_auth'"
    ).one()
    wanted = dict.fromkeys(datacenters, "1")
    current = dict(row.replication) if row else {}
    if current.get("class", "").endswith("NetworkTopologyStrategy") and all(
        current.get(dc) == rf for dc, rf in wanted.items()
    ):
        return
    replicas = ", ".join(f"'{dc}': 1" for dc in datacenters)
    admin.execute(
        "ALTER KEYSPACE system_auth WITH replication = "
        f"{{'class': 'NetworkTopologyStrategy', {replicas}}}"
    )
