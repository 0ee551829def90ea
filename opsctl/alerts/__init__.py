"""Alert rules and routing as code: sources in alerts/, SLO rules generated from the spec."""

from opsctl.alerts._build import Built, build, coverage, lint, ruleset, run_tests
from opsctl.alerts._render import prometheus_rules
from opsctl.alerts._routing import alertmanager_config
from opsctl.alerts._rules import RULES_DIR, RUNBOOKS_DIR, Rule, RuleSet
from opsctl.alerts._slo import slo_rules

__all__ = [
    "RULES_DIR",
    "RUNBOOKS_DIR",
    "Built",
    "Rule",
    "RuleSet",
    "alertmanager_config",
    "build",
    "coverage",
    "lint",
    "prometheus_rules",
    "ruleset",
    "run_tests",
    "slo_rules",
]
