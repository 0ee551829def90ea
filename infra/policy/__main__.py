"""Policy pack entry point: `pulumi preview --policy-pack infra/policy` (or opsctl infra)."""

from pulumi_policy import PolicyPack

from infra.policy.pack import policies

PolicyPack(name="imstack-policies", policies=policies())
