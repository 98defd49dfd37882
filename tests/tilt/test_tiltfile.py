"""The Tiltfile, evaluated by a real Tilt (`tilt alpha tiltfile-result`, no cluster needed).

Tilt is built from its Go module by tests/support/tools.py (pinned, cached in .tools/); its helm()
runs the project's pinned helm 3. Assertions are on Tilt's own JSON result: resources, image build,
live-update steps and port-forwards.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet

from apps.main.queues import WORKER_POOLS
from portfolio_site.ports import FLOWER_PORT, WEB_PORT
from tests.support.render import render_chart
from tests.support.tools import helm_binary, tool_path

ROOT = Path(__file__).resolve().parents[2]
KIND_VALUES = ROOT / "values-examples" / "kind.yaml"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "Job", "DaemonSet", "CronJob"}
#: Files Tilt always watches whether or not they exist (its own config and ignore files).
OPTIONAL_CONFIG_FILES = {"tilt_config.json", ".tiltignore"}

# Building Tilt from source takes a few minutes on a cold machine (cached afterwards).
pytestmark = pytest.mark.timeout(1800)


@functools.lru_cache(maxsize=4)
def _tiltfile_result(*tilt_args: str) -> dict[str, Any]:
    tilt = tool_path("tilt-headless")  # evaluation only: no web UI needed
    helm_dir = helm_binary("helm3").parent  # Tilt runs `helm template` from PATH
    env = {
        **os.environ,
        "PATH": f"{helm_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        # No cluster and no kubeconfig: evaluation must not depend on either.
        "KUBECONFIG": str(ROOT / ".tools" / "no-kubeconfig"),
        "TILT_DISABLE_ANALYTICS": "1",
    }
    argv = [str(tilt), "alpha", "tiltfile-result", *(["--", *tilt_args] if tilt_args else [])]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"`{' '.join(argv)}` exited {done.returncode}:\n{done.stderr}"
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    return _tiltfile_result()


@pytest.fixture(scope="module")
def keda_result() -> dict[str, Any]:
    return _tiltfile_result("--keda")


def manifests(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["Name"]: m for m in result["Manifests"]}


def k8s_objects(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    text = (manifest.get("DeployTarget") or {}).get("yaml") or ""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def image_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for m in result["Manifests"] for t in m.get("ImageTargets") or []]


def test_every_path_tilt_syncs_or_watches_exists(result: dict[str, Any]) -> None:
    paths: list[str] = []
    for target in image_targets(result):
        spec = target["LiveUpdateSpec"]
        base = Path(spec["basePath"])
        paths += [str(base / sync["localPath"]) for sync in spec["syncs"]]
        paths += [str(base / p) for p in spec.get("stopPaths", [])]
        paths += [str(base / p) for e in spec.get("execs", []) for p in e.get("triggerPaths", [])]
        details = target["BuildDetails"]
        paths.append(details["context"])
    for manifest in result["Manifests"]:
        paths += (manifest.get("DeployTarget") or {}).get("Deps") or []
    paths += [p for p in result["ConfigFiles"] if Path(p).name not in OPTIONAL_CONFIG_FILES]
    assert paths
    missing = sorted(p for p in paths if not Path(p).exists())
    assert not missing, f"the Tiltfile refers to paths that do not exist: {missing}"


def test_chart_and_values_files_are_the_ones_tilt_reads(result: dict[str, Any]) -> None:
    config_files = {Path(p) for p in result["ConfigFiles"]}
    assert ROOT / "charts" / "celery-stack" in config_files
    assert KIND_VALUES in config_files
    assert (ROOT / "charts" / "celery-stack" / "Chart.yaml").is_file()


def test_image_is_built_from_the_dockerfile_with_live_update(result: dict[str, Any]) -> None:
    targets = image_targets(result)
    repository = yaml.safe_load(KIND_VALUES.read_text())["image"]["repository"]
    assert targets and {t["selector"] for t in targets} == {repository}
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    workdirs = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("WORKDIR ")]
    for target in targets:
        assert target["BuildDetails"]["dockerfileContents"] == dockerfile
        spec = target["LiveUpdateSpec"]
        # app/ lands where the image keeps the code (the runtime stage's WORKDIR).
        assert spec["syncs"] == [{"localPath": "app", "containerPath": workdirs[-1]}]
        # Dependency or image changes rebuild (uv sync runs in the Dockerfile), never sync.
        assert {"pyproject.toml", "uv.lock", "docker"} <= set(spec["stopPaths"])
        (execs,) = spec["execs"]
        assert execs["triggerPaths"] == ["app"]
        assert "kill -HUP 1" in execs["args"][-1]


def test_reload_step_signals_only_gunicorn_and_celery_workers(result: dict[str, Any], tmp_path: Path) -> None:
    """Run the live-update command with /proc/1/cmdline stood in by each role's real command line."""
    (script,) = {e["args"][-1] for t in image_targets(result) for e in t["LiveUpdateSpec"]["execs"]}
    commands = {
        "web": ["gunicorn", "portfolio_site.wsgi:application", "--bind", "0.0.0.0:8000"],
        "worker": ["celery", "-A", "portfolio_site", "worker", "-Q", "default", "-n", "default@%h"],
        "tini-worker": ["/usr/bin/tini", "--", "celery", "-A", "portfolio_site", "worker", "-Q", "default"],
        "beat": ["celery", "-A", "portfolio_site", "beat", "--loglevel", "INFO"],
        "flower": ["python", "manage.py", "start_flower", "--port=5555"],
        "exporter": ["python", "manage.py", "run_queue_exporter", "--port", "9809"],
    }
    signalled = {}
    for role, argv in commands.items():
        cmdline = tmp_path / f"{role}.cmdline"
        cmdline.write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        # `kill` is replaced by a function that records its arguments instead of signalling PID 1.
        probe = script.replace("/proc/1/cmdline", str(cmdline))
        done = subprocess.run(["sh", "-c", f'kill() {{ echo "kill $*"; }}; {probe}'],
                              capture_output=True, text=True, timeout=10, check=False)
        assert done.returncode == 0, done.stderr
        signalled[role] = done.stdout.strip()
    assert signalled == {
        "web": "kill -HUP 1", "worker": "kill -HUP 1", "tini-worker": "kill -HUP 1",
        "beat": "", "flower": "", "exporter": "",
    }


