"""Migrations run in a plain, per-revision Job that waits for the database and seeds the beat schedule."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from apps.main.queues import task_name
from apps.main.schedule import DEFAULT_SCHEDULE
from k8s_support.helm import deployed_revision, run_helm
from k8s_support.podexec import marked_json, run_in_pod
from k8s_support.release import ClusterReader, Release
from k8s_support.waiting import wait_for
from k8s_support.workloads import rollout_problem

#: The migration Job's whole retry window before it waited for the database (backoffLimit 3): ~80 s.
OLD_RETRY_WINDOW = 80
#: The database stays down this long after the new Job's pod started waiting for it.
OUTAGE = OLD_RETRY_WINDOW + 20
WAIT_CONTAINER = "wait-for-database"
MARKER = "K8S_TESTS_SCHEDULE="
#: Printed by `manage.py shell` in the web container: every periodic task as name -> [task, enabled, every].
SCHEDULE_PROGRAM = (
    "import json\n"
    "from django_celery_beat.models import PeriodicTask\n"
    "rows = {t.name: [t.task, t.enabled, t.interval.every if t.interval else None]"
    " for t in PeriodicTask.objects.select_related('interval')}\n"
    f"print({MARKER!r} + json.dumps(rows))\n"
)


def migration_jobs(batch: Any, release: Release) -> list[Any]:
    """The release's migration Jobs, oldest first."""
    jobs = batch.list_namespaced_job(release.namespace, label_selector=release.selector("migrations")).items
    return sorted(jobs, key=lambda job: (job.metadata.creation_timestamp, job.metadata.name))


def job_pods(core: Any, release: Release, job: str) -> list[Any]:
    return core.list_namespaced_pod(release.namespace, label_selector=f"job-name={job}").items


def init_status(pod: Any, name: str) -> Any | None:
    return next((s for s in pod.status.init_container_statuses or [] if s.name == name), None)


def periodic_tasks(core: Any, reader: ClusterReader) -> dict[str, list[Any]]:
    """name -> [task, enabled, every seconds] of every django-celery-beat PeriodicTask, read in a web pod."""
    pods = reader.pods(reader.release.selector("web"))
    assert pods, "no running web pod to read the schedule in"
    result = run_in_pod(core, reader.release.namespace, pods[0].metadata.name, "web",
                        ["python", "manage.py", "shell", "-c", SCHEDULE_PROGRAM], timeout=120)
    assert result.returncode == 0, f"manage.py shell in {pods[0].metadata.name} failed: {result.describe()}"
    return marked_json(result.stdout, MARKER)  # type: ignore[no-any-return]


def test_migrations_ran_in_a_plain_job_and_seeded_the_schedule(
    batch: Any, core: Any, reader: ClusterReader, release: Release, dump: Callable[[], str]
) -> None:
    """Issue 10, observation 2 and point 3: by default (migrations.useHelmHooks=false) the migrations are a
    plain Job of the release, named per revision, created with the Deployments, so `helm install --wait`
    does not deadlock (a post-install hook runs only after the wait, which waits for pods that wait for
    the migrations). The Job of the deployed revision succeeded, waited for the database first, and its
    `setup_periodic_tasks` seeded django-celery-beat's schedule (apps.main.schedule.DEFAULT_SCHEDULE)."""
    jobs = migration_jobs(batch, release)
    assert jobs, f"no migration Job ({release.selector('migrations')}) in {release.namespace}"
    job = jobs[-1]
    hooks = {k: v for k, v in (job.metadata.annotations or {}).items() if k.startswith("helm.sh/hook")}
    assert not hooks, f"migration Job {job.metadata.name} is a Helm hook {hooks}: `helm install --wait` deadlocks"
    revision = deployed_revision(core, release)
    if revision is not None:  # installed by helm (not e.g. by Tilt): the Job of the deployed revision
        assert job.metadata.name.endswith(f"-migrate-{revision}"), (
            f"newest migration Job {job.metadata.name} is not the one of deployed revision {revision}")
    init = [c.name for c in job.spec.template.spec.init_containers or []]
    assert WAIT_CONTAINER in init, f"{job.metadata.name} has no {WAIT_CONTAINER} init container: {init}"

    def succeeded() -> bool:
        status = batch.read_namespaced_job_status(job.metadata.name, release.namespace).status
        return (status.succeeded or 0) >= 1

    wait_for(succeeded, timeout=600, interval=3, description=f"migration Job {job.metadata.name} to succeed",
             diagnostics=dump)

    rows = periodic_tasks(core, reader)
    expected = {d.name: [task_name(d.task), True, d.every_seconds] for d in DEFAULT_SCHEDULE}
    wrong = {name: rows.get(name) for name, row in expected.items() if rows.get(name) != row}
    assert not wrong, f"periodic schedule not seeded as {expected}: found {wrong} (all rows: {rows})"


def scale_statefulset(apps: Any, release: Release, name: str, replicas: int) -> None:
    apps.patch_namespaced_stateful_set_scale(name, release.namespace, {"spec": {"replicas": replicas}},
                                             _content_type="application/merge-patch+json")


