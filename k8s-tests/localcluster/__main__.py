"""python -m localcluster up | down | status | build [component ...]"""

from __future__ import annotations

import argparse
import sys

from localcluster import build
from localcluster.paths import KUBECONFIG


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build what is missing, start the cluster, wait until it is ready")
    sub.add_parser("down", help="stop everything cluster-up started and clean the host")
    sub.add_parser("status", help="which host processes run, and what cluster-down would leave")
    building = sub.add_parser("build", help="only the Go builds (into the cache)")
    building.add_argument("components", nargs="*", help=", ".join(c.name for c in build.components()))
    args = parser.parse_args(argv)

    if args.command == "up":
        from localcluster import cluster

        try:
            cluster.up()
        except Exception as error:  # a half-started cluster is torn down by the caller (`make cluster-down`)
            print(f"cluster-up failed: {error}", file=sys.stderr)
            print("logs: " + str(cluster.LOGS) + "; `make cluster-down` removes what was started",
                  file=sys.stderr)
            return 1
        return 0
    if args.command == "down":
        from localcluster import teardown

        return 1 if teardown.down() else 0
    if args.command == "status":
        from localcluster import processes, teardown

        for process in processes.all_tracked():
            print(f"{process.name:26} pid {process.pid}")
        left = teardown.leftovers()
        print(f"kubeconfig: {KUBECONFIG}" if KUBECONFIG.exists() else "no cluster state")
        print(f"{len(left)} items cluster-down would remove")
        return 0
    unknown = set(args.components) - {c.name for c in build.components()}
    if unknown:
        parser.error(f"unknown components: {', '.join(sorted(unknown))}")
    build.build_all(args.components or None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