def test_every_chart_workload_is_a_tilt_resource(result: dict[str, Any]) -> None:
    by_name = manifests(result)
    assert "uncategorized" not in by_name, "objects Tilt could not assign to a resource"
    tilt_workloads: dict[tuple[str, str], str] = {}
    for name, manifest in by_name.items():
        workloads = [o for o in k8s_objects(manifest) if o["kind"] in WORKLOAD_KINDS]
        assert len(workloads) <= 1, f"resource {name} holds several workloads: {workloads}"
        for obj in workloads:
            tilt_workloads[(obj["kind"], obj["metadata"]["name"])] = name

    values = yaml.safe_load(KIND_VALUES.read_text())
    values.setdefault("migrations", {})["useHelmHooks"] = False  # as the Tiltfile sets it
    rendered = render_chart(values, release="celery-stack", namespace="celery-stack")
    chart_workloads = {(m["kind"], m["metadata"]["name"]) for m in rendered if m["kind"] in WORKLOAD_KINDS}
    assert set(tilt_workloads) == chart_workloads

    pools = {name.removeprefix("worker-") for name in by_name if name.startswith("worker-")}
    assert pools == set(WORKER_POOLS)


def test_resources_are_grouped_by_role(result: dict[str, Any]) -> None:
    labels = {name: sorted(m.get("Labels") or {}) for name, m in manifests(result).items()}
    assert labels["web"] == ["web"]
    assert labels["beat"] == ["scheduler"]
    assert labels["flower"] == labels["exporter"] == ["monitoring"]
    assert labels["redis"] == labels["postgresql"] == ["infra"]
    assert labels["migrations"] == ["setup"]
    for pool in WORKER_POOLS:
        assert labels[f"worker-{pool}"] == ["workers"]
    for check in ("unit-tests", "test-celery", "cluster-tests"):
        assert labels[check] == ["tests"]
    unlabelled = sorted(name for name, value in labels.items() if not value)
    assert not unlabelled


def test_port_forwards_match_the_chart_ports(result: dict[str, Any]) -> None:
    forwards = {
        name: (m["DeployTarget"].get("portForwardTemplateSpec") or {}).get("forwards", [])
        for name, m in manifests(result).items()
        if m.get("DeployTarget") and "yaml" in m["DeployTarget"]
    }
    assert forwards.pop("web") == [{"localPort": WEB_PORT, "containerPort": WEB_PORT, "host": "localhost",
                                    "name": "web"}]
    assert forwards.pop("flower") == [{"localPort": FLOWER_PORT, "containerPort": FLOWER_PORT,
                                       "host": "localhost", "name": "flower"}]
    assert not any(forwards.values()), f"unexpected port-forwards: {forwards}"