@pytest.mark.upgrade
@pytest.mark.timeout(1800)
def test_migration_job_waits_for_a_database_that_is_down(
    apps: Any, batch: Any, core: Any, reader: ClusterReader, release: Release, dump: Callable[[], str]
) -> None:
    """Issue 10, observation 3: the migration Job did not wait for the database; with backoffLimit 3 its
    whole retry window was ~80 s and a cold PostgreSQL failed an install (BackoffLimitExceeded).

    `helm upgrade --reuse-values` with a changed value (no --wait) makes a new revision and so a new
    migration Job, and PostgreSQL is scaled to 0 as soon as that Job exists. The Job's pod must still be
    waiting for the database, in its first attempt, after longer than the old retry window; PostgreSQL
    comes back, the Job succeeds without a retry, and every Deployment rolls out the new revision."""
    sets = apps.list_namespaced_stateful_set(release.namespace, label_selector=release.selector("postgresql")).items
    if not sets:
        pytest.skip("the release has no built-in PostgreSQL (postgresql.enabled=false): no database to stop")
    postgres = sets[0].metadata.name
    database_pods = release.selector("postgresql")
    earlier = {job.metadata.name for job in migration_jobs(batch, release)}
    marker = uuid.uuid4().hex[:12]

    def database_gone() -> bool:
        return not core.list_namespaced_pod(release.namespace, label_selector=database_pods).items

    def new_job() -> Any | None:
        return next((j for j in migration_jobs(batch, release) if j.metadata.name not in earlier), None)

    try:
        # PostgreSQL goes down the moment the new revision's Job exists: Helm has applied the StatefulSet by
        # then (it applies kinds in install order, StatefulSet before Job), so it cannot scale it back up,
        # and the Job's pod, which must first start Python and Django, cannot have connected yet. (Scaling
        # down before the upgrade does not work: helm v3's three-way merge and helm v4's server-side apply
        # both put the manifest's `replicas: 1` back.)
        with ThreadPoolExecutor(max_workers=1) as executor:
            upgrade = executor.submit(
                run_helm, release, "upgrade", release.name, str(release.chart), "--reuse-values",
                "--set-string", f"app.env.K8S_TESTS_DATABASE_OUTAGE={marker}", "--timeout", "10m", timeout=900)

            def created() -> Any | None:
                if upgrade.done():
                    upgrade.result()  # a failed upgrade fails the test with helm's output
                return new_job()

            job = wait_for(created, timeout=300, interval=0.2, description="the new revision's migration Job",
                           diagnostics=dump)
            scale_statefulset(apps, release, postgres, 0)
            upgrade.result(timeout=900)
        wait_for(database_gone, timeout=300, interval=1, description=f"{postgres} to have no pod", diagnostics=dump)
        name = job.metadata.name

        def waited_long_enough() -> bool:
            failed = batch.read_namespaced_job_status(name, release.namespace).status.failed or 0
            assert not failed, f"{name} already has {failed} failed pod(s) while the database is down"
            pods = job_pods(core, release, name)
            assert len(pods) <= 1, f"{name} made {len(pods)} pods: it retried instead of waiting"
            status = init_status(pods[0], WAIT_CONTAINER) if pods else None
            if status is None or status.state is None:
                return False
            if status.state.terminated is not None:
                log = core.read_namespaced_pod_log(pods[0].metadata.name, release.namespace, container=WAIT_CONTAINER)
                raise AssertionError(f"{WAIT_CONTAINER} of {pods[0].metadata.name} ended "
                                     f"({status.state.terminated.reason}) while the database was down:\n{log}")
            if status.state.running is None:
                return False
            waited = (datetime.now(UTC) - status.state.running.started_at).total_seconds()
            return waited >= OUTAGE

        wait_for(waited_long_enough, timeout=OUTAGE + 300, interval=3, diagnostics=dump,
                 description=f"{name}'s {WAIT_CONTAINER} to be waiting {OUTAGE}s for the stopped database")
    finally:
        scale_statefulset(apps, release, postgres, 1)

    def job_done() -> bool:
        status = batch.read_namespaced_job_status(name, release.namespace).status
        assert not status.failed, f"{name} has {status.failed} failed pod(s): it did not simply wait"
        return (status.succeeded or 0) >= 1

    wait_for(job_done, timeout=600, interval=3, description=f"{name} to succeed once PostgreSQL is back",
             diagnostics=dump)
    (pod,) = job_pods(core, release, name)
    log = core.read_namespaced_pod_log(pod.metadata.name, release.namespace, container=WAIT_CONTAINER)
    assert "waiting: database not reachable" in log and "the database accepts connections" in log, log

    def rolled_out() -> list[str]:
        return [p for d in reader.deployments() if (p := rollout_problem(d))]

    wait_for(lambda: not rolled_out(), timeout=900, interval=5, description="every Deployment to roll out",
             diagnostics=lambda: f"not rolled out: {rolled_out()}\n{dump()}")
    assert reader.environment("web", "web").get("K8S_TESTS_DATABASE_OUTAGE") == marker, "the value did not reach web"
