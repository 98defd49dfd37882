"""beat, flower, web, redis, database, migrations and the helm test Pod."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.chart.conftest import env_of
from tests.support.render import CHART, VALUES_EXAMPLES, HelmError, find, one, render_chart, run_helm

N = "rel-celery-stack"


def test_beat_is_a_singleton(manifests: list[dict]) -> None:
    beat = one(manifests, "Deployment", f"{N}-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    autoscaled = {o["spec"]["scaleTargetRef"]["name"] for o in manifests
                  if o["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")}
    assert f"{N}-beat" not in autoscaled


def test_flower_auth_port_and_max_tasks() -> None:
    manifests = render_chart()
    flower = one(manifests, "Deployment", f"{N}-flower")
    assert flower["spec"]["replicas"] == 1
    env = env_of(flower["spec"]["template"]["spec"]["containers"][0])
    assert env["FLOWER_BASIC_AUTH"]["value"] == "$(FLOWER_USER):$(FLOWER_PASSWORD)"
    assert env["FLOWER_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": f"{N}-flower", "key": "password"}
    assert one(manifests, "ConfigMap", f"{N}-config")["data"]["FLOWER_MAX_TASKS"] == "10000"
    service = one(manifests, "Service", f"{N}-flower")
    assert service["spec"]["type"] == "ClusterIP"
    assert one(manifests, "Secret", f"{N}-flower")


def test_notes_print_port_forward_and_password(helm: str, tmp_path: Path) -> None:
    # `helm template` does not print NOTES.txt and `install --dry-run` needs a cluster: render the notes
    # through tpl in a copy of the chart.
    chart = tmp_path / "celery-stack"
    shutil.copytree(CHART, chart)
    shutil.copy(chart / "templates" / "NOTES.txt", chart / "notes.txt")
    (chart / "templates" / "zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        "  notes: {{ tpl (.Files.Get \"notes.txt\") . | toJson }}\n")
    done = run_helm(["template", "rel", str(chart), "--namespace", "ns", "--set", "crds.skipCapabilitiesCheck=true",
                     "--show-only", "templates/zz-notes.yaml"], helm=helm)
    notes = yaml.safe_load(done.stdout)["data"]["notes"]
    assert f"kubectl --namespace ns port-forward service/{N}-flower 5555:5555" in notes
    assert f"get secret {N}-flower -o jsonpath='{{.data.password}}' | base64 -d" in notes


def test_web_probes_service_and_hpa() -> None:
    manifests = render_chart(values_files=[VALUES_EXAMPLES / "production.yaml"])
    web = one(manifests, "Deployment", f"{N}-web")
    assert "replicas" not in web["spec"]  # HPA-managed
    c = web["spec"]["template"]["spec"]["containers"][0]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert one(manifests, "HorizontalPodAutoscaler", f"{N}-web")["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert one(manifests, "Ingress", f"{N}-web")["spec"]["rules"][0]["host"] == "tasks.example.com"
    assert one(manifests, "PodDisruptionBudget", f"{N}-web")
    assert web["spec"]["template"]["spec"]["topologySpreadConstraints"]


def test_builtin_redis() -> None:
    manifests = render_chart()
    sts = one(manifests, "StatefulSet", f"{N}-redis")
    c = sts["spec"]["template"]["spec"]["containers"][0]
    script = c["command"][2]
    assert "--appendonly yes" in script and "--maxmemory-policy noeviction" in script
    assert "requirepass" in script and "$REDISCLI_AUTH" in script
    assert env_of(c)["REDISCLI_AUTH"]["valueFrom"]["secretKeyRef"]["name"] == f"{N}-redis"
    assert "redis-cli" in c["livenessProbe"]["exec"]["command"][2]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    web_env = env_of(one(manifests, "Deployment", f"{N}-web")["spec"]["template"]["spec"]["containers"][0])
    assert web_env["REDIS_URL"]["value"] == f"redis://:$(REDIS_PASSWORD)@{N}-redis:6379/0"
    names = list(web_env)
    assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL")  # dependent env var expansion order


def test_valkey_image_is_configurable() -> None:
    manifests = render_chart({"redis": {"image": {"repository": "valkey/valkey", "tag": "8.1"},
                                        "serverCommand": "valkey-server", "cliCommand": "valkey-cli"}})
    c = one(manifests, "StatefulSet", f"{N}-redis")["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "valkey/valkey:8.1" and "exec valkey-server" in c["command"][2]


def test_external_redis_with_tls() -> None:
    manifests = render_chart(values_files=[VALUES_EXAMPLES / "production.yaml"])
    assert not find(manifests, "StatefulSet", f"{N}-redis")
    env = env_of(one(manifests, "Deployment", f"{N}-web")["spec"]["template"]["spec"]["containers"][0])
    assert env["REDIS_URL"]["value"] == \
        "rediss://:$(REDIS_PASSWORD)@redis.example.internal:6380/2?ssl_cert_reqs=required"


def test_database_builtin_and_external() -> None:
    builtin = render_chart()
    env = env_of(one(builtin, "Deployment", f"{N}-web")["spec"]["template"]["spec"]["containers"][0])
    assert env["DATABASE_URL"]["value"] == f"postgres://celery_stack:$(DATABASE_PASSWORD)@{N}-postgresql:5432/celery_stack"
    assert one(builtin, "Secret", f"{N}-postgresql")["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    prod = render_chart(values_files=[VALUES_EXAMPLES / "production.yaml"])
    assert not find(prod, "StatefulSet", f"{N}-postgresql")
    env = env_of(one(prod, "Deployment", f"{N}-web")["spec"]["template"]["spec"]["containers"][0])
    assert env["DATABASE_URL"]["value"].endswith("@postgres.example.internal:5432/celery_stack?sslmode=verify-full")
    url_secret = render_chart({"postgresql": {"enabled": False},
                               "externalDatabase": {"existingSecret": "db", "existingSecretUrlKey": "url"}})
    env = env_of(one(url_secret, "Deployment", f"{N}-web")["spec"]["template"]["spec"]["containers"][0])
    assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "db", "key": "url"}


def test_missing_external_settings_fail_clearly() -> None:
    with pytest.raises(HelmError, match=r"externalRedis\.host"):
        render_chart({"redis": {"enabled": False}})
    with pytest.raises(HelmError, match="externalDatabase"):
        render_chart({"postgresql": {"enabled": False}})


def test_migrations_as_hook_and_as_plain_job() -> None:
    job = one(render_chart(), "Job", f"{N}-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"  # logs kept until the next run
    plain = find(render_chart({"migrations": {"useHelmHooks": False}}), "Job")
    assert len(plain) == 1 and "annotations" not in plain[0]["metadata"]
    assert plain[0]["metadata"]["name"].startswith(f"{N}-migrate-")
    assert plain[0]["spec"]["ttlSecondsAfterFinished"] > 0


def test_every_app_role_but_flower_waits_for_migrations() -> None:
    manifests = render_chart()
    for d in find(manifests, "Deployment"):
        init = d["spec"]["template"]["spec"].get("initContainers", [])
        if d["metadata"]["name"].endswith("-flower"):
            continue
        assert init and init[0]["args"][:5] == ["python", "manage.py", "wait_for_migrations", "--timeout", "600"]


def test_helm_test_pod_runs_the_health_task() -> None:
    pod = one(render_chart(), "Pod", f"{N}-test-health")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["containers"][0]["args"] == ["python", "manage.py", "test_celery", "--task=health",
                                                       "--timeout", "120"]
