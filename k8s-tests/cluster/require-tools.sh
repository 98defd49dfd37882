#!/bin/sh
# Usage: require-tools.sh TOOL... — one clear line per missing tool on stderr, exit 127 if any is missing.
# (Make targets call this first, so a missing kind/docker/helm/kubectl never ends in a stack trace.)
missing=0
for tool in "$@"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    case "$tool" in
      kind) hint="https://kind.sigs.k8s.io/docs/user/quick-start/#installation" ;;
      docker) hint="https://docs.docker.com/engine/install/ (and start the Docker engine)" ;;
      helm) hint="https://helm.sh/docs/intro/install/" ;;
      kubectl) hint="https://kubernetes.io/docs/tasks/tools/" ;;
      tilt) hint="https://docs.tilt.dev/install.html" ;;
      ctlptl) hint="https://github.com/tilt-dev/ctlptl#how-do-i-install-it" ;;
      *) hint="see docs/cluster.md" ;;
    esac
    echo "error: '$tool' is not installed or not on PATH; install it: $hint" >&2
    missing=1
  fi
done
[ "$missing" -eq 0 ] || exit 127
