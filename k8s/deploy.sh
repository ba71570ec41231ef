#!/usr/bin/env bash
# Install privproc on a running cluster with the chart, the way an operator would, and leave what
# host clients and the cluster tests need in .privproc/k8s/:
#   kubeconfig   the cluster's kubeconfig (mode 0600)
#   secrets/     `privproc cluster secrets` output: secrets.yaml (applied with kubectl, never put in
#                values) and keys.yaml (public keys, passed to helm as values)
#   stack.json   how host clients reach the release's relay, CDN, ACS, ledger and witness (NodePorts
#                on NODE_IP) and which keys and release they trust
# Used by k8s/local (the cluster of this repository) and k8s/kind; they set, in the environment:
#   KUBECONFIG KUBECTL HELM   the cluster and the tools
#   NODE_NAME NODE_IP         the node standing for the confidential pool, and where NodePorts answer
#   IMAGE_DIGEST              the privproc image's digest (sha256:...), measured into the predictor
#   VALUES                    the values files for this cluster (image, NodePorts, sizes), space-separated
#
# usage: deploy.sh PRIVPROC   (the host's privproc command, from the project's virtualenv)
set -euo pipefail
. "$(dirname "$0")/steps.sh"
: "${KUBECONFIG:?}" "${KUBECTL:?}" "${HELM:?}" "${NODE_NAME:?}" "${NODE_IP:?}" "${IMAGE_DIGEST:?}" "${VALUES:?}"
export KUBECONFIG

privproc=${1:?usage: deploy.sh PRIVPROC}
python=$(dirname "$privproc")/python
repo=$(cd "$(dirname "$0")/.." && pwd)
namespace=${PRIVPROC_K8S_NAMESPACE:-privproc}
release=${PRIVPROC_K8S_RELEASE:-privproc}
out=$repo/.privproc/k8s
"$KUBECTL" get --raw /readyz >/dev/null 2>&1 || die "the cluster does not answer (KUBECONFIG=$KUBECONFIG)"
mkdir -p "$out" && chmod 700 "$repo/.privproc" "$out"
[ "$KUBECONFIG" -ef "$out/kubeconfig" ] || install -m 600 "$KUBECONFIG" "$out/kubeconfig"

prepare() {
    "$KUBECTL" create namespace "$namespace" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
    # This node stands for the confidential pool: the label the predictors select and a taint only
    # they tolerate (PreferNoSchedule: a single node must still take everything else).
    "$KUBECTL" label node "$NODE_NAME" privproc.dev/pool=confidential --overwrite >/dev/null
    "$KUBECTL" taint node "$NODE_NAME" privproc.dev/confidential=true:PreferNoSchedule --overwrite >/dev/null
    # ... and its runtime class, handled here by plain runc (a real pool's is Kata with SEV-SNP).
    printf '%s\n' "apiVersion: node.k8s.io/v1" "kind: RuntimeClass" \
        "metadata: {name: privproc-confidential}" "handler: ${RUNTIME_HANDLER:-runc}" \
        | "$KUBECTL" apply -f - >/dev/null
    # Secrets are made on the operator's machine and applied; the chart only names them.
    "$privproc" cluster secrets --name "$release" --namespace "$namespace" --out "$out/secrets" --development
    "$KUBECTL" apply -f "$out/secrets/secrets.yaml" >/dev/null
}

install_chart() {
    local allowlist_digest log=$out/helm-install.log file values=()
    for file in $VALUES; do values+=(-f "$file"); done
    allowlist_digest=$("$privproc" image measure --json \
        | "$python" -c 'import json, sys; print(json.load(sys.stdin)["allowlist_digest"].removeprefix("sha256:"))')
    if ! "$HELM" upgrade --install "$release" "$repo/charts/privproc" --namespace "$namespace" \
        "${values[@]}" -f "$out/secrets/keys.yaml" \
        --set "image.digest=$IMAGE_DIGEST" --set "predictor.logSidecar.allowlistDigest=$allowlist_digest" \
        --timeout 15m >"$log" 2>&1; then
        tail -20 "$log" >&2
        "$KUBECTL" -n "$namespace" get pods -o wide >&2 || true
        die "helm upgrade --install failed"
    fi
}

# Not `helm --wait`: Helm would wait for the predictors before running the release hook that lets
# the verifier admit them. Helm waits for the hook Job itself; then every workload's rollout.
wait_rollouts() {
    local kind name
    for kind in deployment statefulset; do
        for name in $("$KUBECTL" -n "$namespace" get "$kind" -l "app.kubernetes.io/instance=$release" -o name); do
            "$KUBECTL" -n "$namespace" rollout status "$name" --timeout 10m >/dev/null \
                || { "$KUBECTL" -n "$namespace" get pods -o wide >&2; die "$name did not roll out"; }
        done
    done
}

write_stack() {
    # A new install is a new log (the local values keep it on emptyDirs): the host client's stored
    # checkpoints and tokens belong to the old one.
    rm -rf "$out/client"
    "$python" "$repo/k8s/stackfile.py" --kubectl "$KUBECTL" --namespace "$namespace" --release "$release" \
        --node-ip "$NODE_IP" --keys "$out/secrets/keys.yaml" --out "$out/stack.json"
}

total=$SECONDS
step "namespace, node pool and secrets" prepare
step "helm upgrade --install" install_chart
step "every workload rolled out" wait_rollouts
step "stack.json for host clients" write_stack
say "deployed: $((SECONDS - total))s; KUBECONFIG=$out/kubeconfig, privproc --stack $out/stack.json"
