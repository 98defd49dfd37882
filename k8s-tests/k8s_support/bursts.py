"""A burst of real tasks and the check that a disruption hit it while it was still being worked off.

Shared by the disruptive tests (a worker pod deleted, its pool processes killed, a KEDA scale-down).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from apps.main.queues import queue_for
from k8s_support.api import ServiceUnavailable, TaskApi
from k8s_support.release import ClusterReader
from k8s_support.samples import BURST_ENV, BURST_TASK, burst_arguments, burst_size
from k8s_support.workloads import pool_for_queue, pool_queues

#: Burst tasks looked at right after a disruption: the last submitted, so the last to run.
TAIL = 20


def burst_pool(reader: ClusterReader) -> str:
    """The pool that consumes BURST_TASK's queue."""
    return pool_for_queue(pool_queues(reader.deployments("worker")), queue_for(BURST_TASK))


def submit_burst(task_api: TaskApi, size: int | None = None) -> list[str]:
    """Submit a burst (samples.burst_size() tasks unless given); the task ids in submission order."""
    size = burst_size() if size is None else size
    ids = task_api.submit_many(BURST_TASK, burst_arguments, size)
    print(f"submitted {size} {BURST_TASK} tasks")
    return ids


def assert_burst_in_progress(task_api: TaskApi, ids: list[str], disruption: str) -> None:
    """Some of the last tasks of the burst are not done right after ``disruption``: it hit a live burst."""
    unfinished = [task_id for task_id in ids[-TAIL:] if task_api.status(task_id)["state"] != "SUCCESS"]
    assert unfinished, (
        f"all of the last {TAIL} of {len(ids)} burst tasks were already SUCCESS right after {disruption}: the "
        f"burst was over before the disruption, so this run proves nothing; raise {BURST_ENV} (now {len(ids)})"
    )
    print(f"right after {disruption}: {len(unfinished)} of the last {TAIL} burst tasks not done yet")


class BurstInFlight:
    """A burst submitted from a background thread, so that a disruption can hit it while tasks still arrive.

    Workers drain ``process_user_action`` faster than the API accepts it (hundreds per second per pod),
    so a burst submitted before the disruption can be over before it: this one is not.
    """

    def __init__(self, task_api: TaskApi, size: int | None = None, *, threads: int = 8,
                 retry_for: float = 0.0) -> None:
        #: The most tasks submitted; stop() ends the submission earlier.
        self.size = burst_size() if size is None else size
        #: Seconds one submission is retried, with the same arguments (the task is idempotent per action id),
        #: on the API's 503 "try again later" or a lost connection/timeout, as a client should (0: not at all).
        self.retry_for = retry_for
        #: Submissions sent again after a 503 / after a connection error or timeout (the API may have taken
        #: the first one: then the action is queued twice, and recorded once).
        self.refused = 0
        self.unanswered = 0
        #: The last error a submission was retried after, for diagnostics.
        self.last_error = ""
        self.ids: list[str] = []
        #: When each id was accepted (time.time(), in the order of ``ids``).
        self.accepted_at: list[float] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._submit, args=(task_api, threads), daemon=True)
        self._thread.start()

    def _submit(self, task_api: TaskApi, threads: int) -> None:
        def one(_: int) -> None:
            if self._stopped.is_set():
                return
            arguments = burst_arguments()
            give_up = time.monotonic() + self.retry_for
            while True:
                try:
                    task_id = task_api.submit(BURST_TASK, arguments)["id"]
                    break
                except (ServiceUnavailable, requests.ConnectionError, requests.Timeout) as exc:
                    if time.monotonic() > give_up:
                        raise
                    with self._lock:
                        self.last_error = f"{time.strftime('%H:%M:%S')} {type(exc).__name__}: {str(exc)[:300]}"
                        if isinstance(exc, ServiceUnavailable):
                            self.refused += 1
                        else:
                            self.unanswered += 1
                    time.sleep(0.2)
            with self._lock:
                self.ids.append(task_id)
                self.accepted_at.append(time.time())

        try:
            with ThreadPoolExecutor(max_workers=threads) as executor:
                list(executor.map(one, range(self.size)))
        except BaseException as exc:  # re-raised by join(), in the test's thread
            self._error = exc

    def stop(self) -> None:
        """Submit no more tasks (those already sent by the submitting threads are kept)."""
        self._stopped.set()

    def check(self) -> None:
        """Raise the submission's error, if it failed."""
        if self._error is not None:
            raise self._error

    def describe(self) -> str:
        with self._lock:
            last = time.strftime("%H:%M:%S", time.localtime(self.accepted_at[-1])) if self.accepted_at else "-"
            return (f"burst: {len(self.ids)} accepted (the last at {last}), {self.refused} 503s and "
                    f"{self.unanswered} unanswered sent again; last error: {self.last_error or '-'}")

    def accepted_since(self, moment: float) -> int:
        """How many submissions were accepted after ``moment`` (time.time())."""
        with self._lock:
            return sum(1 for at in self.accepted_at if at > moment)

    @property
    def submitting(self) -> bool:
        return self._thread.is_alive()

    def first(self, count: int, timeout: float = 120) -> list[str]:
        """The first ``count`` ids submitted, once they are."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.ids) >= count:
                    return self.ids[:count]
            if self._error is not None or not self.submitting:
                break
            time.sleep(0.05)
        self.join(1)
        raise TimeoutError(f"fewer than {count} burst tasks submitted after {timeout:.0f} s")

    def join(self, timeout: float) -> list[str]:
        """Every id, once the submission ended; its error, if it failed."""
        self._thread.join(timeout)
        self.check()
        if self._thread.is_alive():
            raise TimeoutError(f"submitting {self.size} burst tasks took longer than {timeout:.0f} s")
        print(f"submitted {len(self.ids)} {BURST_TASK} tasks")
        return list(self.ids)

    def ids_after(self, disruption: str, task_api: TaskApi, timeout: float, *, stop: bool = False) -> list[str]:
        """Every id, after checking that ``disruption`` (just done) hit the burst while it was live: tasks were
        still being submitted, or some of the last ones were not done yet. ``stop``: submit no more first."""
        still_sending = self.submitting
        if stop:
            self.stop()
        ids = self.join(timeout)
        if still_sending:
            print(f"{disruption} while the burst was still being submitted ({len(ids)} tasks in all)")
        else:
            assert_burst_in_progress(task_api, ids, disruption)
        return ids
