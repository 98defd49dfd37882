"""No rendered manifest but a Secret holds a secret (issue 14): every value of every Secret the chart renders (the
generated passwords, keys and tokens) occurs in no other manifest — ConfigMaps, workloads' env and args, Jobs,
hooks, test pods, monitors, KEDA objects — neither raw nor percent- nor base64-encoded; the pods get secrets by
secretKeyRef or envFrom only.

The values offer no way to give a secret in plain text: passwords and keys come only from Secrets the chart
generates or from existing ones named in the values (app.env refuses secret-looking names: test_validation.py),
so the secrets searched for are the generated ones: of the defaults, of every values example and with every
component and option on that renders more objects. (NOTES.txt is not rendered by `helm template`; it names the
Secrets and the kubectl commands that read them, never a value.)
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support import leaks
from tests.support.render import example_files, find, render_chart

#: Every component and option that renders more objects or more env (monitors, rules, dashboards, network
#: policies, ingress, autoscaling, Helm hooks) on top of the built-in Redis, PostgreSQL and Flower with auth.
EVERYTHING_ON: dict[str, Any] = {
    "monitoring": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True},
                   "prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}},
    "networkPolicy": {"enabled": True},
    "web": {"ingress": {"enabled": True, "hosts": [{"host": "tasks.example.com",
                                                     "paths": [{"path": "/", "pathType": "Prefix"}]}]},
            "autoscaling": {"enabled": True}},
    "migrations": {"useHelmHooks": True},
}
#: Names of env vars that must never have a literal value.
SECRET_ENV_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEYS?$|AUTH|DSN|CREDENTIAL", re.IGNORECASE)


def secrets_of(manifests: list[dict]) -> dict[str, str]:
    """``Secret/<name>/<key>`` -> value of every Secret rendered (data base64-decoded, and stringData)."""
    found = {}
    for secret in find(manifests, "Secret"):
        name = secret["metadata"]["name"]
        for key, value in (secret.get("data") or {}).items():
            found[f"Secret/{name}/{key}"] = base64.b64decode(value).decode()
        for key, value in (secret.get("stringData") or {}).items():
            found[f"Secret/{name}/{key}"] = value
    return found


def containers(manifest: dict) -> list[dict]:
    spec = manifest.get("spec", {})
    pod = spec.get("template", {}).get("spec", spec) if manifest["kind"] != "Pod" else spec
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


RENDERS = [pytest.param({}, None, id="defaults"), pytest.param(EVERYTHING_ON, None, id="everything-on"),
           *(pytest.param({}, path, id=path.stem) for path in example_files())]


@pytest.mark.parametrize(("values", "values_file"), RENDERS)
def test_no_secret_value_leaves_its_secret(values: dict[str, Any], values_file: Path | None) -> None:
    manifests = render_chart(values, values_files=[values_file] if values_file else ())
    secrets_ = secrets_of(manifests)
    # The built-in components generate theirs: then the search below is for real values.
    if not values_file or "production" not in values_file.name:
        assert any("/API_TOKEN" in name for name in secrets_) and any("-flower/" in name for name in secrets_)
    others = [m for m in manifests if m["kind"] != "Secret"]
    assert len(others) > 10
    found = {f"{m['kind']}/{m['metadata']['name']}": leaks.find(json.dumps(m), secrets_) for m in others}
    assert not any(found.values()), {where: names for where, names in found.items() if names}


@pytest.mark.parametrize(("values", "values_file"), RENDERS)
def test_pods_get_secrets_only_by_reference(values: dict[str, Any], values_file: Path | None) -> None:
    """An env var with a secret-looking name comes from a secretKeyRef, or is composed only of such variables
    (``$(FLOWER_USER):$(FLOWER_PASSWORD)``, a URL around ``$(REDIS_PASSWORD)``); envFrom names Secrets and the
    shared ConfigMap only."""
    manifests = render_chart(values, values_files=[values_file] if values_file else ())
    checked = 0
    for manifest in manifests:
        for container in containers(manifest):
            env = {e["name"]: e for e in container.get("env", [])}
            from_secret = {name for name, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})}
            for name, entry in env.items():
                where = f"{manifest['kind']}/{manifest['metadata']['name']} {container['name']} {name}"
                references = re.findall(r"\$\((\w+)\)", entry.get("value", ""))
                if any(ref in from_secret for ref in references):
                    assert set(references) <= set(env), where  # a URL or login composed of declared variables
                    checked += 1
                elif SECRET_ENV_NAME.search(name):
                    assert name in from_secret, where
                    checked += 1
            for source in container.get("envFrom", []):
                assert set(source) <= {"secretRef", "configMapRef"}, source
    assert checked, "no container gets a secret: the chart renders none of its components?"
