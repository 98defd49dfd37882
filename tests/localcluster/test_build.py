"""One mechanism builds every component: local replaces point at the published modules, guards go."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from localcluster import build, versions
from tests.support.gomodules import rewrite_local_replaces


def test_every_component_is_pinned_in_versions_env() -> None:
    for component in build.components():
        assert component.version.startswith("v"), component
    assert versions.get("KUBERNETES_VERSION").startswith("v1.34."), "kubelet 1.35+ refuses cgroup v1 hosts"
    with pytest.raises(KeyError, match="not pinned"):
        versions.get("NO_SUCH_VERSION")


def test_kubernetes_binaries_report_their_version() -> None:
    kubernetes = build.by_name("kubernetes")
    flags = " ".join(kubernetes.ldflags)
    assert f"k8s.io/component-base/version.gitVersion={kubernetes.version}" in flags
    assert f"k8s.io/client-go/pkg/version.gitVersion={kubernetes.version}" in flags
    assert kubernetes.local_replace_version == "v0." + kubernetes.version.lstrip("v").split(".", 1)[1]


def test_fingerprint_changes_with_the_version() -> None:
    a = build.GoComponent("x", "example.com/x", "v1.0.0", {".": "x"})
    b = build.GoComponent("x", "example.com/x", "v1.0.1", {".": "x"})
    assert a.fingerprint() != b.fingerprint()


def test_local_replaces_are_rewritten_and_guards_dropped(tmp_path: Path) -> None:
    (tmp_path / "go.mod").write_text(
        "module example.com/server/v3\n\ngo 1.22\n\n"
        "require example.com/api/v3 v3.0.0\n\n"
        "replace example.com/api/v3 => ../api\n\n"
        "replace example.com/forbidden => ./FORBIDDEN_DEPENDENCY\n"
    )
    rewritten = rewrite_local_replaces(tmp_path, "v3.6.16")
    assert rewritten == ["example.com/api/v3"]
    mod = subprocess.run(["go", "mod", "edit", "-json"], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout
    assert '"Path": "./FORBIDDEN_DEPENDENCY"' not in mod
    assert '"Version": "v3.6.16"' in mod
