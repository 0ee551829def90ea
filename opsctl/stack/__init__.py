"""Pure builders of every Kubernetes object and Helm release of the IM stack, per region.

No Pulumi here: the Pulumi program (infra/), ``opsctl render`` and the tests all consume the
same plain data (see ``RegionPlan``).
"""

from opsctl.stack._cassandra import replication as cassandra_replication
from opsctl.stack._kubeconfig import check_kube_contexts, contexts_in, kubeconfig_paths
from opsctl.stack._model import (
    Component,
    HelmRelease,
    LocalChart,
    Manifest,
    OperatorCrds,
    RegionPlan,
    SecretCopy,
    StackPlan,
)
from opsctl.stack._monitoring import DASHBOARD_LABEL, dashboard_configmaps
from opsctl.stack._plan import COMPONENT_ORDER, build_region, build_stack
from opsctl.stack._versions import CHART_PINS, ChartPin

__all__ = [
    "CHART_PINS",
    "COMPONENT_ORDER",
    "DASHBOARD_LABEL",
    "ChartPin",
    "Component",
    "HelmRelease",
    "LocalChart",
    "Manifest",
    "OperatorCrds",
    "RegionPlan",
    "SecretCopy",
    "StackPlan",
    "build_region",
    "build_stack",
    "cassandra_replication",
    "check_kube_contexts",
    "contexts_in",
    "dashboard_configmaps",
    "kubeconfig_paths",
]
