"""Every image the local cluster runs, made here without a registry, then imported into its containerd.

Nothing can be pulled on these machines, so each image comes from what can be fetched: a Debian rootfs
(mmdebstrap, from the host's apt mirror) as the base of Python, Redis and PostgreSQL stand-ins; the uv
binary from its PyPI wheel; Kubernetes' pause.c compiled statically; the Go binaries of build.py; and the
project image from docker/Dockerfile, unchanged. A dockerd of our own (Debian's 20.10, own socket, data
root in CACHE so layers survive `cluster-down`) builds them; `docker save | ctr images import` moves them
into the node's containerd. Each image carries a fingerprint of its inputs in a label and is rebuilt only
when that changes.

    python3 -m localcluster.images build [NAME ...]    # all images, or NAME(s) and what they are built FROM
    python3 -m localcluster.images import [--address SOCKET] [NAME ...]
    python3 -m localcluster.images refs | stop
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from localcluster import build, processes, versions
from localcluster.paths import CACHE, LOGS, RUN
from localcluster.progress import heartbeat, say, step

REGISTRY = "celery-stack.local"
REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
LOCAL_DOCKERFILES = REPO_ROOT / "docker" / "local"

# Debian's client, matching its dockerd 20.10 (the /usr/local/bin/docker first in PATH is a newer client
# without buildx, which cannot drive BuildKit).
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
DOCKER_SOCKET = RUN / "docker.sock"
#: Layers and images: in CACHE, so they survive cluster-down and serve every clone.
DOCKER_DATA_ROOT = CACHE / "docker"
DOCKER_EXEC_ROOT = RUN / "docker"
#: Tracked by localcluster.processes (RUN/dockerd.pid: PID and start time, safe against PID reuse).
DOCKERD_NAME = "dockerd"
#: Made by dockerd outside its roots whatever its flags; stop_docker removes them (when empty) unless they
#: were there before.
DOCKERD_HOST_DIRS = (Path("/run/docker/plugins"), Path("/run/docker"))
DOCKERD_HOST_DIRS_RECORD = RUN / "dockerd-host-dirs.json"
#: Rootfs tarballs, the uv and pause binaries, build contexts.
WORK = CACHE / "images"
FINGERPRINT_LABEL = "local.celery-stack.fingerprint"
CTR_NAMESPACE = "k8s.io"
# BuildKit (dockerd 20.10's built-in Dockerfile frontend; no `# syntax=` line, so nothing is fetched):
# builds only the stages a --target needs, independent stages in parallel. The project image took 11 s
# cold with it, 22 s with the legacy builder (DOCKER_BUILDKIT=0); both are instant when cached.
BUILDKIT = "1"


class ImageError(RuntimeError):
    """An image could not be made (the message says which input is missing or which step failed)."""


# --------------------------------------------------------------------------------------------------
# The images


@dataclass(frozen=True)
class Image:
    """One image: how to make it, and what its fingerprint covers."""

    name: str
    tag: str
    #: "rootfs" (mmdebstrap + docker import), "dockerfile" (docker build of a context we lay out) or
    #: "project" (docker/Dockerfile with the repository as its context)
    kind: str
    dockerfile: Path | None = None
    target: str = ""
    #: images this one is built FROM: made first, their fingerprints are part of this one's
    parents: tuple[str, ...] = ()
    build_args: tuple[tuple[str, str], ...] = ()
    #: the build context: path in it -> a file (hashed by content), bytes (content), a directory (empty,
    #: with this mode) as an int, or a function making the file (its recipe must be in `recipe`)
    files: tuple[tuple[str, Path | bytes | int | Callable[[], Path]], ...] = ()
    #: everything else the result depends on (versions, mirrors, flags)
    recipe: tuple[str, ...] = ()
    #: the Go binaries it needs (component, command), for a clear message while they are missing
    go_binaries: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    #: False for images only other builds use (python, uv): not imported into the node
    in_cluster: bool = True

    @property
    def repository(self) -> str:
        return f"{REGISTRY}/{self.name}"

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _host_codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return ""


def apt_sources(suite: str) -> list[str]:
    """The host's Debian mirrors as one-line `deb` entries for `suite` (bookworm-updates -> <suite>-updates)."""
    host = _host_codename()
    entries: list[tuple[str, list[str], list[str]]] = []  # (uri, suites, components)
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]
    for path in filter(Path.is_file, files):
        for line in path.read_text().splitlines():
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()  # drop [options]
            if len(words) >= 3 and words[0] == "deb":
                entries.append((words[1], [words[2]], words[3:]))
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.startswith("#"):
                    key, value = line.split(":", 1)
                    fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    entries.append((uri, fields.get("suites", "").split(), fields.get("components", "").split()))
    lines: list[str] = []
    for uri, suites, components in entries:
        for host_suite in suites:
            if host and (host_suite == host or host_suite.startswith(host + "-")):
                line = f"deb {uri} {suite}{host_suite[len(host):]} {' '.join(components or ['main'])}"
                if line not in lines:
                    lines.append(line)
    return lines or [f"deb http://deb.debian.org/debian {suite} main"]


