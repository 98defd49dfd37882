from __future__ import annotations

import time

import pytest

from k8s_support.waiting import WaitTimeout, wait_for


def test_returns_the_first_truthy_value() -> None:
    values = iter([None, [], {"ready": True}])
    assert wait_for(lambda: next(values), timeout=5, interval=0.01, description="x") == {"ready": True}


def test_retries_listed_exceptions_and_reports_the_last_one() -> None:
    calls = []

    def flaky() -> bool:
        calls.append(1)
        raise ConnectionError(f"refused #{len(calls)}")

    started = time.monotonic()
    with pytest.raises(WaitTimeout) as info:
        wait_for(flaky, timeout=0.3, interval=0.05, description="the API server", retry_on=(ConnectionError,))
    assert time.monotonic() - started < 2
    message = str(info.value)
    assert "timed out after 0.3s waiting for the API server" in message
    assert f"last error: ConnectionError: refused #{len(calls)}" in message
    assert len(calls) >= 3


def test_other_exceptions_fail_at_once() -> None:
    calls = []

    def failing() -> bool:
        calls.append(1)
        raise ValueError("task FAILURE")

    with pytest.raises(ValueError, match="task FAILURE"):
        wait_for(failing, timeout=5, interval=0.01, description="x", retry_on=(ConnectionError,))
    assert len(calls) == 1


def test_timeout_message_has_last_result_and_diagnostics() -> None:
    with pytest.raises(WaitTimeout) as info:
        wait_for(lambda: [], timeout=0.05, interval=0.01, description="pods", diagnostics=lambda: "POD DUMP")
    assert "last result: []" in str(info.value)
    assert str(info.value).endswith("\nPOD DUMP")
    assert isinstance(info.value, AssertionError)  # pytest reports it as a failed assertion


def test_a_failing_dump_does_not_hide_the_timeout() -> None:
    def broken() -> str:
        raise RuntimeError("apiserver gone")

    with pytest.raises(WaitTimeout, match=r"collecting diagnostics failed: RuntimeError: apiserver gone"):
        wait_for(lambda: False, timeout=0.05, interval=0.01, description="x", diagnostics=broken)


class NotReady:
    """Falsy, with a huge repr (like a long pod list that is not ready yet)."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "pod " * 1000


def test_long_results_are_truncated_in_the_message() -> None:
    with pytest.raises(WaitTimeout) as info:
        wait_for(NotReady, timeout=0.02, interval=0.01, description="x")
    assert "… (4000 chars)" in str(info.value)
    assert len(str(info.value)) < 700


def test_rejects_a_non_positive_timeout() -> None:
    with pytest.raises(ValueError):
        wait_for(lambda: True, timeout=0, description="x")
