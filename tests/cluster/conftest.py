"""Unit tests of k8s-tests/k8s_support, the Makefile's cluster targets and the workflows (no cluster)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# k8s-tests/ is not a package (its dash): its helpers are imported the way its own conftest sees them.
if str(ROOT / "k8s-tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "k8s-tests"))
