"""`tilt ci` and `tilt up` with the project's Tiltfile, for real (`make tilt-test`, after `make cluster-up`).

Tilt runs in a scratch copy of the repository (the tests edit files it watches) against the cluster of the
current kubeconfig, in a namespace of its own (K8S_TESTS_NAMESPACE). In order: `tilt ci` brings every
resource to ready and exits 0; then under `tilt up` the port-forwards answer, an edited task reaches the
running workers without a new image or pod, `make flower` serves Flower with the printed login, and a
change to pyproject.toml builds and rolls out a new image.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from embedded.network import free_port
from embedded.process import tail

from k8s_support.api import TaskApi, TaskApiError
from k8s_support.release import ClusterReader, Release
from k8s_support.waiting import WaitTimeout, wait_for
from portfolio_site.ports import FLOWER_PORT, WEB_PORT
from tests.support.tools import helm_binary, tool_path

pytestmark = [
    pytest.mark.tilt,
    pytest.mark.timeout(3600),
    # It deletes and recreates its namespace: never against a release some other run is testing.
    pytest.mark.skipif(os.environ.get("K8S_TESTS_TILT") != "1",
                       reason="Tilt deploys a release of its own: run it with `make tilt-test` (K8S_TESTS_TILT=1)"),
]

ROOT = Path(__file__).resolve().parents[1]
TASKS_FILE = Path("app/apps/main/tasks.py")
#: The line of health_check's result the live-update test extends.
RESULT_LINE = 'return {"status": "healthy", "checks": results, "checked_at": now.isoformat()}'
#: Resources `tilt up` must bring to ready before the tests (the manual test buttons never start).
APP_RESOURCES = ("web", "worker-high-priority", "worker-default", "worker-low-priority", "beat", "flower")


def _tilt_env() -> dict[str, str]:
    path = os.pathsep.join(str(p.parent) for p in (helm_binary("helm3"), tool_path("kubectl")))
    return {**os.environ, "PATH": f"{path}{os.pathsep}{os.environ['PATH']}", "TILT_DISABLE_ANALYTICS": "1"}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository's tracked files (as committed or edited now), copied: Tilt's working tree."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    dest = tmp_path_factory.mktemp("tilt-workspace")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def _delete_namespace(namespace: str) -> None:
    # PostgreSQL's volume outlives `tilt down`: a leftover one would hold another checkout's password.
    subprocess.run([str(tool_path("kubectl")), "delete", "namespace", namespace, "--ignore-not-found", "--wait=true",
                    "--timeout=300s"], env=_tilt_env(), capture_output=True, timeout=360, check=True)


@pytest.fixture(scope="module")
def tilt_args(release: Release) -> Iterator[list[str]]:
    """Tilt's arguments: the test namespace, new at the start and removed at the end."""
    _delete_namespace(release.namespace)
    yield ["--", "--namespace", release.namespace]
    _delete_namespace(release.namespace)


def _registry_images(reader: ClusterReader) -> dict[str, str]:
    """Deployment name -> image of its first container, for the app's Deployments."""
    return {d.metadata.name: d.spec.template.spec.containers[0].image for d in reader.deployments()
            if d.spec.template.spec.containers[0].image.split("/")[0].startswith("localhost:")}


def test_tilt_ci_brings_every_resource_up(workspace: Path, tilt_args: list[str], reader: ClusterReader,
                                          tmp_path: Path) -> None:
    log = tmp_path / "tilt-ci.log"
    with log.open("w") as out:
        done = subprocess.run([str(tool_path("tilt")), "ci", "--port", str(free_port()), "--timeout", "25m",
                               *tilt_args], cwd=workspace, env=_tilt_env(), stdout=out, stderr=subprocess.STDOUT,
                              timeout=30 * 60)
    assert done.returncode == 0, f"tilt ci exited {done.returncode}:\n{tail(log, 120)}"
    # Built by Tilt, pushed to the registry the cluster announces (KEP-1755), pulled by its containerd.
    images = _registry_images(reader)
    assert len(images) >= len(APP_RESOURCES), f"app Deployments on registry images: {images}"


