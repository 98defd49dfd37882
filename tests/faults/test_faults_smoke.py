"""The fault suite's smoke run (``make faults`` runs every fault with bigger bursts): each fault is
caused for real on a stack of its own, and no task may be lost or duplicated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import FaultStack
from tests.faults.scenarios import SCENARIOS, table

pytestmark = pytest.mark.live

#: Small bursts: enough for the fault to hit tasks in flight (each scenario asserts it did).
SMOKE_TASKS = 120


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    with FaultStack(Path(tmp_path_factory.mktemp("faults")), visibility_timeout=30) as stack:
        yield stack


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault_loses_and_duplicates_nothing(fault_stack: FaultStack, name: str) -> None:
    row = SCENARIOS[name](fault_stack, SMOKE_TASKS)
    print("\n" + table([row]))
    assert row.sent >= SMOKE_TASKS
    assert (row.lost, row.duplicated) == (0, 0), table([row]) + "\n" + fault_stack.log_tails()
    assert row.succeeded + row.dead_lettered == row.sent
