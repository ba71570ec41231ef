#!/usr/bin/env bash
# Delete the kind cluster k8s/kind/up.sh made (and the host files it wrote).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
kind delete cluster --name privproc
rm -rf "$repo/.privproc/k8s"
