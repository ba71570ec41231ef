#!/usr/bin/env bash
# Start a single-node Kubernetes here: containerd (runc), etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy and the DNS stand-in, all as plain processes (no systemd), with
# every file under $PRIVPROC_K8S_STATE. Run install.sh first. Running it again on a healthy cluster
# does nothing; on a half-started one it tears that down first. cluster-down.sh undoes it all.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root
[ -x "$K8S_BIN/kubelet" ] && [ -x "$K8S_BIN/pause" ] || die "no Kubernetes binaries in $K8S_BIN: run k8s/local/install.sh first"

# Host settings this script or the components change, restored by cluster-down.sh. kubelet sets the
# vm/kernel ones itself; kube-proxy sets route_localnet and the conntrack ones.
SYSCTLS=(
    net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
    net.ipv4.conf.all.route_localnet vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.netfilter.nf_conntrack_max
    net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_timeout_close_wait
)
# Host paths the components create outside the state dir (kubelet's pod logs, the CNI result cache,
# containerd's shim sockets, network namespaces): removed at teardown when they did not exist before.
HOST_PATHS=(/var/log/pods /var/log/containers /var/lib/cni /run/containerd /run/netns)
COMPONENTS=(containerd etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy dns-stub)

running() { [ -f "$LOGS/$1.pid" ] && kill -0 "$(cat "$LOGS/$1.pid")" 2>/dev/null; }
healthy() {
    for component in "${COMPONENTS[@]}"; do running "$component" || return 1; done
    "$KUBECTL" get --raw /readyz >/dev/null 2>&1
}
node_ready() {
    [ "$("$KUBECTL" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# start NAME COMMAND...: run a component in the background, its output in $LOGS/NAME.log.
start() {
    local name=$1
    shift
    nohup "$@" >"$LOGS/$name.log" 2>&1 &
    echo $! >"$LOGS/$name.pid"
}

save_host() {
    mkdir -p "$STATE/host"
    [ -f "$STATE/host/sysctl.saved" ] && return
    for key in "${SYSCTLS[@]}"; do
        value=$(sysctl -n "$key" 2>/dev/null) && printf '%s=%s\n' "$key" "$value"
    done >"$STATE/host/sysctl.saved.partial"
    for path in "${HOST_PATHS[@]}"; do [ -e "$path" ] || echo "$path"; done >"$STATE/host/created-paths"
    # The iptables tables that exist now (kube-proxy and kubelet create nat, filter and mangle).
    iptables-save | awk '/^\*/ {print substr($0, 2)}' >"$STATE/host/iptables-tables"
    mv "$STATE/host/sysctl.saved.partial" "$STATE/host/sysctl.saved"
}

host_network() {
    # The node's address on its own bridge: nothing on the host routes 10.250.0.0/16, and loopback
    # stays as it is (every component below listens on the node IP, not on 127.0.0.1).
    if ! ip link show "$NODE_LINK" >/dev/null 2>&1; then
        ip link add "$NODE_LINK" type bridge
        ip addr add "$NODE_IP/32" dev "$NODE_LINK"
        ip link set "$NODE_LINK" up
    fi
    modprobe br_netfilter 2>/dev/null || true
    sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
}

make_pki() {
    [ -f "$KUBECONFIG" ] && return
    mkdir -p "$PKI"
    (
        cd "$PKI"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 -subj /CN=privproc-local-ca 2>/dev/null
        printf 'subjectAltName=DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.%s,IP:10.96.0.1,IP:%s\nextendedKeyUsage=serverAuth\n' \
            "$CLUSTER_DNS_DOMAIN" "$NODE_IP" >apiserver.ext
        openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj /CN=kube-apiserver 2>/dev/null
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 30 -extfile apiserver.ext 2>/dev/null
        # One cluster-admin client certificate for the components and the user (a local test cluster).
        printf 'extendedKeyUsage=clientAuth\n' >client.ext
        openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr -subj /O=system:masters/CN=admin 2>/dev/null
        openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt -days 30 -extfile client.ext 2>/dev/null
        openssl genrsa -out service-accounts.key 2048 2>/dev/null
        openssl rsa -in service-accounts.key -pubout -out service-accounts.pub 2>/dev/null
        chmod 600 ./*.key
        # Certificates inline: the kubeconfig can be copied anywhere (the project's .privproc/k8s/).
        umask 077
        cat >admin.kubeconfig <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: privproc-local
  cluster: {server: "https://$NODE_IP:6443", certificate-authority-data: "$(base64 -w0 ca.crt)"}
users:
- name: admin
  user: {client-certificate-data: "$(base64 -w0 admin.crt)", client-key-data: "$(base64 -w0 admin.key)"}
contexts:
- name: privproc-local
  context: {cluster: privproc-local, user: admin}
current-context: privproc-local
KUBECONFIG
    )
}

start_containerd() {
    mkdir -p "$STATE/containerd" "$STATE/cni/net.d"
    # restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE, and runc fails on a negative
    # oom_score_adj ("can't get final child's PID from pipe"). The sandbox image is the local pause.
    cat >"$STATE/containerd/config.toml" <<TOML
version = 2
root = "$CONTAINERD_ROOT"
state = "$STATE/containerd/state"
[grpc]
  address = "$CTR_SOCK"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  stream_server_address = "$NODE_IP"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$STATE/containerd/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
TOML
    cat >"$STATE/cni/net.d/10-privproc.conflist" <<JSON
{"cniVersion": "0.4.0", "name": "privproc-pods", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": "$STATE/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}},
  {"type": "loopback"}]}
JSON
    start containerd containerd --config "$STATE/containerd/config.toml"
    wait_for 60 containerd ctr -a "$CTR_SOCK" version
}

# The pod sandbox image: Kubernetes' own pause, built static by install.sh, so no registry is needed.
import_pause() {
    local scratch
    scratch=$(mktemp -d)
    mkdir "$scratch/root"
    install -m 755 "$K8S_BIN/pause" "$scratch/root/pause"
    python3 "$REPO_ROOT/tools/image_archive.py" "$scratch/pause.tar" --ref "$PAUSE_IMAGE" \
        --layer "$scratch/root" --entrypoint '["/pause"]' --user 65535:65535 >/dev/null
    ctr -a "$CTR_SOCK" -n k8s.io images import "$scratch/pause.tar" >/dev/null
    rm -rf "$scratch"
}

start_control_plane() {
    mkdir -p "$STATE/etcd"
    start etcd etcd --data-dir "$STATE/etcd" --name "$NODE_NAME" \
        --listen-client-urls "http://$NODE_IP:2379" --advertise-client-urls "http://$NODE_IP:2379" \
        --listen-peer-urls "http://$NODE_IP:2380" --initial-advertise-peer-urls "http://$NODE_IP:2380" \
        --initial-cluster "$NODE_NAME=http://$NODE_IP:2380"
    wait_for 60 etcd etcdctl --endpoints "http://$NODE_IP:2379" endpoint health
    start kube-apiserver "$K8S_BIN/kube-apiserver" --etcd-servers "http://$NODE_IP:2379" \
        --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port 6443 \
        --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
        --client-ca-file "$PKI/ca.crt" \
        --kubelet-client-certificate "$PKI/admin.crt" --kubelet-client-key "$PKI/admin.key" \
        --kubelet-preferred-address-types InternalIP \
        --service-account-key-file "$PKI/service-accounts.pub" \
        --service-account-signing-key-file "$PKI/service-accounts.key" \
        --service-account-issuer "https://kubernetes.default.svc.$CLUSTER_DNS_DOMAIN" \
        --service-cluster-ip-range "$SERVICE_CIDR" --authorization-mode Node,RBAC \
        --enable-admission-plugins NodeRestriction
    wait_for 120 kube-apiserver "$KUBECTL" get --raw /readyz
    # --port=0: no insecure ports; the secure ones listen on the node IP.
    start kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG" \
        --bind-address "$NODE_IP" --port 0 --leader-elect=false \
        --service-account-private-key-file "$PKI/service-accounts.key" --root-ca-file "$PKI/ca.crt" \
        --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
        --controllers '*,-nodeipam,-cloud-node-lifecycle'
    start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig "$KUBECONFIG" \
        --bind-address "$NODE_IP" --port 0 --leader-elect=false
}

start_node() {
    mkdir -p "$STATE/kubelet"
    cat >"$STATE/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
address: $NODE_IP
healthzBindAddress: $NODE_IP
authentication: {anonymous: {enabled: false}, webhook: {enabled: false}, x509: {clientCAFile: "$PKI/ca.crt"}}
authorization: {mode: AlwaysAllow}
clusterDNS: [$NODE_IP]
clusterDomain: $CLUSTER_DNS_DOMAIN
failSwapOn: false
# A small disk-backed VM: evict only when nearly full, and never garbage-collect the local images
# (nothing could pull them back).
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
YAML
    start kubelet "$K8S_BIN/kubelet" --kubeconfig "$KUBECONFIG" --config "$STATE/kubelet/config.yaml" \
        --root-dir "$STATE/kubelet" --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" \
        --container-runtime remote --container-runtime-endpoint "unix://$CTR_SOCK"
    # NodePorts only on the node IP (never on loopback); conntrack settings left as they are.
    start kube-proxy "$K8S_BIN/kube-proxy" --kubeconfig "$KUBECONFIG" --proxy-mode iptables \
        --cluster-cidr "$POD_CIDR" --hostname-override "$NODE_NAME" --bind-address "$NODE_IP" \
        --nodeport-addresses "$NODE_IP/32" --metrics-bind-address "$NODE_IP:10249" \
        --healthz-bind-address "$NODE_IP:10256" --conntrack-max-per-core 0 \
        --conntrack-tcp-timeout-established 0 --conntrack-tcp-timeout-close-wait 0
}

# The DNS stand-in, in its own virtualenv with the dnslib pinned by pyproject.toml's `k8s` extra.
start_dns() {
    local venv=$CACHE/dns-venv pin
    pin=$(python3 - "$REPO_ROOT/pyproject.toml" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    extra = tomllib.load(f)["project"]["optional-dependencies"]["k8s"]
print(next(spec for spec in extra if spec.startswith("dnslib")))
PY
)
    if ! "$venv/bin/python" -c 'import dnslib' 2>/dev/null || [ "$(cat "$venv/pin" 2>/dev/null)" != "$pin" ]; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet "$pin"
        echo "$pin" >"$venv/pin"
    fi
    start dns-stub "$venv/bin/python" "$LOCAL_DIR/dns_stub.py" "$NODE_IP" "https://$NODE_IP:6443" \
        "$PKI/ca.crt" "$PKI/admin.crt" "$PKI/admin.key"
}

publish_kubeconfig() {
    mkdir -p "$REPO_ROOT/.privproc/k8s"
    install -m 600 "$KUBECONFIG" "$REPO_ROOT/.privproc/k8s/kubeconfig"
}

if [ -d "$LOGS" ] && healthy; then
    say "cluster already up (KUBECONFIG=$REPO_ROOT/.privproc/k8s/kubeconfig)"
    exit 0
fi
if [ -d "$STATE" ]; then
    say "a previous cluster left state in $STATE: tearing it down first"
    "$LOCAL_DIR/cluster-down.sh"
fi
total=$SECONDS
mkdir -p "$LOGS"
step "host network and sysctls" eval 'save_host; host_network'
step "PKI" make_pki
step "containerd" start_containerd
step "pause image" import_pause
step "etcd and control plane" start_control_plane
step "kubelet and kube-proxy" start_node
step "DNS stand-in" start_dns
step "node Ready" wait_for 240 "node $NODE_NAME Ready" node_ready
publish_kubeconfig
"$KUBECTL" get nodes -o wide
say "cluster up: $((SECONDS - total))s (KUBECONFIG=$REPO_ROOT/.privproc/k8s/kubeconfig, logs: $LOGS)"