class TiltUp:
    def __init__(self, workspace: Path, args: list[str], log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.workspace = workspace
        self._out = log.open("w")
        self.process = subprocess.Popen([str(tool_path("tilt")), "up", "--stream", "--port", str(self.port), *args],
                                        cwd=workspace, env=_tilt_env(), stdout=self._out, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def wait_ready(self, resources: tuple[str, ...], timeout: float) -> None:
        argv = [str(tool_path("tilt")), "wait", "--port", str(self.port), "--for=condition=Ready",
                f"--timeout={int(timeout)}s", *(f"uiresource/{r}" for r in resources)]
        deadline = time.monotonic() + timeout
        while True:  # `tilt wait` needs Tilt's API server, which takes a moment to come up
            done = subprocess.run(argv, env=_tilt_env(), capture_output=True, text=True)
            if done.returncode == 0:
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"tilt wait: {done.stderr.strip()}\n--- tilt up:\n{tail(self.log, 120)}")
            time.sleep(2)

    def stop(self, args: list[str]) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self._out.close()
        subprocess.run([str(tool_path("tilt")), "down", *args], cwd=self.workspace, env=_tilt_env(),
                       capture_output=True, timeout=600)


@pytest.fixture(scope="module")
def tilt_up(workspace: Path, tilt_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TiltUp]:
    session = TiltUp(workspace, tilt_args, tmp_path_factory.mktemp("tilt-up") / "tilt-up.log")
    try:
        session.wait_ready(APP_RESOURCES, timeout=20 * 60)
        yield session
    finally:
        session.stop(tilt_args)


@pytest.fixture(scope="module")
def local_api(tilt_up: TiltUp, reader: ClusterReader) -> TaskApi:
    token = reader.environment("web", "web").get("API_TOKEN")
    assert token, "the web container has no API_TOKEN"
    return TaskApi(f"http://localhost:{WEB_PORT}", token)


def _flower_login(reader: ClusterReader) -> tuple[str, str]:
    user, _, password = reader.environment("flower", "flower")["FLOWER_BASIC_AUTH"].partition(":")
    return user, password


def test_port_forwards_answer(tilt_up: TiltUp, reader: ClusterReader) -> None:
    web, flower = f"http://localhost:{WEB_PORT}/healthz", f"http://localhost:{FLOWER_PORT}/"
    for url in (web, flower):  # Tilt opens its port-forwards once the pods are ready
        wait_for(lambda u=url: requests.get(u, timeout=5).status_code, timeout=60, retry_on=(requests.ConnectionError,),
                 description=f"{url} (Tilt's port-forward)", diagnostics=lambda: tail(tilt_up.log, 60))
    assert requests.get(web, timeout=5).status_code == 200
    assert requests.get(flower, timeout=10).status_code == 401
    assert requests.get(flower, auth=_flower_login(reader), timeout=10).status_code == 200


def test_tilt_serves_its_web_ui(tilt_up: TiltUp) -> None:
    """The UI built into our Tilt binary (a source build without it stops at "web static files")."""
    page = requests.get(f"http://localhost:{tilt_up.port}/", timeout=10)
    assert page.status_code == 200 and '<div id="root">' in page.text, page.text[:500]
    scripts = re.findall(r'src="(/static/js/[^"]+\.js)"', page.text)
    assert scripts, "index.html names no script bundle"
    bundle = requests.get(f"http://localhost:{tilt_up.port}{scripts[0]}", timeout=10)
    assert bundle.status_code == 200 and len(bundle.content) > 100_000


def _worker_pods(reader: ClusterReader) -> dict[str, str]:
    """uid -> image of every running worker pod."""
    return {p.metadata.uid: p.spec.containers[0].image for p in reader.pods(reader.release.selector("worker"))}


def _health_result(api: TaskApi) -> dict[str, Any]:
    task = api.submit("health_check")
    return api.wait_for_success(task["id"], timeout=60)["result"]


def test_a_task_edit_reaches_the_workers_without_a_rebuild(tilt_up: TiltUp, local_api: TaskApi,
                                                           reader: ClusterReader) -> None:
    before = _worker_pods(reader)
    marker = uuid.uuid4().hex
    path = tilt_up.workspace / TASKS_FILE
    source = path.read_text()
    assert source.count(RESULT_LINE) == 1, f"{TASKS_FILE} changed: update RESULT_LINE"
    path.write_text(source.replace(RESULT_LINE, RESULT_LINE[:-1] + f', "live_update": "{marker}"}}'))

    seen: list[Any] = []

    def new_code_answers() -> bool:
        result = _health_result(local_api)
        seen.append(result.get("live_update"))
        return result.get("live_update") == marker

    wait_for(new_code_answers, timeout=180, interval=3, description="health_check to return the edited value",
             retry_on=(TaskApiError, WaitTimeout, requests.ConnectionError),
             diagnostics=lambda: f"live_update values seen: {seen[-5:]}\n--- tilt up:\n{tail(tilt_up.log, 60)}")
    assert _worker_pods(reader) == before, "live update replaced pods or images: it should only sync files"


def test_make_flower_prints_the_login_and_forwards(tilt_up: TiltUp, release: Release, reader: ClusterReader) -> None:
    port = free_port()
    env = {**_tilt_env(), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(["make", "--no-print-directory", "flower", f"RELEASE={release.name}",
                                f"NAMESPACE={release.namespace}", f"FLOWER_PORT={port}"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        login: list[str] = []
        for line in process.stdout:  # type: ignore[union-attr]
            found = re.search(rf"Flower: http://localhost:{port}/ +user: (\S+) +password: (\S+)", line)
            if found:
                login = [found[1], found[2]]
                break
        assert login, "make flower printed no login"
        assert tuple(login) == _flower_login(reader)
        url = f"http://localhost:{port}/api/workers"

        wait_for(lambda: requests.get(url, auth=tuple(login), timeout=5).status_code == 200, timeout=60,
                 description=f"Flower through `make flower` on localhost:{port}", retry_on=(requests.ConnectionError,))
        assert requests.get(url, timeout=5).status_code == 401
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


def test_a_dependency_change_rebuilds_the_image(tilt_up: TiltUp, reader: ClusterReader) -> None:
    before = _registry_images(reader)
    with (tilt_up.workspace / "pyproject.toml").open("a") as pyproject:
        pyproject.write(f"\n# tilt-test {uuid.uuid4().hex}: a dependency file changed, so Tilt rebuilds\n")

    def rolled_out() -> bool:
        now = _registry_images(reader)
        if any(now.get(name) == image for name, image in before.items()):
            return False
        return all(p.spec.containers[0].image in now.values() for p in reader.pods(reader.release.selector("worker")))

    wait_for(rolled_out, timeout=15 * 60, interval=5, description="a new image on every Deployment and worker pod",
             diagnostics=lambda: f"before: {before}\nnow: {_registry_images(reader)}\n{tail(tilt_up.log, 60)}")
