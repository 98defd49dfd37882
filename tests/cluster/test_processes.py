"""k8s_support.processes: the worker-loss test's picker of the Celery main process and its pool children."""

from __future__ import annotations

import inspect
import os
import sys

from k8s_support.processes import is_celery_worker, kill_pool_children_script, parse_ps, pool_processes, read_proc

COMMAND = "-A portfolio_site worker -Q high_priority -n high-priority@%h --concurrency 2 --loglevel INFO"

#: `ps -eo pid,ppid,args` in a worker pod: tini (PID 1) carries the whole celery command line, " worker "
#: included; Celery's main process is its child, the prefork pool the main process's forks (same argv);
#: the liveness probe and the picker itself were exec'd into the container (parent 0).
WORKER_POD = f"""\
    PID    PPID COMMAND
      1       0 /usr/bin/tini -- celery {COMMAND}
      7       1 /opt/venv/bin/python /opt/venv/bin/celery {COMMAND}
     15       7 /opt/venv/bin/python /opt/venv/bin/celery {COMMAND}
     16       7 /opt/venv/bin/python /opt/venv/bin/celery {COMMAND}
     88       0 python manage.py worker_liveness --max-age 120
     93       0 python -c from __future__ import annotations import os def is_celery_worker(argv): ... worker ...
     97      93 ps -eo pid,ppid,args
"""

#: The same with setproctitle installed: Celery retitles its processes.
WORKER_POD_SETPROCTITLE = f"""\
    PID    PPID COMMAND
      1       0 /usr/bin/tini -- celery {COMMAND}
      7       1 [celeryd: high-priority@celery-stack-worker-high-priority-6d9f-x2x4q:MainProcess] -active- ({COMMAND})
     15       7 [celeryd: high-priority@celery-stack-worker-high-priority-6d9f-x2x4q:ForkPoolWorker-1]
     16       7 [celeryd: high-priority@celery-stack-worker-high-priority-6d9f-x2x4q:ForkPoolWorker-2]
"""


def test_parse_ps_reads_pid_parent_and_argv() -> None:
    table = parse_ps(WORKER_POD)
    assert table[1] == (0, ["/usr/bin/tini", "--", "celery", *COMMAND.split()])
    assert table[16][0] == 7 and len(table) == 7


def test_main_is_tinis_celery_child_and_the_pool_its_children() -> None:
    assert pool_processes(parse_ps(WORKER_POD)) == ([7], [15, 16])


def test_tini_and_execd_helpers_are_not_celery_workers() -> None:
    table = parse_ps(WORKER_POD)
    assert not is_celery_worker(table[1][1])  # tini, though " worker " is in its command line
    assert not is_celery_worker(table[88][1])  # the liveness probe
    assert not is_celery_worker(table[93][1])  # python -c <program that mentions worker>
    assert is_celery_worker(["python", "-u", "-m", "celery", *COMMAND.split()])
    assert is_celery_worker(["celery", *COMMAND.split()])
    assert not is_celery_worker(["celery", "-A", "portfolio_site", "beat"])
    assert not is_celery_worker([])


def test_setproctitle_titles() -> None:
    assert pool_processes(parse_ps(WORKER_POD_SETPROCTITLE)) == ([7], [15, 16])


def test_celery_as_pid_1_without_tini() -> None:
    table = parse_ps(f"""\
    PID    PPID COMMAND
      1       0 /opt/venv/bin/python /opt/venv/bin/celery {COMMAND}
      8       1 /opt/venv/bin/python /opt/venv/bin/celery {COMMAND}
""")
    assert pool_processes(table) == ([1], [8])


def test_read_proc_sees_this_process() -> None:
    ppid, argv = read_proc()[os.getpid()]
    assert ppid == os.getppid()
    assert argv and os.path.basename(argv[0]).startswith(("python", "pytest", os.path.basename(sys.executable)))


def test_the_container_script_is_these_functions() -> None:
    script = kill_pool_children_script()
    compile(script, "kill_pool_children", "exec")
    for function in (is_celery_worker, pool_processes, read_proc):
        assert inspect.getsource(function) in script
    assert "os.kill(pid, signal.SIGKILL)" in script and "pid != os.getpid()" in script
