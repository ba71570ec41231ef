#!/usr/bin/env bash
# Smoke check of the local cluster and the image: one pod running `privproc serve cdn` from the
# imported image, under the restricted pod security settings the chart will use (non-root,
# read-only root filesystem, no privilege escalation, all capabilities dropped, seccomp
# RuntimeDefault, no service-account token), must become Ready (its readiness probe is the gRPC
# health check) and answer from the host through its Service's ClusterIP: gRPC health SERVING and
# the HTTP front's answer. Leaves nothing behind (its namespace is deleted).
#
# usage: smoke.sh [PYTHON]   (PYTHON: an interpreter with privproc importable; default the repo's .venv)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root

python=${1:-$REPO_ROOT/.venv/bin/python}
version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$REPO_ROOT/pyproject.toml")
image=${PRIVPROC_IMAGE:-localhost/privproc:$version}
namespace=privproc-smoke
# Kubernetes 1.20 has no gRPC probe (1.24+ does): the probe runs the project's own health check
# with the image's Python, exec-form (the image has no shell).
probe_code='import asyncio, sys; from privproc.runtime.rpc import check_health; sys.exit(0 if asyncio.run(check_health("127.0.0.1:50051")) else 1)'

cleanup() { "$KUBECTL" delete namespace "$namespace" --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT

apply() {
    "$KUBECTL" create namespace "$namespace" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
    # The CDN's publisher credential: random, from a Secret, never printed.
    "$KUBECTL" -n "$namespace" create secret generic cdn-publisher \
        --from-literal=release="$(openssl rand -hex 32)" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
    "$KUBECTL" -n "$namespace" apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: cdn, labels: {app.kubernetes.io/name: privproc, app.kubernetes.io/component: cdn}}
spec:
  automountServiceAccountToken: false
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    fsGroup: 10001
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: cdn
    image: $image
    imagePullPolicy: Never
    args: [serve, cdn, --host, 0.0.0.0, --grpc-port, "50051", --http-port, "8080",
           --publisher, "release:release:/var/run/secrets/privproc/release"]
    ports: [{name: grpc, containerPort: 50051}, {name: http, containerPort: 8080}]
    readinessProbe:
      exec: {command: [/opt/privproc/bin/python, -c, '$probe_code']}
      periodSeconds: 2
      timeoutSeconds: 5
    resources:
      requests: {cpu: 50m, memory: 64Mi}
      limits: {cpu: "1", memory: 256Mi}
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
    volumeMounts: [{name: publisher, mountPath: /var/run/secrets/privproc, readOnly: true}]
  volumes:
  - name: publisher
    secret: {secretName: cdn-publisher, defaultMode: 0440}
---
apiVersion: v1
kind: Service
metadata: {name: cdn}
spec:
  selector: {app.kubernetes.io/name: privproc, app.kubernetes.io/component: cdn}
  ports: [{name: grpc, port: 50051}, {name: http, port: 8080}]
YAML
}

ready() { "$KUBECTL" -n "$namespace" wait --for=condition=Ready pod/cdn --timeout=180s >/dev/null; }

from_host() {
    local ip status
    ip=$("$KUBECTL" -n "$namespace" get service cdn -o jsonpath='{.spec.clusterIP}')
    PYTHONPATH="$REPO_ROOT/services" "$python" -c 'import asyncio, sys
from privproc.runtime.rpc import check_health
sys.exit(0 if asyncio.run(check_health(sys.argv[1], deadline_seconds=5.0)) else 1)' "$ip:50051" \
        || die "gRPC health check through the Service ($ip:50051) failed"
    # Nothing is published yet, so the CDN answers its keys path with a problem document (404).
    status=$(curl -s -o /dev/null -w '%{http_code}' -m 5 "http://$ip:8080/ohttp-keys")
    [ "$status" = 404 ] || die "HTTP front through the Service answered $status, expected 404"
    say "from the host: gRPC health SERVING at $ip:50051, HTTP $status at $ip:8080/ohttp-keys"
}

# Inside the pod (exec-form: the image has no shell): it runs as 10001, there is no /bin/sh, and the
# cluster DNS gives its Service's ClusterIP.
inside_pod() {
    local ip answer
    ip=$("$KUBECTL" -n "$namespace" get service cdn -o jsonpath='{.spec.clusterIP}')
    answer=$("$KUBECTL" -n "$namespace" exec cdn -- /opt/privproc/bin/python -c 'import os, socket, sys
print(os.getuid(), os.path.exists("/bin/sh"), socket.gethostbyname(sys.argv[1]))' "cdn.$namespace.svc.$CLUSTER_DNS_DOMAIN")
    [ "$answer" = "10001 False $ip" ] || die "inside the pod: expected '10001 False $ip', got '$answer'"
    say "inside the pod: uid 10001, no /bin/sh, cdn.$namespace.svc.$CLUSTER_DNS_DOMAIN -> $ip"
}

total=$SECONDS
step "apply pod and service" apply
step "pod Ready" ready
step "reach it from the host" from_host
step "look inside the pod" inside_pod
"$KUBECTL" -n "$namespace" get pod cdn -o wide
say "smoke check passed: $((SECONDS - total))s"
