"""Host processes are tracked by PID and start time: a second start reuses, a reused PID is never signalled."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from localcluster import processes


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "RUN", tmp_path / "run")
    monkeypatch.setattr(processes, "LOGS", tmp_path / "logs")


SLEEPER = [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(120)"]


def test_start_is_idempotent_and_stop_ends_the_process() -> None:
    first = processes.start("sleeper", SLEEPER)
    try:
        assert processes.start("sleeper", SLEEPER).pid == first.pid, "a second start must reuse the running one"
        assert [t.name for t in processes.all_tracked()] == ["sleeper"]
    finally:
        processes.stop(first, timeout=5)
    assert not processes.alive(first)
    assert processes.tracked("sleeper") is None
    assert not processes.pid_file("sleeper").exists()


def test_a_pid_file_whose_start_time_differs_is_not_our_process(tmp_path: Path) -> None:
    processes.RUN.mkdir(parents=True)
    # this test's own PID with a wrong start time: as after a reboot, when the PID went to someone else
    processes.pid_file("stale").write_text(f"{__import__('os').getpid()} 1\n")
    assert processes.tracked("stale") is None
    assert processes.stop_named("stale") is False
    assert not processes.pid_file("stale").exists()


def test_output_goes_to_the_log_file() -> None:
    process = processes.start("talker", [sys.executable, "-c", "print('hello from the child', flush=True)"])
    import time

    deadline = time.monotonic() + 30
    while processes.alive(process) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "hello from the child" in processes.log_tail("talker")
