"""beat, flower, web, redis, database, migrations and the helm test Pod."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from portfolio_site import commands
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


def render_notes(chart_copy: Path, helm: str, *sets: str) -> str:
    # `helm template` does not print NOTES.txt and `install --dry-run` needs a cluster: render the notes
    # through tpl in a copy of the chart.
    if not chart_copy.exists():
        shutil.copytree(CHART, chart_copy)
        shutil.copy(chart_copy / "templates" / "NOTES.txt", chart_copy / "notes.txt")
        (chart_copy / "templates" / "zz-notes.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
            "  notes: {{ tpl (.Files.Get \"notes.txt\") . | toJson }}\n")
    args = ["template", "rel", str(chart_copy), "--namespace", "ns", "--set", "crds.skipCapabilitiesCheck=true"]
    for value in sets:
        args += ["--set", value]
    done = run_helm([*args, "--show-only", "templates/zz-notes.yaml"], helm=helm)
    return yaml.safe_load(done.stdout)["data"]["notes"]


def test_notes_print_port_forward_and_password(helm: str, tmp_path: Path) -> None:
    notes = render_notes(tmp_path / "celery-stack", helm)
    assert f"kubectl --namespace ns port-forward service/{N}-flower 5555:5555" in notes
    assert f"get secret {N}-flower -o jsonpath='{{.data.password}}' | base64 -d" in notes


def test_notes_name_the_migration_job_of_the_revision_or_warn_about_hooks(helm: str, tmp_path: Path) -> None:
    plain = render_notes(tmp_path / "celery-stack", helm)
    assert f"kubectl --namespace ns logs job/{N}-migrate-1 --all-containers" in plain
    assert "hook" not in plain
    hooks = render_notes(tmp_path / "celery-stack", helm, "migrations.useHelmHooks=true")
    assert f"hook Job ({N}-migrate)" in hooks and "helm install --wait" in hooks


def test_web_runs_gunicorn_without_a_control_socket() -> None:
    """gunicorn >= 25 puts a control socket in $HOME/.gunicorn/: HOME is /nonexistent on the read-only root."""
    args = one(render_chart(), "Deployment", f"{N}-web")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "gunicorn" and "--no-control-socket" in args
    gunicorn = Path(sys.executable).parent / "gunicorn"  # the locked gunicorn, as in the image
    usage = subprocess.run([str(gunicorn), "--help"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "--no-control-socket" in usage


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


def test_migrations_default_to_a_plain_job_per_revision_that_needs_no_hook() -> None:
    """`helm install --wait` waits for pods that wait for the migrations: by default nothing of the
    release may be a hook that Helm runs only after the wait (the `helm test` Pod aside)."""
    manifests = render_chart()
    hooks = [(m["kind"], m["metadata"]["annotations"]["helm.sh/hook"]) for m in manifests
             if "helm.sh/hook" in m["metadata"].get("annotations", {})]
    assert hooks == [("Pod", "test")]
    (job,) = find(manifests, "Job")
    assert job["metadata"]["name"] == f"{N}-migrate-1"  # `helm template` renders revision 1
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    # Argo CD renders with `helm template` (revision 1 every time): a Sync hook it replaces on each sync.
    annotations = job["metadata"]["annotations"]
    assert annotations == {"argocd.argoproj.io/hook": "Sync",
                           "argocd.argoproj.io/hook-delete-policy": "BeforeHookCreation"}


def test_the_plain_job_is_named_per_revision(helm: str, tmp_path: Path) -> None:
    # `helm template` always renders revision 1: set another one in a copy of the chart.
    chart = tmp_path / "celery-stack"
    shutil.copytree(CHART, chart)
    job = chart / "templates" / "migrations" / "migrate-job.yaml"
    job.write_text('{{- $_ := set .Release "Revision" 7 }}\n' + job.read_text())
    done = run_helm(["template", "rel", str(chart), "--namespace", "ns", "--set", "crds.skipCapabilitiesCheck=true",
                     "--show-only", "templates/migrations/migrate-job.yaml"], helm=helm)
    assert yaml.safe_load(done.stdout)["metadata"]["name"] == f"{N}-migrate-7"


def test_migrations_as_helm_hooks_on_request() -> None:
    job = one(render_chart({"migrations": {"useHelmHooks": True}}), "Job", f"{N}-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "post-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"  # logs kept until the next run
    assert not any(key.startswith("argocd.argoproj.io/") for key in annotations)
    assert "ttlSecondsAfterFinished" not in job["spec"]


@pytest.mark.parametrize("use_hooks", [False, True], ids=["plain", "hooks"])
def test_the_migration_job_waits_for_the_database_before_migrating(use_hooks: bool) -> None:
    (job,) = find(render_chart({"migrations": {"useHelmHooks": use_hooks}}), "Job")
    spec = job["spec"]["template"]["spec"]
    (wait,) = spec["initContainers"]
    (migrate,) = spec["containers"]
    assert wait["name"] == "wait-for-database"
    assert wait["args"] == commands.wait_for_database(300)
    assert env_of(wait)["DATABASE_URL"] == env_of(migrate)["DATABASE_URL"]
    assert "migrate --noinput" in migrate["args"][2]
    # Retries wait again; the deadline leaves the wait and the migrations their time.
    assert job["spec"]["activeDeadlineSeconds"] > 300 and job["spec"]["backoffLimit"] >= 1


def test_the_database_wait_must_fit_in_the_jobs_deadline() -> None:
    waited = one(render_chart({"migrations": {"waitForDatabaseTimeoutSeconds": 60}}), "Job", f"{N}-migrate-1")
    assert waited["spec"]["template"]["spec"]["initContainers"][0]["args"][-1] == "60"
    with pytest.raises(HelmError, match=r"waitForDatabaseTimeoutSeconds \(900\) must be below"):
        render_chart({"migrations": {"waitForDatabaseTimeoutSeconds": 900}})


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
    # Kept after it passed, for `helm test --logs`; the next `helm test` deletes it first.
    assert pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["containers"][0]["args"] == ["python", "manage.py", "test_celery", "--task=health",
                                                       "--timeout", "120"]
