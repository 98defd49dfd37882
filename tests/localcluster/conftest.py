"""Unit tests of k8s-tests/localcluster: what `make cluster-up` generates and parses, without starting it."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# k8s-tests/ is not a package (its dash): localcluster is imported as `make cluster-up` runs it.
if str(ROOT / "k8s-tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "k8s-tests"))
