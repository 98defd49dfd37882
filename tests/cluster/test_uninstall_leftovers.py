"""k8s_support.leftovers: what `helm uninstall` may leave (from the chart's real manifests), what it left."""

from __future__ import annotations

from k8s_support.leftovers import kept_on_uninstall, labelled_objects, leftovers, listable_namespaced
from tests.cluster.kubefake import fake_api
from tests.support.render import VALUES_EXAMPLES, render_chart

CORE = {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
    {"name": "pods", "namespaced": True, "kind": "Pod", "verbs": ["get", "list", "delete"]},
    {"name": "pods/log", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
    {"name": "secrets", "namespaced": True, "kind": "Secret", "verbs": ["list"]},
    {"name": "namespaces", "namespaced": False, "kind": "Namespace", "verbs": ["list"]},
    {"name": "bindings", "namespaced": True, "kind": "Binding", "verbs": ["create"]},
]}
KEDA = {"kind": "APIResourceList", "groupVersion": "keda.sh/v1alpha1", "resources": [
    {"name": "scaledobjects", "namespaced": True, "kind": "ScaledObject", "verbs": ["list", "watch"]},
]}


def test_the_chart_keeps_the_generated_passwords_and_the_statefulset_volumes() -> None:
    manifests = render_chart(values_files=[VALUES_EXAMPLES / "kind.yaml"], release="celery-stack",
                             namespace="celery-stack")
    assert kept_on_uninstall(manifests) == {
        ("Secret", "celery-stack-redis"), ("Secret", "celery-stack-postgresql"),
        ("PersistentVolumeClaim", "data-celery-stack-redis-0"),
        ("PersistentVolumeClaim", "data-celery-stack-postgresql-0"),
    }


def test_listable_namespaced_resources_skip_subresources_and_cluster_scope() -> None:
    assert listable_namespaced([CORE, KEDA]) == [
        ("/api/v1", "pods", "Pod"), ("/api/v1", "secrets", "Secret"),
        ("/apis/keda.sh/v1alpha1", "scaledobjects", "ScaledObject"),
    ]


def test_labelled_objects_of_every_kind_through_the_client() -> None:
    def listing(kind: str, *names: str) -> dict[str, object]:
        return {"kind": f"{kind}List", "metadata": {}, "items": [{"metadata": {"name": n}} for n in names]}

    objects = {
        "/api/v1": CORE,
        "/apis": {"kind": "APIGroupList", "groups": [
            {"name": "keda.sh", "preferredVersion": {"groupVersion": "keda.sh/v1alpha1", "version": "v1alpha1"}}]},
        "/apis/keda.sh/v1alpha1": KEDA,
        "/api/v1/namespaces/ns/pods": listing("Pod", "rel-test-health"),
        "/api/v1/namespaces/ns/secrets": listing("Secret", "rel-redis"),
        "/apis/keda.sh/v1alpha1/namespaces/ns/scaledobjects": listing("ScaledObject"),
    }
    with fake_api(objects) as api:
        found = labelled_objects(api, "ns", "app.kubernetes.io/instance=rel")
    assert found == [("Pod", "rel-test-health"), ("Secret", "rel-redis")]
    assert leftovers(found, {("Secret", "rel-redis")}) == [("Pod", "rel-test-health")]
