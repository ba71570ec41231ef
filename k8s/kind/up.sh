#!/usr/bin/env bash
# privproc on kind, for hosts with Docker: the same chart, values and cluster tests as the local
# cluster (k8s/local), with kind's node as the confidential pool. Not runnable without Docker.
#
# usage: up.sh PRIVPROC   (the host's privproc command, from the project's virtualenv)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cluster=privproc
for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || { echo "kind-e2e needs $tool on PATH" >&2; exit 1; }
done
version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$repo/pyproject.toml")
image=localhost/privproc:$version
kind get clusters | grep -qx "$cluster" || kind create cluster --config "$repo/k8s/kind-config.yaml" --wait 120s
mkdir -p "$repo/.privproc/k8s" && chmod 700 "$repo/.privproc" "$repo/.privproc/k8s"
kind get kubeconfig --name "$cluster" >"$repo/.privproc/k8s/kubeconfig"
chmod 600 "$repo/.privproc/k8s/kubeconfig"
# The same Dockerfile users build; SOURCE_DATE_EPOCH keeps it reproducible.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-946684800} docker build -t "$image" "$repo"
kind load docker-image "$image" --name "$cluster"
KUBECONFIG=$repo/.privproc/k8s/kubeconfig KUBECTL=$(command -v kubectl) HELM=$(command -v helm) \
    NODE_NAME=$cluster-control-plane NODE_IP=127.0.0.1 \
    IMAGE_DIGEST=$(docker image inspect -f '{{.Id}}' "$image") \
    VALUES="$repo/k8s/local/values.yaml $repo/k8s/kind/values.yaml" \
    "$repo/k8s/deploy.sh" "$@"
