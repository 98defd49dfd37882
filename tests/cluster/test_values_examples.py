"""values-examples/local-cluster.yaml layers on kind.yaml and only points the images at local ones."""

from __future__ import annotations

from typing import Any

import yaml

from tests.support.render import VALUES_EXAMPLES, render_chart

LOCAL = VALUES_EXAMPLES / "local-cluster.yaml"
KIND = VALUES_EXAMPLES / "kind.yaml"


def leaves(tree: dict[str, Any], prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out |= leaves(value, f"{path}.") if isinstance(value, dict) else {path}
    return out


def test_local_cluster_values_only_name_images() -> None:
    assert leaves(yaml.safe_load(LOCAL.read_text())) == {
        "image.repository", "redis.image.repository", "redis.image.tag",
        "postgresql.image.repository", "postgresql.image.tag",
    }
    assert "layers on kind.yaml" in LOCAL.read_text()


def test_layered_on_kind_every_image_is_local_and_the_kind_settings_hold() -> None:
    rendered = render_chart(values_files=[KIND, LOCAL], extra_args=("--set", "image.tag=abc123"))
    images = {c["image"] for m in rendered if m["kind"] in ("Deployment", "StatefulSet", "Job", "Pod")
              for c in [*m["spec"].get("template", m)["spec"].get("initContainers", []),
                        *m["spec"].get("template", m)["spec"]["containers"]]}
    assert images == {"celery-stack.local/celery-stack:abc123", "celery-stack.local/redis:7.0-bookworm",
                      "celery-stack.local/postgres:15-bookworm"}
    scaled = {m["metadata"]["labels"]["celery-stack.io/pool"]: m["spec"] for m in rendered
              if m["kind"] == "ScaledObject"}
    assert {pool: (s["minReplicaCount"], s["pollingInterval"], s["cooldownPeriod"]) for pool, s in scaled.items()} == {
        "high-priority": (1, 5, 30), "default": (1, 5, 30), "low-priority": (0, 5, 30)}
