"""Security defaults on every pod and container; secrets never rendered from plain values."""

from __future__ import annotations

import base64

import pytest
import yaml
from cryptography.fernet import Fernet

from tests.chart.conftest import pod_specs
from tests.support.render import CHART, CRD_API_VERSIONS, find, render_chart, run_helm


def test_every_pod_and_container_is_locked_down(manifests: list[dict]) -> None:
    for name, spec in pod_specs(manifests):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert all(isinstance(pod[k], int) and pod[k] > 0 for k in ("runAsUser", "runAsGroup", "fsGroup")), name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert spec["automountServiceAccountToken"] is False, name
        for c in spec.get("initContainers", []) + spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (name, c["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (name, c["name"])
            assert sc["runAsNonRoot"] is True, (name, c["name"])
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, (name, c["name"])


def test_app_pods_get_writable_data_and_metrics_dirs() -> None:
    manifests = render_chart()
    config = find(manifests, "ConfigMap", "rel-celery-stack-config")[0]["data"]
    for name, spec in pod_specs(manifests):
        if "redis" in name or "postgresql" in name:
            continue
        mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
        assert {config["APP_DATA_DIR"], config["PROMETHEUS_MULTIPROC_DIR"]} <= mounts, name


def test_image_tag_defaults_to_app_version_and_pull_policy() -> None:
    chart_version = next(line.split('"')[1] for line in (CHART / "Chart.yaml").read_text().splitlines()
                         if line.startswith("appVersion:"))
    for _, spec in pod_specs(render_chart()):
        c = spec["containers"][0]
        if c["image"].startswith("celery-stack:"):
            assert c["image"] == f"celery-stack:{chart_version}"
            assert c["imagePullPolicy"] == "IfNotPresent"


def test_no_secret_value_reaches_a_configmap_or_plain_env(manifests: list[dict]) -> None:
    secrets = {k: base64.b64decode(v).decode() for s in find(manifests, "Secret") for k, v in s.get("data", {}).items()}
    secret_values = set(secrets.values())
    for key, value in secrets.items():
        if key == "PAYLOAD_ENCRYPTION_KEYS":  # a Fernet key: 32 random bytes, URL-safe base64
            assert len(base64.urlsafe_b64decode(value.encode())) == 32 and Fernet(value.encode())
        else:
            assert len(value) >= 24 and value.isalnum(), key  # generated, URL-safe (embedded in URLs)
    for cm in find(manifests, "ConfigMap"):
        for key, value in cm["data"].items():
            assert not any(word in key for word in ("PASSWORD", "SECRET", "TOKEN", "DSN")), key
            assert not any(s in value for s in secret_values), key
    for _, spec in pod_specs(manifests):
        for c in spec.get("initContainers", []) + spec["containers"]:
            for e in c.get("env", []):
                assert not any(s in e.get("value", "") for s in secret_values), e["name"]


def test_values_yaml_holds_no_secret_defaults() -> None:
    text = (CHART / "values.yaml").read_text().lower()
    for word in ("password:", "secretkey:", "token:"):
        assert f" {word} " not in text and f" {word} \"" not in text


def test_secrets_are_generated_only_when_lookup_finds_none() -> None:
    # `helm template` cannot look up a live Secret, so the kept-across-upgrades path is proven on the helper:
    # the one generator returns the stored value when the Secret exists and randAlphaNum only otherwise.
    helpers = (CHART / "templates" / "_helpers.tpl").read_text()
    body = helpers[helpers.index('define "celery-stack.keptSecretValue"'):]
    body = body[:body.index("{{- end -}}\n{{- end -}}")]
    lookup, keep, generate = (body.index(s) for s in ('lookup "v1" "Secret"', "index $data .key", "randAlphaNum"))
    assert lookup < keep < body.index("else") < generate
    templates = [p for p in (CHART / "templates").rglob("*.yaml")]
    assert [p.name for p in templates if "randAlphaNum" in p.read_text()] == []
    users = {p.name for p in templates if "keptSecretValue" in p.read_text()}
    assert users == {"secret.yaml", "redis-secret.yaml", "postgresql-secret.yaml", "flower-secret.yaml"}


def test_existing_secrets_replace_generated_ones() -> None:
    manifests = render_chart({"app": {"existingSecret": "mine"}, "redis": {"auth": {"existingSecret": "r"}},
                              "postgresql": {"auth": {"existingSecret": "p"}},
                              "flower": {"auth": {"existingSecret": "f"}}})
    assert find(manifests, "Secret") == []


def test_config_and_secret_changes_roll_the_pods() -> None:
    a = render_chart({"app": {"logLevel": "INFO"}})
    b = render_chart({"app": {"logLevel": "DEBUG"}})
    def checksum(ms):
        return next(d for d in find(ms, "Deployment") if d["metadata"]["name"].endswith("-web"))[
            "spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    assert checksum(a) != checksum(b)


def render_afresh(helm: str = "helm3", *sets: str) -> list[dict]:
    """One more `helm template` run (render_chart caches its output per arguments)."""
    args = ["template", "rel", str(CHART), "--namespace", "ns"]
    for api in CRD_API_VERSIONS:
        args += ["--api-versions", api]
    for value in sets:
        args += ["--set", value]
    return [doc for doc in yaml.safe_load_all(run_helm(args, helm=helm).stdout) if doc]


def checksums(manifests: list[dict]) -> dict[str, dict[str, str]]:
    """Deployment/StatefulSet -> its pod template's checksum/* annotations."""
    return {f"{m['kind']}/{m['metadata']['name']}": {
                k: v for k, v in (m["spec"]["template"]["metadata"].get("annotations") or {}).items()
                if k.startswith("checksum/")}
            for m in manifests if m["kind"] in ("Deployment", "StatefulSet")}


def test_checksums_are_the_same_in_every_render_of_the_same_values(helm: str) -> None:
    """The generated passwords differ between two renders that find no stored Secret (a first install,
    `helm template`, GitOps), as they differed between an install and its first upgrade: the pods'
    checksums must not, or that upgrade restarts every pod, Redis and PostgreSQL included."""
    first, second = render_afresh(helm), render_afresh(helm)
    def secret_data(manifests: list[dict]) -> dict:
        return {s["metadata"]["name"]: s["data"] for s in find(manifests, "Secret")}
    assert secret_data(first) != secret_data(second)  # what used to leak into the checksums
    assert checksums(first) == checksums(second)
    assert all("checksum/secret" in c for c in checksums(first).values()), checksums(first)


@pytest.mark.parametrize(("value", "rolled"), [
    ("app.existingSecret=app-v2", {"web", "beat", "flower", "exporter", "worker-default"}),
    ("redis.auth.existingSecret=redis-v2", {"redis"}),
    ("redis.auth.existingSecretPasswordKey=pass", {"redis"}),
    ("postgresql.auth.existingSecret=db-v2", {"postgresql"}),
], ids=["app", "redis", "redis-key", "postgresql"])
def test_a_changed_user_given_secret_changes_the_checksums(value: str, rolled: set[str]) -> None:
    before = {name.split("/")[1].removeprefix("rel-celery-stack-"): c["checksum/secret"]
              for name, c in checksums(render_afresh()).items()}
    after = {name.split("/")[1].removeprefix("rel-celery-stack-"): c["checksum/secret"]
             for name, c in checksums(render_afresh("helm3", value)).items()}
    changed = {name for name in before if after[name] != before[name]}
    assert rolled <= changed, (value, changed)
