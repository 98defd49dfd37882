"""Command line for the Makefile: `python -m k8s_support.cli flower` (make flower)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from k8s_support.cluster import probe
from k8s_support.release import ClusterReader, Release, service_port


def flower(args: argparse.Namespace) -> int:
    from kubernetes import client

    release = Release.from_env({"K8S_TESTS_RELEASE": args.release, "K8S_TESTS_NAMESPACE": args.namespace,
                                "K8S_TESTS_CONTEXT": args.context or ""})
    reachable = probe(release.context)
    if not reachable.reachable:
        print(f"error: {reachable.reason}", file=sys.stderr)
        return 1
    reader = ClusterReader(client.CoreV1Api(reachable.client), client.AppsV1Api(reachable.client), release)
    try:
        login = reader.environment("flower", "flower")["FLOWER_BASIC_AUTH"]
        service = reader.service("flower")
    except (AssertionError, KeyError) as exc:
        print(f"error: cannot read Flower of release {release.name} in {release.namespace}: {exc}",
              file=sys.stderr)
        return 1
    user, _, password = login.partition(":")
    port = service_port(service, "http")
    print(f"Flower: http://localhost:{args.local_port}/  user: {user}  password: {password}", flush=True)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print("error: 'kubectl' is not installed or not on PATH", file=sys.stderr)
        return 127
    argv = [kubectl, *(["--context", release.context] if release.context else []), "--namespace",
            release.namespace, "port-forward", f"svc/{service.metadata.name}", f"{args.local_port}:{port}"]
    print(" ".join(argv), flush=True)
    os.execv(kubectl, argv)  # foreground until Ctrl-C, like a plain kubectl port-forward
    return 0  # pragma: no cover - execv does not return


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m k8s_support.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    flower_parser = sub.add_parser("flower", help="print Flower's login and port-forward it")
    flower_parser.add_argument("--release", default="celery-stack")
    flower_parser.add_argument("--namespace", default="celery-stack")
    flower_parser.add_argument("--context", default=None)
    flower_parser.add_argument("--local-port", type=int, required=True)
    flower_parser.set_defaults(func=flower)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
