"""Go modules built from source: the one mechanism behind every Go-built tool (tilt in tests/support/tools,
the local cluster's Kubernetes, etcd, KEDA, ... in k8s-tests/localcluster/build).

`go install module/cmd/x@version` refuses a module whose go.mod has `replace` directives, so the verified
module is downloaded, copied somewhere writable and built as the main module (`-mod=mod` completes its
go.sum from the proxy, checked against the checksum database).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path


class GoModuleError(RuntimeError):
    """go could not download or build a module; the message carries go's own."""


def go_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "GOFLAGS": "-mod=mod -buildvcs=false", "GOWORK": "off", "GOTOOLCHAIN": "local", **extra}


def _download(module: str, version: str) -> dict:
    """`go mod download -json module@version`: Dir (the module cache copy), Info (the proxy's .info), ..."""
    if shutil.which("go") is None:
        raise GoModuleError(f"{module}: Go is not installed (the Go toolchain builds it from its module)")
    out = subprocess.run(["go", "mod", "download", "-json", f"{module}@{version}"], env=go_env(),
                         capture_output=True, text=True)
    info = json.loads(out.stdout or "{}")
    if out.returncode != 0 or "Dir" not in info:
        raise GoModuleError(f"go mod download {module}@{version} failed: {info.get('Error') or out.stderr.strip()}")
    return info


def module_source(module: str, version: str) -> Path:
    """The module's directory in the Go module cache (downloaded if needed)."""
    return Path(_download(module, version)["Dir"])


def module_time(module: str, version: str) -> str:
    """When the version was published (the proxy's .info), e.g. 2024-05-10T18:11:32Z."""
    return json.loads(Path(_download(module, version)["Info"]).read_text())["Time"]


def writable_copy(source: Path, target: Path, *, ignore: tuple[str, ...] = ()) -> Path:
    """Copy a module out of the read-only cache so go.mod/go.sum may change; drops go.work."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns(*ignore) if ignore else None)
    for root, dirs, files in os.walk(target):
        for name in dirs + files:
            path = Path(root, name)
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR)
    (target / "go.work").unlink(missing_ok=True)
    (target / "go.work.sum").unlink(missing_ok=True)
    return target


def rewrite_local_replaces(module_dir: Path, version: str) -> list[str]:
    """Point every `replace X => ./local/path` at the published X@version; returns the rewritten paths.

    A local replace of a module the build does not require is a guard (etcd's `=> ./FORBIDDEN_DEPENDENCY`)
    and is dropped.
    """
    described = json.loads(subprocess.run(["go", "mod", "edit", "-json"], cwd=module_dir, env=go_env(),
                                          check=True, capture_output=True, text=True).stdout)
    required = {require["Path"] for require in described.get("Require") or []}
    edits, rewritten = [], []
    for replace in described.get("Replace") or []:
        if not replace["New"]["Path"].startswith("."):
            continue
        old = replace["Old"]["Path"]
        if old not in required:
            edits.append(f"-dropreplace={old}")
            continue
        edits.append(f"-replace={old}={old}@{version}")
        rewritten.append(old)
    if edits:
        subprocess.run(["go", "mod", "edit", *edits], cwd=module_dir, env=go_env(), check=True)
    return rewritten


def go_build(module_dir: Path, packages: list[str], output: str, *, ldflags: str = "",
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`go build -trimpath` of packages (relative to module_dir) to output: a file, or a directory ending in /."""
    argv = ["go", "build", "-trimpath", *(["-ldflags", ldflags] if ldflags else []), "-o", output, *packages]
    return subprocess.run(argv, cwd=module_dir, env=go_env(**(env or {})), capture_output=True, text=True)
