"""Every rendered object validates strictly: Kubernetes objects against the OpenAPI schemas of 1.29 and
the newest release kubernetes-validate ships; KEDA and Prometheus Operator objects against JSON schemas
derived from their CRD models (cloudcoil-models-*), with unknown fields rejected at every level."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from tests.support.render import render_chart

K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
EVERYTHING_ON = {"monitoring": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
                 "networkPolicy": {"enabled": True}, "web": {"autoscaling": {"enabled": True}}}


def _forbid_unknown(node: Any) -> Any:
    """Close every object schema (pydantic leaves extra fields open); maps keep their value schema."""
    if isinstance(node, dict):
        node = {k: _forbid_unknown(v) for k, v in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_forbid_unknown(v) for v in node]
    return node


@functools.cache
def crd_validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    if api_version == "keda.sh/v1alpha1":
        from cloudcoil.models.keda import v1alpha1 as module
    elif api_version == "monitoring.coreos.com/v1":
        from cloudcoil.models.prometheus_operator import v1 as module
    else:
        raise AssertionError(f"no CRD schema for {api_version}")
    schema = getattr(module, kind).model_json_schema(by_alias=True, mode="validation")
    return jsonschema.Draft202012Validator(_forbid_unknown(schema))


def validate(manifest: dict) -> None:
    api, kind = manifest["apiVersion"], manifest["kind"]
    if api in ("keda.sh/v1alpha1", "monitoring.coreos.com/v1"):
        errors = sorted(crd_validator(api, kind).iter_errors(manifest), key=str)
        assert not errors, f"{kind}/{manifest['metadata']['name']}: " + "; ".join(
            f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_every_manifest_validates_strictly(values_file: Path | None, manifests: list[dict]) -> None:
    for manifest in manifests:
        validate(manifest)


def test_everything_enabled_validates() -> None:
    for manifest in render_chart(EVERYTHING_ON):
        validate(manifest)


def test_validators_reject_unknown_fields() -> None:
    # The checks above could not fail if the schemas were open: prove they are closed.
    manifests = render_chart()
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    deployment = {**deployment, "spec": {**deployment["spec"], "replicaz": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)
    so = next(m for m in manifests if m["kind"] == "ScaledObject")
    bad = {**so, "spec": {**so["spec"], "advanced": {**so["spec"]["advanced"], "scalingModifier": {}}}}
    with pytest.raises(AssertionError, match="scalingModifier"):
        validate(bad)
