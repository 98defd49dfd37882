"""Unit tests of k8s-tests/k8s_support, the Makefile's cluster targets and the workflows (no cluster)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# k8s-tests/ is not a package (its dash): its helpers are imported the way its own conftest sees them.
if str(ROOT / "k8s-tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "k8s-tests"))


@pytest.fixture
def dead_kubeconfig(tmp_path: Path) -> Path:
    """A kubeconfig whose API server refuses connections: "no cluster" even on a machine that has one."""
    path = tmp_path / "kubeconfig"
    path.write_text(textwrap.dedent("""
        apiVersion: v1
        kind: Config
        clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
        users: [{name: u, user: {token: t}}]
        contexts: [{name: kind-gone, context: {cluster: c, user: u}}]
        current-context: kind-gone
    """))
    return path
