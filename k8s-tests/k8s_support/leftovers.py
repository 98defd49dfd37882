"""What `helm uninstall` may leave behind, and what it did leave: every namespaced kind, by label.

The chart keeps, on purpose, the objects annotated ``helm.sh/resource-policy: keep`` (the generated Redis
and PostgreSQL passwords: their data on the volumes outlives the release) and the PersistentVolumeClaims
of its StatefulSets' ``volumeClaimTemplates`` (Kubernetes never deletes those with the StatefulSet).
Anything else of the release still there after the uninstall is a leftover.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

KEEP_ANNOTATION = "helm.sh/resource-policy"

#: (kind, name) of one object.
Ref = tuple[str, str]


def kept_on_uninstall(manifests: Iterable[dict[str, Any]]) -> set[Ref]:
    """What the release's manifests say stays after `helm uninstall`: kept objects and StatefulSet PVCs."""
    kept: set[Ref] = set()
    for obj in manifests:
        metadata = obj.get("metadata") or {}
        if (metadata.get("annotations") or {}).get(KEEP_ANNOTATION) == "keep":
            kept.add((obj["kind"], metadata["name"]))
        if obj.get("kind") == "StatefulSet":
            spec = obj.get("spec") or {}
            replicas = int(spec.get("replicas", 1))
            for template in spec.get("volumeClaimTemplates") or []:
                for ordinal in range(replicas):
                    kept.add(("PersistentVolumeClaim", f"{template['metadata']['name']}-{metadata['name']}-{ordinal}"))
    return kept


def listable_namespaced(resource_lists: Iterable[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(path prefix, resource, kind) of every namespaced, listable resource of API discovery documents.

    ``resource_lists`` are APIResourceList bodies (``/api/v1``, ``/apis/<group>/<version>``); sub-resources
    (``pods/log``) are skipped. The path prefix is ``/api/v1`` or ``/apis/<group>/<version>``.
    """
    found = []
    for document in resource_lists:
        group_version = document["groupVersion"]
        prefix = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        for resource in document.get("resources") or []:
            if "/" in resource["name"] or not resource.get("namespaced") or "list" not in resource.get("verbs", []):
                continue
            found.append((prefix, resource["name"], resource["kind"]))
    return sorted(found)


def leftovers(found: Iterable[Ref], kept: set[Ref]) -> list[Ref]:
    """The objects found that the chart does not keep on purpose."""
    return sorted(set(found) - kept)


def discovery_documents(api_client: Any) -> list[dict[str, Any]]:
    """The APIResourceList of the core group and of the preferred version of every other group."""
    documents = [_get(api_client, "/api/v1")]
    groups = _get(api_client, "/apis")
    for group in groups.get("groups") or []:
        version = (group.get("preferredVersion") or {}).get("groupVersion")
        if version:
            documents.append(_get(api_client, f"/apis/{version}"))
    return documents


def labelled_objects(api_client: Any, namespace: str, selector: str) -> list[Ref]:
    """(kind, name) of every object of every namespaced kind in ``namespace`` matching the label selector.

    Objects being deleted count too: until they are gone, the uninstall has not finished with them.
    """
    found: list[Ref] = []
    for prefix, resource, kind in listable_namespaced(discovery_documents(api_client)):
        body = _get(api_client, f"{prefix}/namespaces/{namespace}/{resource}", {"labelSelector": selector})
        found.extend((kind, item["metadata"]["name"]) for item in body.get("items") or [])
    return sorted(set(found))


def _get(api_client: Any, path: str, query: dict[str, str] | None = None) -> dict[str, Any]:
    """GET one API path as JSON through the client's own connection and credentials."""
    from kubernetes.client.exceptions import ApiException

    method, url, headers, body, post = api_client.param_serialize(
        "GET", path, query_params=list((query or {}).items()), header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
    )
    response = api_client.call_api(method, url, header_params=headers, body=body, post_params=post,
                                   _request_timeout=30)
    data = response.read()
    if not 200 <= response.status < 300:
        raise ApiException(status=response.status, reason=f"GET {path}: {data[:300]!r}")
    return json.loads(data)  # type: ignore[no-any-return]
