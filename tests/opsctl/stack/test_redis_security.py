"""Redis in prod (issue 14): TLS only with the certificate the stack issues, ACL users from a
Secret, the exporter as its own user, and the chart handed each identity's Secret and the CA.
The local stack runs the same ACL rules (tests/opsctl/local/test_security_live.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from opsctl.spec import parse_spec
from opsctl.stack import _names as n
from opsctl.stack import build_stack
from opsctl.stack._gateway import chart_values
from opsctl.stack._redis import PROD_ACL_USERS, REDIS_ACL, acl_file, password_hash
from tests.support import shipped_spec

pytestmark = pytest.mark.unit

STACKS = ("local", "staging", "prod")


def _regions(stack: str) -> list[Any]:
    spec = parse_spec(shipped_spec(stack))
    return [(spec, plan) for plan in build_stack(spec).regions]


@pytest.mark.parametrize("stack", STACKS)
def test_every_redis_is_tls_only_with_acl_users_from_secrets(stack: str) -> None:
    for _spec, plan in _regions(stack):
        (redis,) = [o for o in plan.component("redis").objects if o["kind"].startswith("Redis")]
        body = redis["spec"]
        assert body["TLS"]["secret"] == {"secretName": n.REDIS_TLS_SECRET}
        assert body["TLS"]["ca"] == n.CA_CERT_KEY
        assert body["acl"] == {"secret": {"secretName": n.REDIS_ACL_SECRET}}
        assert body["kubernetesConfig"]["redisSecret"]["name"] == n.REDIS_ADMIN_SECRET
        env = {e["name"]: e for e in body["redisExporter"]["env"]}
        assert env["REDIS_USER"]["value"] == n.REDIS_EXPORTER_USER
        ref = env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": n.redis_user_secret("exporter"), "key": n.PASSWORD_KEY}


def test_no_builder_output_carries_a_password() -> None:
    for stack in STACKS:
        for spec, plan in _regions(stack):
            text = json.dumps([plan.objects(), chart_values(spec, plan.region)])
            assert "masterauth" not in text
            # Only references to a Secret's key: a KafkaUser's password.valueFrom, the key
            # name in MirrorMaker 2's passwordSecret.
            text = text.replace('"password": {"valueFrom": {"secretKeyRef"', "")
            text = text.replace(f'"password": "{n.PASSWORD_KEY}"', "")
            assert '"password":' not in text.lower()


def test_the_acl_file_holds_hashes_and_the_default_user_is_the_operators_admin() -> None:
    passwords = {user: f"pw-{user}-0123456789" for user in ("admin", *PROD_ACL_USERS)}
    text = acl_file(passwords)
    for password in passwords.values():
        assert password not in text
    lines = text.splitlines()
    assert lines[0] == f"user default reset on {password_hash(passwords['admin'])} ~* &* +@all"
    assert [line.split()[1] for line in lines[1:]] == list(PROD_ACL_USERS)
    for line in lines[1:]:
        user = line.split()[1]
        assert line.endswith(REDIS_ACL[user])
        assert password_hash(passwords[user]) in line
    with pytest.raises(ValueError, match="exporter"):
        acl_file({k: v for k, v in passwords.items() if k != "exporter"})


def test_the_im_identities_reach_only_the_im_key_space() -> None:
    for user in (n.REDIS_GATEWAY_USER, n.REDIS_DISPATCHER_USER):
        rules = REDIS_ACL[user].split()
        assert "~im:*" in rules
        assert "&im:*" in rules
        assert "-@dangerous" in rules
        assert "~*" not in rules
    assert "~" not in REDIS_ACL[n.REDIS_EXPORTER_USER]  # no key at all