def _uv_version() -> str:
    """uv of docker/Dockerfile's UV_IMAGE default: the version its published image would have."""
    match = re.search(r"^ARG UV_IMAGE=\S+:(\S+)\s*$", PROJECT_DOCKERFILE.read_text(), re.MULTILINE)
    if not match:
        raise ImageError(f"no `ARG UV_IMAGE=...:<version>` in {PROJECT_DOCKERFILE}")
    return match.group(1)


@functools.cache
def _kubernetes_source() -> Path:
    return build.module_source("k8s.io/kubernetes", versions.get("KUBERNETES_VERSION"))


@functools.cache
def pause_version() -> str:
    """The pause tag of the pinned Kubernetes release (TAG in its build/pause/Makefile)."""
    makefile = (_kubernetes_source() / "build" / "pause" / "Makefile").read_text()
    match = re.search(r"^TAG \?= (\S+)$", makefile, re.MULTILINE)
    if not match:
        raise ImageError("no `TAG ?=` in Kubernetes' build/pause/Makefile")
    return match.group(1)


def _pause_binary() -> Path:
    """Kubernetes' pause.c, compiled as its Makefile does (static, -Os)."""
    out = WORK / f"pause-{versions.get('KUBERNETES_VERSION')}" / "pause"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        source = _kubernetes_source() / "build" / "pause" / "linux" / "pause.c"
        partial = out.with_suffix(".partial")
        flags = ["-Os", "-Wall", "-Werror", "-static", f"-DVERSION=v{pause_version()}"]
        _run(["gcc", *flags, "-o", str(partial), str(source)], what="gcc pause.c")
        _run(["strip", str(partial)], what="strip pause")
        partial.rename(out)
    return out


