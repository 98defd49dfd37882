"""The chart and the app agree: queues, pools, command lines, env var names and ports come from the app."""

from __future__ import annotations

import shlex
from pathlib import Path

from apps.main.queues import QUEUES, TASK_QUEUES, WORKER_POOLS, queue_for
from portfolio_site import commands, environment, ports
from tests.chart.conftest import pod_specs
from tests.support.render import ROOT, find, one, render_chart

APP_ENV_NAMES = {v for k, v in vars(environment).items() if k.isupper() and isinstance(v, str)}
#: Set by the chart only to build others through dependent env var expansion, or read by the images.
CHART_INTERNAL = {"REDIS_PASSWORD", "DATABASE_PASSWORD", "FLOWER_USER", "FLOWER_PASSWORD", "REDISCLI_AUTH",
                  "POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD", "PGDATA",
                  # Redis Sentinel mode's pods: their name, and the stable DNS name built from it.
                  "POD_NAME", "REDIS_ANNOUNCE_HOST"}


def pool_queues(manifests: list[dict]) -> dict[str, list[str]]:
    out = {}
    for d in find(manifests, "Deployment"):
        if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker":
            cmd = d["spec"]["template"]["spec"]["containers"][0]["args"]
            out[d["metadata"]["labels"]["celery-stack.io/pool"]] = cmd[cmd.index("-Q") + 1].split(",")
    return out


def test_every_routed_queue_has_a_pool_and_every_pool_queue_exists(manifests: list[dict]) -> None:
    consumed = {q for queues in pool_queues(manifests).values() for q in queues}
    routed = {queue_for(t) for t in [*TASK_QUEUES, "health_check"]}
    assert routed <= consumed
    assert consumed <= set(QUEUES)


def test_default_pools_equal_worker_pools() -> None:
    assert pool_queues(render_chart()) == {n: list(p.queues) for n, p in WORKER_POOLS.items()}


def test_command_lines_are_the_apps(helm: str) -> None:
    manifests = render_chart(helm=helm)
    def container(kind, name):
        return one(manifests, kind, f"rel-celery-stack-{name}")["spec"]["template"]["spec"][
            "containers"][0]
    assert container("Deployment", "web")["args"] == commands.web(ports.WEB_PORT, 2)
    assert container("Deployment", "beat")["args"] == commands.beat()
    assert container("Deployment", "flower")["args"] == commands.flower(ports.FLOWER_PORT)
    assert container("Deployment", "exporter")["args"] == commands.exporter(ports.EXPORTER_PORT)
    (job,) = find(manifests, "Job")
    migrate = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert migrate[:2] == ["sh", "-c"]
    assert migrate[2] == " && ".join(shlex.join(c) for c in commands.MIGRATE)
    assert job["spec"]["template"]["spec"]["initContainers"][0]["args"] == commands.wait_for_database(300)


def test_every_env_var_the_chart_sets_is_one_the_app_reads(manifests: list[dict]) -> None:
    settings_source = "\n".join(p.read_text() for p in (ROOT / "app/portfolio_site/settings").glob("*.py"))
    config = find(manifests, "ConfigMap", "rel-celery-stack-config")[0]
    names = set(config["data"])
    for _, spec in pod_specs(manifests):
        for c in spec.get("initContainers", []) + spec["containers"]:
            names |= {e["name"] for e in c.get("env", [])}
    unknown = {n for n in names - CHART_INTERNAL - APP_ENV_NAMES if f'"{n}"' not in settings_source}
    assert not unknown


def test_ports_are_the_apps() -> None:
    manifests = render_chart()
    def port(name):
        return one(manifests, "Service", f"rel-celery-stack-{name}")["spec"]["ports"][0]["port"]
    assert port("web") == ports.WEB_PORT
    assert port("flower") == ports.FLOWER_PORT
    assert port("exporter") == ports.EXPORTER_PORT
    assert port("redis") == ports.REDIS_PORT
    assert port("postgresql") == ports.POSTGRES_PORT


def test_chart_settings_module_exists() -> None:
    config = one(render_chart(), "ConfigMap", "rel-celery-stack-config")
    path = Path(ROOT / "app" / (config["data"]["DJANGO_SETTINGS_MODULE"].replace(".", "/") + ".py"))
    assert path.exists(), path


def test_app_containers_keep_the_images_tini_entrypoint(manifests: list[dict]) -> None:
    """`command:` would replace the image's ENTRYPOINT (tini): SIGTERM must reach Celery through tini."""
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in dockerfile  # no -g: only the main process is signalled
    image_roles = {"web", "worker", "beat", "flower", "exporter", "migrate", "test"}
    for _, spec in pod_specs(manifests):
        for c in spec.get("initContainers", []) + spec["containers"]:
            if c["name"] in image_roles or c["name"].startswith("wait"):
                assert "command" not in c and c.get("args"), c["name"]