def test_migrations_are_a_plain_job_and_start_after_redis_and_postgres(result: dict[str, Any]) -> None:
    by_name = manifests(result)
    (job,) = [o for o in k8s_objects(by_name["migrations"]) if o["kind"] == "Job"]
    annotations = job["metadata"].get("annotations") or {}
    assert "helm.sh/hook" not in annotations, "Tilt drops hooks: the migration Job must be a plain Job"
    assert set(by_name["migrations"]["ResourceDependencies"]) == {"config", "redis", "postgresql"}
    for name in ("web", "beat", "flower", "exporter", *(f"worker-{p}" for p in WORKER_POOLS)):
        assert "migrations" in by_name[name]["ResourceDependencies"], name


def test_checks_are_manual_buttons(result: dict[str, Any]) -> None:
    by_name = manifests(result)
    commands = {name: by_name[name]["DeployTarget"]["UpdateCmdSpec"]["args"][-1]
                for name in ("unit-tests", "test-celery", "cluster-tests")}
    assert commands["unit-tests"].startswith("uv run pytest tests")
    assert "python manage.py test_celery --task=health" in commands["test-celery"]
    web = next(o for o in k8s_objects(by_name["web"]) if o["kind"] == "Deployment")
    assert f"deploy/{web['metadata']['name']} " in commands["test-celery"]
    assert commands["cluster-tests"].startswith("uv run pytest k8s-tests")
    for name in commands:
        # TRIGGER_MODE_MANUAL without auto-init: they run when the button is pressed.
        assert by_name[name]["TriggerMode"] == 2, name


def test_default_dev_loop_runs_fixed_replicas_without_keda(result: dict[str, Any]) -> None:
    objects = [o for m in result["Manifests"] for o in k8s_objects(m)]
    assert not [o for o in objects if o["kind"] == "ScaledObject"]
    assert "keda" not in manifests(result)


def test_keda_flag_installs_pinned_keda_before_the_scaled_objects(keda_result: dict[str, Any]) -> None:
    by_name = manifests(keda_result)
    versions = dict(
        line.split("=", 1) for line in (ROOT / "k8s-tests" / "cluster" / "versions.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    install = by_name["keda"]["DeployTarget"]["UpdateCmdSpec"]["args"][-1]
    assert f"kedacore/keda --version {versions['KEDA_CHART_VERSION']}" in install
    scaled = [o for o in k8s_objects(by_name["config"]) if o["kind"] == "ScaledObject"]
    assert {o["metadata"]["labels"]["celery-stack.io/pool"] for o in scaled} == set(WORKER_POOLS)
    assert by_name["config"]["ResourceDependencies"] == ["keda"]


def test_dev_credentials_are_generated_once_and_wired_into_the_chart(result: dict[str, Any]) -> None:
    """`helm template` cannot keep the chart's generated Secrets: the Tiltfile keeps its own (.local/)."""
    config = manifests(result)["config"]
    secrets = {o["metadata"]["name"]: o["stringData"] for o in k8s_objects(config) if o["kind"] == "Secret"
               and "stringData" in o}
    assert set(secrets["celery-stack-dev-app"]) == {"DJANGO_SECRET_KEY", "API_TOKEN", "PAYLOAD_ENCRYPTION_KEYS"}
    assert Fernet(secrets["celery-stack-dev-app"]["PAYLOAD_ENCRYPTION_KEYS"].encode())  # a valid key
    assert set(secrets["celery-stack-dev-credentials"]) == {"flower-password", "redis-password", "postgres-password"}
    # A second evaluation (what every `tilt up` and Tiltfile edit does) renders the same values.
    again = manifests(_tiltfile_result.__wrapped__())["config"]
    assert [o for o in k8s_objects(again) if o["kind"] == "Secret"] == [
        o for o in k8s_objects(config) if o["kind"] == "Secret"]
    web = next(o for m in result["Manifests"] for o in k8s_objects(m) if o["kind"] == "Deployment"
               and o["metadata"]["name"] == "celery-stack-web")
    env_from = [e["secretRef"]["name"] for c in web["spec"]["template"]["spec"]["containers"]
                for e in c.get("envFrom", []) if "secretRef" in e]
    assert "celery-stack-dev-app" in env_from
    assert not any(o["kind"] == "Secret" and o["metadata"]["name"] == "celery-stack-app"
                   for m in result["Manifests"] for o in k8s_objects(m)), "the chart's own app Secret is not rendered"
