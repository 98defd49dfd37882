"""prometheus_client multiprocess mode: the per-pod directory, dead processes, and the registry to serve.

A prefork worker (or gunicorn) runs its code in child processes; each child writes its samples to
mmap files in ``$PROMETHEUS_MULTIPROC_DIR`` and the serving process merges them on every scrape.
Children come and go (``worker_max_tasks_per_child``, time-limit kills), so files of dead children
are *compacted*: their counter/histogram values are added into ``*_archive.db`` files and the
per-pid files removed. Totals stay monotonic and a scrape reads O(live processes) files, not
O(processes ever). This module imports no Django code (a gunicorn config may import it).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from portfolio_site import environment as env

logger = logging.getLogger(__name__)

_FILE = re.compile(r"^(?P<kind>counter|histogram|summary|gauge_[a-z]+)_(?P<pid>\d+)\.db$")
#: How the values of a dead process merge into the archive, per file kind. ``live*`` gauges are
#: dropped with their process (``mark_process_dead``); other gauge modes are not used here.
_MERGE = {"counter": "sum", "histogram": "sum", "summary": "sum", "gauge_sum": "sum", "gauge_max": "max",
          "gauge_mostrecent": "mostrecent"}
_LOCK_NAME = ".compaction.lock"


def multiprocess_dir() -> Path | None:
    value = env.get(env.PROMETHEUS_MULTIPROC_DIR)
    return Path(value) if value else None


def wipe(directory: Path) -> None:
    """Remove every sample file: a (re)started pod must not add up the previous container's values."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # Serving processes may be several (gunicorn workers): compaction and reading exclude each other.
    with open(directory / _LOCK_NAME, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def compact_dead(directory: Path, *, keep: Iterable[int] = ()) -> list[int]:
    """Fold the files of dead processes into the archive files; returns the pids compacted.

    Call with the directory lock held (``MultiprocessRegistryCollector`` does).
    """
    from prometheus_client.mmap_dict import MmapedDict

    keep = {os.getpid(), *keep}
    dead: dict[int, list[tuple[str, Path]]] = {}
    for path in directory.glob("*.db"):
        match = _FILE.match(path.name)
        if match is None:
            continue
        pid = int(match["pid"])
        if pid in keep or _alive(pid):
            continue
        dead.setdefault(pid, []).append((match["kind"], path))
    for pid, files in dead.items():
        mark_process_dead(pid, str(directory))  # removes the live* gauge files
        for kind, path in files:
            how = _MERGE.get(kind)
            if how is None or not path.exists():
                continue
            archive = MmapedDict(str(directory / f"{kind}_archive.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(path)):
                    old_value, old_timestamp = archive.read_value(key)
                    if how == "sum":
                        archive.write_value(key, old_value + value, 0.0)
                    elif how == "max":
                        archive.write_value(key, max(old_value, value), 0.0)
                    elif timestamp >= old_timestamp:  # mostrecent
                        archive.write_value(key, value, timestamp)
            finally:
                archive.close()
            path.unlink(missing_ok=True)
    return sorted(dead)


class MultiprocessRegistryCollector(Collector):
    """MultiProcessCollector that first compacts the files of dead processes, under a lock."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._inner = MultiProcessCollector(None, path=str(directory))

    def collect(self):  # type: ignore[override]
        with _locked(self.directory):
            try:
                compact_dead(self.directory)
            except Exception:  # a scrape still answers with what it can read
                logger.exception("compacting metric files of dead processes failed")
            return list(self._inner.collect())


def serving_registry(*extra: Collector) -> CollectorRegistry:
    """The registry a metrics endpoint serves: merged files in multiprocess mode, else the default."""
    directory = multiprocess_dir()
    if directory is None:
        for collector in extra:
            with contextlib.suppress(ValueError):  # already registered (a second call)
                REGISTRY.register(collector)
        return REGISTRY
    directory.mkdir(parents=True, exist_ok=True)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MultiprocessRegistryCollector(directory))
    for collector in extra:
        registry.register(collector)
    return registry


# --- gunicorn hooks (app/gunicorn.conf.py: ``from apps.main.metrics.multiprocess import …``) --------


def gunicorn_on_starting(server: object) -> None:
    """Master start: clear files left by the previous container of this pod."""
    directory = multiprocess_dir()
    if directory is not None:
        wipe(directory)


def gunicorn_child_exit(server: object, worker: object) -> None:
    """A web worker died: its live gauges go; its counters are compacted at the next scrape."""
    directory = multiprocess_dir()
    pid = getattr(worker, "pid", None)
    if directory is not None and pid:
        mark_process_dead(pid, str(directory))
