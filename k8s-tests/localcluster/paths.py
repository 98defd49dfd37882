"""Where the local cluster keeps things.

CACHE (builds, images; survives `cluster-down` and is shared by every clone) and STATE (certificates,
etcd data, containerd and kubelet roots, logs, PIDs; removed by `cluster-down`).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE = Path(os.environ.get("CELERY_STACK_CACHE", Path.home() / ".cache" / "celery-stack")) / "cluster"
STATE = Path(os.environ.get("CELERY_STACK_CLUSTER_STATE", "/var/lib/celery-stack-cluster"))
#: The kubeconfig `cluster-up` writes (admin credentials of this single-user cluster).
KUBECONFIG = STATE / "kubeconfig"
PKI = STATE / "pki"
LOGS = STATE / "logs"
RUN = STATE / "run"
