"""The worker's guard against poison messages (apps.main.delivery), below the fault suite's live runs."""

from __future__ import annotations

import pytest

from apps.main.delivery import count_redelivery, delivery_key, nesting_depth_exceeds


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(("depth", "limit", "exceeds"), [(0, 1, False), (3, 4, False), (4, 4, True), (5, 4, True)])
def test_depth_counts_containers(depth: int, limit: int, exceeds: bool) -> None:
    # nested(d) is d+1 lists deep: it exceeds a limit of d levels.
    assert nesting_depth_exceeds(nested(depth), limit) is exceeds


def test_depth_walk_survives_any_depth() -> None:
    # Far past the interpreter's recursion limit: the walk is iterative.
    assert nesting_depth_exceeds({"a": nested(200_000)}, 100) is True
    assert nesting_depth_exceeds({"a": [1, "x", {"b": None}]}, 100) is False


def test_redeliveries_are_counted_per_attempt_in_the_shared_cache(redis_client) -> None:
    # The count lives in Redis (the cache), so it survives the worker and follows the message.
    assert [count_redelivery("t-1", 0) for _ in range(3)] == [1, 2, 3]
    assert count_redelivery("t-1", 1) == 1  # a retry is a new message: its own count
    assert any(delivery_key("t-1", 0) in key.decode() for key in redis_client.scan_iter("*redeliveries*"))
