"""A pool that KEDA scaled to zero wakes on the first task of its queue (values-examples/kind.yaml: low-priority)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from k8s_support.api import TaskApi
from k8s_support.release import ClusterReader
from k8s_support.wake import wake_from_zero, zero_pool


@pytest.mark.disruptive
@pytest.mark.timeout(900)
def test_scale_to_zero_pool_wakes_on_its_first_task(
    task_api: TaskApi, reader: ClusterReader, custom: Any, dump: Callable[[], str]
) -> None:
    """Issue 10, point 3 ("a scale-to-zero pool wakes on its first task"): the pool rests at 0 replicas with
    no pod; one task of its queue makes KEDA activate it, and the task succeeds on a worker of that pool."""
    wake_from_zero(task_api, reader, custom, zero_pool(reader, custom), dump)
