"""Live-cluster tests of a celery-stack release (`make kind-test`).

Without a reachable cluster every test here is skipped with the reason; with K8S_TESTS_REQUIRED=1
(CI's kind job, `make kind-test`) an unreachable cluster is an error instead, so CI cannot pass by
skipping. A failing test gets the release's pod states, log tails and events attached to its report
and, with K8S_TESTS_ARTIFACTS set, written to that directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from k8s_support.api import TaskApi
from k8s_support.cluster import Probe, probe
from k8s_support.diagnostics import describe_pods, write_dump
from k8s_support.portforward import PortForward
from k8s_support.release import ClusterReader, Release, service_port

HERE = Path(__file__).resolve().parent
PROBE_KEY = pytest.StashKey[Probe]()

#: Run order: plain checks first, then tests that change scale or kill pods, then the upgrades, and
#: `helm uninstall` at the very end (nothing can run against the release after it).
ORDER_MARKERS = ("disruptive", "upgrade", "uninstall")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "disruptive: scales pools or deletes pods (runs after the others)")
    config.addinivalue_line("markers", "upgrade: helm upgrade + helm test (runs after the disruptive tests)")
    config.addinivalue_line("markers", "uninstall: helm uninstall, the end of the suite (runs last; also marked "
                                       "upgrade, so `-m 'not upgrade'` keeps the release)")
    config.addinivalue_line("markers", "sentinel: needs the built-in Redis in Sentinel mode (skipped otherwise; "
                                       "`make cluster-test` runs them in a Sentinel release of its own)")
    config.addinivalue_line("markers", "tilt: runs Tilt in a release of its own (`make tilt-test`; deselected "
                                       "by default in pytest.ini)")


def _ours(item: pytest.Item) -> bool:
    return HERE in Path(str(item.path)).resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if _ours(item)]
    if not ours:
        return
    release = Release.from_env()
    result = probe(release.context)
    config.stash[PROBE_KEY] = result
    if not result.reachable:
        message = (
            f"no Kubernetes cluster reachable: {result.reason.rstrip('.')}. "
            "Create one with `make kind-up`, then run `make kind-test`."
        )
        if os.environ.get("K8S_TESTS_REQUIRED") == "1":
            raise pytest.UsageError(f"K8S_TESTS_REQUIRED=1 but {message}")
        skip = pytest.mark.skip(reason=message)
        for item in ours:
            item.add_marker(skip)
        return

    def rank(item: pytest.Item) -> int:  # the latest of its markers
        return max((p for p, marker in enumerate(ORDER_MARKERS, start=1) if item.get_closest_marker(marker)),
                   default=0)

    ordered = sorted(ours, key=rank)  # stable: file and definition order within a rank
    slots = iter(ordered)
    items[:] = [next(slots) if _ours(item) else item for item in items]


@pytest.fixture(scope="session")
def release() -> Release:
    return Release.from_env()


@pytest.fixture(scope="session")
def api_client(pytestconfig: pytest.Config) -> Any:
    result = pytestconfig.stash[PROBE_KEY]
    assert result.client is not None, result.reason
    return result.client


@pytest.fixture(scope="session")
def core(api_client: Any) -> Any:
    from kubernetes import client

    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def apps(api_client: Any) -> Any:
    from kubernetes import client

    return client.AppsV1Api(api_client)


@pytest.fixture(scope="session")
def batch(api_client: Any) -> Any:
    from kubernetes import client

    return client.BatchV1Api(api_client)


@pytest.fixture(scope="session")
def custom(api_client: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="session")
def reader(core: Any, apps: Any, release: Release) -> ClusterReader:
    return ClusterReader(core, apps, release)


@pytest.fixture(scope="session")
def dump(core: Any, release: Release) -> Callable[[], str]:
    """Pods, logs and events of the release: pass as ``diagnostics=`` to wait_for."""
    return lambda: describe_pods(core, release.namespace, release.selector())


@pytest.fixture
def forward(release: Release) -> Iterator[Callable[[str, int], PortForward]]:
    """Open port-forwards for one test (closed after it): ``forward("svc/name", port).url``."""
    opened: list[PortForward] = []

    def open_forward(target: str, port: int) -> PortForward:
        pf = PortForward(target, port, namespace=release.namespace, context=release.context).start()
        opened.append(pf)
        return pf

    yield open_forward
    for pf in opened:
        pf.stop()


@pytest.fixture(scope="module")
def web_url(release: Release, reader: ClusterReader) -> Iterator[str]:
    service = reader.service("web")
    with PortForward(
        f"svc/{service.metadata.name}", service_port(service, "http"),
        namespace=release.namespace, context=release.context,
    ) as pf:
        yield pf.url


@pytest.fixture(scope="module")
def task_api(web_url: str, reader: ClusterReader) -> TaskApi:
    """The web API through a port-forward, authenticated with API_TOKEN from the release's Secret."""
    token = reader.environment("web", "web").get("API_TOKEN")
    assert token, "the web container's environment has no API_TOKEN (release Secret)"
    return TaskApi(web_url, token)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.failed and _ours(item) and call.when in ("setup", "call"):
        result = item.config.stash.get(PROBE_KEY, None)
        if result is not None and result.reachable:
            from kubernetes import client

            release = Release.from_env()
            text = describe_pods(client.CoreV1Api(result.client), release.namespace, release.selector())
            report.sections.append(("cluster state", text))
            artifacts = os.environ.get("K8S_TESTS_ARTIFACTS")
            if artifacts:
                write_dump(Path(artifacts), item.nodeid, text)
    return report
