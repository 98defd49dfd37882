"""The processes of a worker container: the Celery main process and its prefork pool children.

A worker container runs ``tini -- celery -A portfolio_site worker ...`` (the image's ENTRYPOINT): PID 1
is tini, and tini's own command line holds the whole celery command, " worker " included. The Celery
main process is tini's child, whose command is the ``celery`` program (``python .../bin/celery ...``
once the kernel ran the script's interpreter), and the pool's children are the main process's forks:
same command line (or, with setproctitle, ``[celeryd: ...:ForkPoolWorker-N]``) and the main process as
parent. So the main process is a celery worker process whose parent is not one, never tini.

``kill_pool_children_script()`` is the program the worker-loss test runs inside the container: these
very functions plus a /proc reader, so the tests here check the code that runs there.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence

#: pid -> (parent pid, argv).
ProcessTable = Mapping[int, tuple[int, Sequence[str]]]


def is_celery_worker(argv: Sequence[str]) -> bool:
    """A `celery ... worker` process (main or pool child), by its argv; not tini, sh or python -c."""
    words = " ".join(argv).split()
    if not words:
        return False
    if words[0] == "[celeryd:":  # setproctitle: "[celeryd: pool@host:MainProcess] -active- (...)"
        return True
    if os.path.basename(words[0]).startswith("python"):
        words = words[1:]
        while words and words[0].startswith("-") and words[0] != "-m":  # interpreter options: -u, -B ...
            if words[0] == "-c":  # a program given inline (like this module's own script)
                return False
            words = words[1:]
        if words[:1] == ["-m"]:
            words = words[1:]
    return bool(words) and os.path.basename(words[0]) == "celery" and "worker" in words[1:]


def pool_processes(table: ProcessTable) -> tuple[list[int], list[int]]:
    """(main processes, their pool children): celery worker processes whose parent is not one, and the
    processes whose parent is such a main process."""
    workers = {pid for pid, (_, argv) in table.items() if is_celery_worker(argv)}
    main = sorted(pid for pid in workers if table[pid][0] not in workers)
    children = sorted(pid for pid, (ppid, _) in table.items() if ppid in main)
    return main, children


def read_proc(proc: str = "/proc") -> dict[int, tuple[int, list[str]]]:
    """The process table of this PID namespace from /proc (the worker image has no `ps`)."""
    table = {}
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
            with open(f"{proc}/{name}/cmdline", "rb") as cmdline:
                argv = [a.decode(errors="replace") for a in cmdline.read().split(b"\0") if a]
        except (OSError, IndexError, ValueError):  # exited meanwhile
            continue
        table[int(name)] = (ppid, argv)
    return table


def parse_ps(text: str) -> dict[int, tuple[int, list[str]]]:
    """The process table of `ps -eo pid,ppid,args` output (header line first)."""
    table = {}
    for line in text.splitlines()[1:]:
        pid, ppid, *argv = line.split()
        table[int(pid)] = (int(ppid), argv)
    return table


_KILL_MAIN = """
import signal
main, children = pool_processes({pid: p for pid, p in read_proc().items() if pid != os.getpid()})
for pid in children:
    os.kill(pid, signal.SIGKILL)
print(f"main={main} killed={children}")
"""


def kill_pool_children_script() -> str:
    """A `python -c` program: SIGKILL every pool child of the Celery main process (as the OOM killer
    would) and print `main=[pid] killed=[pids]`."""
    parts = ["from __future__ import annotations", "import os",
             *(inspect.getsource(f) for f in (is_celery_worker, pool_processes, read_proc)), _KILL_MAIN]
    return "\n".join(parts)