def _uv_binary() -> Path:
    """The static uv binary of the pinned release, from its musllinux wheel on PyPI."""
    version = _uv_version()
    out = WORK / f"uv-{version}" / "uv"
    if out.is_file():
        return out
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}[platform.machine()]
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as download:
        # musllinux: statically linked, so it also runs FROM scratch (the manylinux one needs glibc)
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
              "--platform", f"musllinux_1_1_{arch}", "--dest", download, f"uv=={version}"],
             what=f"pip download uv=={version}")
        wheels = list(Path(download).glob(f"uv-{version}-*.whl"))
        if len(wheels) != 1:
            raise ImageError(f"pip download uv=={version}: expected one wheel, got {wheels}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next((n for n in wheel.namelist() if n.endswith(".data/scripts/uv")), None)
            if member is None:
                raise ImageError(f"{wheels[0].name} has no .data/scripts/uv")
            partial = out.with_suffix(".partial")
            partial.write_bytes(wheel.read(member))
    partial.chmod(0o755)
    partial.rename(out)
    return out


# policy-rc.d as in Docker's debian images: package scripts in builds start no services (mmdebstrap
# removes its own at the end unless told to leave policy-rc.d alone).
_POLICY_RC_D = 'printf "#!/bin/sh\\nexit 101\\n" > "$1/usr/sbin/policy-rc.d" && chmod 755 "$1/usr/sbin/policy-rc.d"'
MMDEBSTRAP_OPTIONS = ("--variant=minbase", "--include=ca-certificates", "--skip=chroot/policy-rc.d",
                      f"--customize-hook={_POLICY_RC_D}")

#: Go images: name -> (build.py component, command, path in the image); the entrypoints are in static.Dockerfile.
GO_IMAGES: dict[str, tuple[str, str, str]] = {
    "coredns": ("coredns", "coredns", "coredns"),
    "metrics-server": ("metrics-server", "metrics-server", "metrics-server"),
    "keda-operator": ("keda", "keda-operator", "keda"),
    "keda-adapter": ("keda", "keda-adapter", "keda-adapter"),
    "keda-admission-webhooks": ("keda", "keda-admission-webhooks", "keda-admission-webhooks"),
    "local-path-provisioner": ("local-path-provisioner", "local-path-provisioner", "usr/bin/local-path-provisioner"),
}
# What distroless/static:nonroot gives its binaries besides the CA bundle.
_NONROOT_FILES: tuple[tuple[str, bytes | int], ...] = (
    ("rootfs/etc/passwd",
     b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"),
    ("rootfs/etc/group", b"root:x:0:\nnonroot:x:65532:\n"),
    ("rootfs/tmp", 0o1777),
)


def _host_ca_certificates() -> tuple[tuple[str, Path], ...]:
    """The host's extra CAs (e.g. a TLS-intercepting egress proxy's), for pip/uv inside builds."""
    found = sorted(Path("/usr/local/share/ca-certificates").rglob("*.crt"))
    return tuple((f"ca-certificates/{path.name}", path) for path in found)


@functools.cache
def _images() -> dict[str, Image]:
    """Every image, in an order where each comes after the images it is built FROM."""
    suite = versions.get("DEBIAN_SUITE")
    debian = Image("debian", suite, "rootfs", recipe=(*MMDEBSTRAP_OPTIONS, suite, *apt_sources(suite)))
    base_arg = (("BASE", debian.ref),)
    python = Image("python", f"{_python_version(suite)}-{suite}", "dockerfile",
                   LOCAL_DOCKERFILES / "python.Dockerfile", parents=("debian",), build_args=base_arg,
                   files=(("ca-certificates", 0o755), *_host_ca_certificates()), in_cluster=False)
    uv_version = _uv_version()
    uv = Image("uv", uv_version, "dockerfile", LOCAL_DOCKERFILES / "static.Dockerfile", target="uv",
               files=(("rootfs/uv", _uv_binary),), recipe=(f"uv=={uv_version}", "musllinux"), in_cluster=False)
    redis_version = versions.get("LOCAL_REDIS_VERSION")
    # Tags name the Debian suite too, as the official images' variants do (values-examples/local-cluster.yaml).
    redis = Image("redis", f"{redis_version}-{suite}", "dockerfile", LOCAL_DOCKERFILES / "redis.Dockerfile",
                  parents=("debian",), build_args=(*base_arg, ("REDIS_VERSION", redis_version)))
    pg_major = versions.get("LOCAL_POSTGRES_MAJOR")
    postgres = Image("postgres", f"{pg_major}-{suite}", "dockerfile", LOCAL_DOCKERFILES / "postgres.Dockerfile",
                     parents=("debian",), build_args=(*base_arg, ("PG_MAJOR", pg_major)),
                     files=(("postgres-entrypoint.sh", LOCAL_DOCKERFILES / "postgres-entrypoint.sh"),))
    kubernetes = versions.get("KUBERNETES_VERSION")
    pause = Image("pause", pause_version(), "dockerfile", LOCAL_DOCKERFILES / "static.Dockerfile", target="pause",
                  files=(("rootfs/pause", _pause_binary),),
                  recipe=(f"k8s.io/kubernetes@{kubernetes}", "gcc -Os -static"))
    images = [debian, python, uv, redis, postgres, pause]
    ca_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    for name, (component, command, path) in GO_IMAGES.items():
        go = build.by_name(component)
        binary = go.binary(command)
        images.append(Image(name, go.version, "dockerfile",
                            LOCAL_DOCKERFILES / "static.Dockerfile", target=name,
                            files=((f"rootfs/{path}", binary), ("rootfs/etc/ssl/certs/ca-certificates.crt", ca_bundle),
                                   *_NONROOT_FILES),
                            go_binaries=((component, command),)))
    known = {image.name: image for image in images}
    known["celery-stack"] = _project_image(known)
    return known


def _python_version(suite: str) -> str:
    # Debian's python3 of the suite: the image tag says which Python the project image runs.
    return {"bookworm": "3.11", "trixie": "3.13"}.get(suite, "3")


# --------------------------------------------------------------------------------------------------
# The project image's build context (the repository, filtered by .dockerignore)


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as moby's patternmatcher compiles it (`**` any depth, `*`/`?` within a name)."""
    out, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern[i:i + 1] == "/":
                i += 1
            out += ".*" if i >= len(pattern) else "(.*/)?"
            continue
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        elif char == "[" and "]" in pattern[i + 1:]:
            end = pattern.index("]", i + 1)
            out += pattern[i:end + 1]  # a character class, as moby passes it to its regexp
            i = end
        else:
            out += re.escape(char)
        i += 1
    return re.compile(out + r"\Z")


def _dockerignore(context: Path) -> list[tuple[bool, str, re.Pattern[str]]]:
    """(is an exception `!`, cleaned pattern, regex) per line of the context's .dockerignore."""
    path = context / ".dockerignore"
    rules = []
    for raw in path.read_text().splitlines() if path.is_file() else []:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line[1:].strip() if exception else line).lstrip("/")
        rules.append((exception, pattern, _dockerignore_regex(pattern)))
    return rules


def _ignored(relative: str, rules: list[tuple[bool, str, re.Pattern[str]]]) -> bool:
    """moby's MatchesOrParentMatches: the last pattern matching the path or one of its parents decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts))]
    matched = False
    for exception, _, regex in rules:
        if exception != matched:
            continue
        if regex.match(relative) or any(regex.match(prefix) for prefix in prefixes):
            matched = not exception
    return matched


def context_files(context: Path = REPO_ROOT) -> list[str]:
    """The files docker would send as the build context (relative paths, sorted)."""
    rules = _dockerignore(context)
    exceptions = [pattern for exception, pattern, _ in rules if exception]
    files = []
    for root, dirs, names in os.walk(context):
        base = Path(root).relative_to(context).as_posix()
        prefix = "" if base == "." else base + "/"
        # Skip an ignored directory unless an exception pattern could match below it (.venv, .git, .tools).
        dirs[:] = sorted(d for d in dirs if not _ignored(prefix + d, rules) or any(
            p.startswith(prefix + d + "/") or p == prefix + d or re.match(r"[*?\[]", p) for p in exceptions))
        files += [prefix + n for n in names if not _ignored(prefix + n, rules)]
    return sorted(files)


def _context_digest(context: Path, dockerfile: Path) -> str:
    digest = hashlib.sha256()
    digest.update(dockerfile.read_bytes())
    for relative in context_files(context):
        path = context / relative
        if path.is_symlink():
            digest.update(f"{relative} -> {os.readlink(path)}\n".encode())
        elif path.is_file():
            digest.update(f"{relative} {path.stat().st_mode & 0o111:o} {_file_digest(path)}\n".encode())
    return digest.hexdigest()


def _project_image(known: dict[str, Image]) -> Image:
    # The tag names the content: a changed context is a new tag, so a helm upgrade rolls the pods.
    python, uv = known["python"], known["uv"]
    args = (("PYTHON_IMAGE", python.ref), ("UV_IMAGE", uv.ref))
    parents_fp = fingerprint(python, known) + fingerprint(uv, known)
    context = hashlib.sha256((_context_digest(REPO_ROOT, PROJECT_DOCKERFILE) + parents_fp + repr(args)).encode())
    return Image("celery-stack", f"dev-{context.hexdigest()[:12]}", "project", PROJECT_DOCKERFILE,
                 parents=("python", "uv"), build_args=args)


def fingerprint(image: Image, known: dict[str, Image] | None = None) -> str:
    """A digest of everything the image is made from (its parents' fingerprints included)."""
    known = known if known is not None else _images()
    digest = hashlib.sha256(json.dumps([image.name, image.tag, image.kind, image.target, image.build_args,
                                        image.recipe]).encode())
    if image.dockerfile is not None:
        digest.update(image.dockerfile.read_bytes())
    for target, source in image.files:
        if isinstance(source, Path):
            if not source.is_file():
                raise ImageError(_missing(image, source))
            digest.update(f"{target} {source.stat().st_mode & 0o111:o} {_file_digest(source)}".encode())
        elif isinstance(source, bytes | int):
            digest.update(f"{target} {source!r}".encode())
        else:
            digest.update(target.encode())  # made by a function: its recipe is in image.recipe
    for parent in image.parents:
        digest.update(fingerprint(known[parent], known).encode())
    return digest.hexdigest()


def _missing(image: Image, path: Path) -> str:
    for component, command in image.go_binaries:
        if build.by_name(component).binary(command) == path:
            return (f"image {image.name}: the Go binary {command} is not built yet ({path}); "
                    f"`python3 -m localcluster build {component}` first")
    return f"image {image.name}: {path} is missing"


def refresh() -> None:
    """Forget the computed images (the project image's tag follows the context as it is now)."""
    _images.cache_clear()


def images() -> dict[str, Image]:
    """Every image by name (debian, python, uv, redis, postgres, pause, the Go ones, celery-stack)."""
    return dict(_images())


def image_refs() -> dict[str, str]:
    """name -> reference of every image the cluster runs (what `import_all` imports): debian (also
    local-path-provisioner's helper), redis, postgres, pause, the Go ones and celery-stack."""
    return {name: image.ref for name, image in _images().items() if image.in_cluster}


def project_image() -> tuple[str, str]:
    """(repository, tag) of the project image, for `--set image.repository=... --set image.tag=...`."""
    image = _images()["celery-stack"]
    return image.repository, image.tag


def project_build_args() -> dict[str, str]:
    """The project Dockerfile's build arguments that name the local base images (Tilt builds with them)."""
    return dict(_images()["celery-stack"].build_args)


def pause_image() -> str:
    """The sandbox image reference (containerd's `sandbox_image`)."""
    return _images()["pause"].ref


def chart_values() -> dict[str, str]:
    """The chart's image settings that point it at the local images (`--set key=value` each)."""
    all_images = _images()
    values = {}
    for prefix, name in (("image", "celery-stack"), ("redis.image", "redis"), ("postgresql.image", "postgres")):
        values[f"{prefix}.repository"] = all_images[name].repository
        values[f"{prefix}.tag"] = all_images[name].tag
    return values


# --------------------------------------------------------------------------------------------------
# Our dockerd


def _run(argv: list[str], *, what: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(argv, env=env, capture_output=True)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode(errors="replace").strip()
        raise ImageError(f"{what} failed (exit {result.returncode}):\n{output[-6000:]}")
    return result.stdout.decode(errors="replace")


def _docker_env() -> dict[str, str]:
    # DOCKER_CONFIG: no credential helpers or contexts of the user's ~/.docker get in the way.
    return {**os.environ, "DOCKER_HOST": f"unix://{DOCKER_SOCKET}", "DOCKER_BUILDKIT": BUILDKIT,
            "DOCKER_CONFIG": str(RUN / "docker-client")}


def docker(*args: str, what: str = "") -> str:
    """Run Debian's docker client against our dockerd; the output, or ImageError with it."""
    return _run([DOCKER, *args], what=what or f"docker {' '.join(args[:2])}", env=_docker_env())


def _docker_answers() -> bool:
    """GET /_ping on our socket (fast, and no client process)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.settimeout(2)
            connection.connect(str(DOCKER_SOCKET))
            connection.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = connection.recv(4096)
    except OSError:
        return False
    return reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n", 1)[0]


def start_docker(*, timeout: float = 60.0) -> None:
    """Start our dockerd unless it already answers on DOCKER_SOCKET."""
    if _docker_answers():
        return
    running = processes.tracked(DOCKERD_NAME)
    if running is None:
        DOCKER_EXEC_ROOT.mkdir(parents=True, exist_ok=True)
        DOCKER_DATA_ROOT.mkdir(parents=True, exist_ok=True)
        DOCKER_SOCKET.unlink(missing_ok=True)  # stale, from a dockerd killed without cleaning up
        if not DOCKERD_HOST_DIRS_RECORD.exists():
            DOCKERD_HOST_DIRS_RECORD.write_text(json.dumps({str(p): p.exists() for p in DOCKERD_HOST_DIRS}))
        # Ours, so /etc/docker/daemon.json cannot interfere; the identity key goes with the images instead
        # of /etc/docker/key.json (a config key only: dockerd 20.10 has no flag for it).
        config = DOCKER_EXEC_ROOT / "daemon.json"
        config.write_text(json.dumps({"deprecated-key-path": str(DOCKER_DATA_ROOT / "key.json")}) + "\n")
        # --iptables=false --ip-masq=false --bridge=none: dockerd would otherwise set the FORWARD policy to
        # DROP (pod traffic through the host stops) and add NAT rules; builds use --network host instead.
        argv = [DOCKERD, "--host", f"unix://{DOCKER_SOCKET}", "--config-file", str(config),
                "--data-root", str(DOCKER_DATA_ROOT), "--exec-root", str(DOCKER_EXEC_ROOT),
                "--pidfile", str(DOCKER_EXEC_ROOT / "dockerd.pid"),
                "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--bridge=none"]
        running = processes.start(DOCKERD_NAME, argv)
    deadline = time.monotonic() + timeout
    while not _docker_answers():
        if not processes.alive(running):
            raise ImageError(f"dockerd exited:\n{processes.log_tail(DOCKERD_NAME)}")
        if time.monotonic() > deadline:
            raise ImageError(f"dockerd did not answer on {DOCKER_SOCKET} in {timeout:.0f} s:\n"
                             f"{processes.log_tail(DOCKERD_NAME)}")
        time.sleep(0.2)


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root`, deepest first."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(root) or point.startswith(f"{root}/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def stop_docker(*, timeout: float = 30.0) -> bool:
    """Stop our dockerd (SIGTERM, SIGKILL after `timeout`) and its containerd; False if it was not running."""
    # Its containerd, in case dockerd dies without stopping it (killed, or a crash).
    containerd_pid_file = DOCKER_EXEC_ROOT / "containerd" / "containerd.pid"
    stopped = processes.stop_named(DOCKERD_NAME, timeout=timeout)
    with contextlib.suppress(OSError, ValueError):
        pid = int(containerd_pid_file.read_text().split()[0])
        # only that very process: its command line names our exec root
        if str(DOCKER_EXEC_ROOT).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
    DOCKER_SOCKET.unlink(missing_ok=True)
    # dockerd leaves its default network namespace mounted (exec-root/netns/default) even on SIGTERM.
    for point in _mounts_under(DOCKER_EXEC_ROOT):
        subprocess.run(["umount", point], capture_output=True)
    if not _mounts_under(DOCKER_EXEC_ROOT):
        shutil.rmtree(DOCKER_EXEC_ROOT, ignore_errors=True)
        shutil.rmtree(RUN / "docker-client", ignore_errors=True)
    with contextlib.suppress(OSError, ValueError):
        existed = json.loads(DOCKERD_HOST_DIRS_RECORD.read_text())
        for directory in DOCKERD_HOST_DIRS:  # innermost first; rmdir: only when empty
            if existed.get(str(directory)) is False:
                with contextlib.suppress(OSError):
                    directory.rmdir()
        DOCKERD_HOST_DIRS_RECORD.unlink()
    return stopped


# --------------------------------------------------------------------------------------------------
# Building


def _label(ref: str) -> str | None:
    """The fingerprint label of a local image (None when the image is absent)."""
    template = f'{{{{index .Config.Labels "{FINGERPRINT_LABEL}"}}}}'
    result = subprocess.run([DOCKER, "image", "inspect", "--format", template, ref], env=_docker_env(),
                            capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None


def _rootfs_tar(image: Image, wanted: str) -> Path:
    """The mmdebstrap tarball, kept in WORK and remade only when its recipe changes."""
    tar = WORK / f"{image.name}-{image.tag}.tar"
    stamp = tar.with_suffix(".fingerprint")
    if tar.is_file() and stamp.is_file() and stamp.read_text().strip() == wanted:
        return tar
    WORK.mkdir(parents=True, exist_ok=True)
    partial = tar.with_suffix(".partial.tar")
    sources = [line for line in image.recipe if line.startswith("deb ")]
    argv = ["mmdebstrap", "--quiet", *MMDEBSTRAP_OPTIONS, image.tag, str(partial), *sources]
    _run(argv, what=f"mmdebstrap {image.tag}")
    partial.rename(tar)
    stamp.write_text(wanted + "\n")
    return tar


def _lay_out_context(image: Image) -> Path:
    context = WORK / "context" / image.name
    shutil.rmtree(context, ignore_errors=True)
    context.mkdir(parents=True)
    for target, source in image.files:
        path = context / target
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(source, int):
            path.mkdir(exist_ok=True)
            path.chmod(source)
            continue
        if isinstance(source, bytes):
            path.write_bytes(source)
            continue
        origin = source if isinstance(source, Path) else source()
        try:
            os.link(origin, path)  # big Go binaries: no copy when on the same file system
        except OSError:
            shutil.copy2(origin, path)
    return context


def _build_one(image: Image, wanted: str) -> None:
    label = f"{FINGERPRINT_LABEL}={wanted}"
    if image.kind == "rootfs":
        tar = _rootfs_tar(image, wanted)
        docker("import", "--change", f"LABEL {label}", "--change", 'CMD ["bash"]', str(tar), image.ref,
               what=f"docker import {image.ref}")
        return
    assert image.dockerfile is not None
    context = REPO_ROOT if image.kind == "project" else _lay_out_context(image)
    argv = ["build", "--network", "host", "--label", label, "--tag", image.ref, "--file", str(image.dockerfile)]
    if image.target:
        argv += ["--target", image.target]
    for key, value in image.build_args:
        argv += ["--build-arg", f"{key}={value}"]
    docker(*argv, str(context), what=f"docker build {image.ref}")
    if image.kind != "project":
        shutil.rmtree(context, ignore_errors=True)
        return
    # Each context change is a new tag: drop the older ones (BuildKit's cache keeps their layers for reuse).
    for ref in docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", image.repository).split():
        if ref != image.ref and not ref.endswith(":<none>"):
            docker("image", "rm", ref, what=f"docker image rm {ref}")


def _with_parents(names: Iterable[str]) -> list[str]:
    all_images = _images()
    wanted: set[str] = set()

    def add(name: str) -> None:
        if name not in all_images:
            raise ImageError(f"unknown image {name!r}; known: {', '.join(all_images)}")
        wanted.add(name)
        for parent in all_images[name].parents:
            add(parent)

    for name in names:
        add(name)
    return [name for name in all_images if name in wanted]  # in build order


def missing_go_binaries(names: Iterable[str] | None = None) -> list[Path]:
    """The Go binaries the given images (default: all) need and build.py has not made yet."""
    all_images = _images()
    paths = []
    for name in names if names is not None else all_images:
        for component, command in all_images[name].go_binaries:
            path = build.by_name(component).binary(command)
            if not path.is_file():
                paths.append(path)
    return paths


def build_images(names: Iterable[str] | None = None, *, force: bool = False) -> dict[str, str]:
    """Build the named images (default: all) and what they are built FROM; each is skipped when its
    fingerprint label already matches. Returns name -> reference of those images."""
    start_docker()
    order = _with_parents(names if names is not None else _images())
    built = False
    for name in order:
        image = _images()[name]
        wanted = fingerprint(image)
        if not force and _label(image.ref) == wanted:
            continue
        with step(f"image {image.ref}"), heartbeat(f"  building {image.ref}"):
            _build_one(image, wanted)
        built = True
    if built:  # the images a rebuild untagged
        docker("image", "prune", "--force", what="docker image prune")
    return {name: _images()[name].ref for name in order}


def build_all(*, force: bool = False) -> dict[str, str]:
    """Every image; name -> reference (e.g. ["pause"], ["coredns"], ["debian"], ["celery-stack"])."""
    missing = missing_go_binaries()
    if missing:
        raise ImageError("Go binaries not built yet: " + ", ".join(str(p) for p in missing))
    return build_images(force=force)


# --------------------------------------------------------------------------------------------------
# Into containerd


def _ctr(address: Path, *args: str) -> str:
    return _run(["ctr", "--address", str(address), "--namespace", CTR_NAMESPACE, *args],
                what=f"ctr {' '.join(args[:2])} ({address})")


def _containerd_config_digests(address: Path, refs: set[str]) -> dict[str, str]:
    """ref -> config digest (= docker's image ID) of those of `refs` containerd already has."""
    present = {}
    for line in _ctr(address, "images", "list").splitlines()[1:]:
        words = line.split()
        if len(words) >= 3 and words[0] in refs:
            manifest = json.loads(_ctr(address, "content", "get", words[2]))
            if "config" in manifest:
                present[words[0]] = manifest["config"]["digest"]
    return present


def import_images(address: Path, names: Iterable[str] | None = None) -> list[str]:
    """Import the named images (default: those of image_refs(); built first if needed) into the containerd
    at `address`, namespace k8s.io, skipping those it already holds with the same ID. Returns the
    references imported."""
    wanted = list(names) if names is not None else list(image_refs())
    refs = {name: ref for name, ref in build_images(wanted).items() if name in wanted}
    docker_ids = {ref: docker("image", "inspect", "--format", "{{.Id}}", ref).strip() for ref in refs.values()}
    present = _containerd_config_digests(address, set(docker_ids))
    todo = [ref for ref, image_id in docker_ids.items() if present.get(ref) != image_id]
    if not todo:
        return []
    # One stream: layers shared by several images travel once.
    with step(f"importing {len(todo)} images into containerd"), heartbeat("  docker save | ctr images import"), \
            tempfile.TemporaryFile() as save_errors:
        save = subprocess.Popen([DOCKER, "save", *todo], env=_docker_env(), stdout=subprocess.PIPE, stderr=save_errors)
        ctr = subprocess.Popen(["ctr", "--address", str(address), "--namespace", CTR_NAMESPACE, "images", "import",
                                "-"], stdin=save.stdout, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert save.stdout is not None
        save.stdout.close()  # only ctr holds the pipe: if it fails, docker save stops instead of blocking
        ctr_output = ctr.communicate()[0].decode(errors="replace")
        save_status = save.wait()
        save_errors.seek(0)
        if save_status != 0 or ctr.returncode != 0:
            raise ImageError("docker save | ctr images import failed:\n"
                             + save_errors.read().decode(errors="replace") + ctr_output)
    return todo


def import_all(address: Path) -> list[str]:
    return import_images(address)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localcluster.images", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    building = sub.add_parser("build", help="build images (default: all) into our dockerd")
    building.add_argument("names", nargs="*")
    building.add_argument("--force", action="store_true", help="rebuild even when the fingerprint matches")
    importing = sub.add_parser("import", help="import images (default: all) into a containerd")
    importing.add_argument("--address", type=Path, help="containerd socket (default: the cluster's)")
    importing.add_argument("names", nargs="*")
    sub.add_parser("refs", help="print name=reference of every image")
    sub.add_parser("stop", help="stop our dockerd")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            # The Go images wait for build.py; name them to fail instead of skipping them.
            blocked = {name for name in GO_IMAGES if missing_go_binaries([name])}
            if blocked and not args.names:
                say("skipping (Go binaries not built yet): " + ", ".join(sorted(blocked)))
            names = args.names or [name for name in _images() if name not in blocked]
            for name, ref in build_images(names, force=args.force).items():
                print(f"{name}={ref}")
        elif args.command == "import":
            from localcluster.configs import CONTAINERD_SOCKET

            for ref in import_images(args.address or CONTAINERD_SOCKET, args.names or None):
                print(f"imported {ref}")
        elif args.command == "refs":
            for name, ref in image_refs().items():
                print(f"{name}={ref}")
        else:
            stop_docker()
    except ImageError as error:
        print(f"error: {error}", file=sys.stderr)
        print(f"dockerd log: {LOGS / (DOCKERD_NAME + '.log')}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
