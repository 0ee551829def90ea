"""Chaos drills on the local stack (issue 15): a fault under load, its restore, and a verdict
on what was lost, duplicated or reordered, how long recovery took and which alerts fired.

- ``_model``: a drill's typed definition, the run's figures and the gates (pure);
- ``_registry``: every drill, in one place (``DRILLS``, ``find``);
- ``_faults``: the inject/restore callables, on the stack's own operations;
- ``_probe``: the users whose every message is accounted for by id;
- ``_alerts``: the rules' ``for:`` and what Alertmanager received;
- ``_run``: the timeline of one run and its report.
"""

from opsctl.drill._model import (
    Accounting,
    AlertSeen,
    Check,
    Drill,
    DrillContext,
    ExpectedAlert,
    Status,
    Verdict,
    alert_checks,
    judge,
)
from opsctl.drill._registry import DRILLS, find, names
from opsctl.drill._run import (
    DEFAULT_DURATION_S,
    DEFAULT_REPORTS_DIR,
    Outcome,
    open_stack,
    run_drill,
)

__all__ = [
    "DEFAULT_DURATION_S",
    "DEFAULT_REPORTS_DIR",
    "DRILLS",
    "Accounting",
    "AlertSeen",
    "Check",
    "Drill",
    "DrillContext",
    "ExpectedAlert",
    "Outcome",
    "Status",
    "Verdict",
    "alert_checks",
    "find",
    "judge",
    "names",
    "open_stack",
    "run_drill",
]
