"""values-examples/local-cluster.yaml names exactly the images `make cluster-up` builds (one source: images.py)."""

from __future__ import annotations

from pathlib import Path

import yaml

from localcluster import images

LOCAL_VALUES = Path(__file__).resolve().parents[2] / "values-examples" / "local-cluster.yaml"


def test_local_cluster_values_name_the_images_the_builder_makes() -> None:
    values = yaml.safe_load(LOCAL_VALUES.read_text())
    built = images.chart_values()
    for prefix, section in (("redis.image", values["redis"]["image"]),
                            ("postgresql.image", values["postgresql"]["image"])):
        wanted = (built[f"{prefix}.repository"], built[f"{prefix}.tag"])
        assert (section["repository"], str(section["tag"])) == wanted, (
            f"{LOCAL_VALUES.name} {prefix} differs from what localcluster.images builds: a bump of "
            "k8s-tests/cluster/versions.env must change both")
    # the project image's tag changes with every build: the installer passes it, the file must not pin it
    assert values["image"]["repository"] == built["image.repository"]
    assert "tag" not in values["image"]
