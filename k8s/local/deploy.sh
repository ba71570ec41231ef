#!/usr/bin/env bash
# The chart on the local cluster (k8s/deploy.sh with this cluster's node, tools, image and values).
# usage: deploy.sh PRIVPROC   (the host's privproc command)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root
version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$REPO_ROOT/pyproject.toml")
ids=$CACHE/images/privproc-$version.tar.ids
[ -f "$ids" ] || die "no image archive for privproc $version: run build-image.sh first"
IMAGE_DIGEST=$(head -1 "$ids") VALUES=$LOCAL_DIR/values.yaml KUBECTL=$KUBECTL HELM=$HELM \
    NODE_NAME=$NODE_NAME NODE_IP=$NODE_IP exec "$REPO_ROOT/k8s/deploy.sh" "$@"
