#!/usr/bin/env bash
# Stop the local cluster and give the host back as cluster-up.sh found it: pods and their network
# namespaces, every component process, mounts under the state dir, the iptables rules kube-proxy,
# kubelet and the CNI plugins added, the bridges, kubelet's cgroups, the sysctls, the host paths the
# components created. Safe to run when nothing is up. The cache (binaries, base rootfs) stays.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
need_root

COMPONENTS_LAST_FIRST=(dns-stub kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd)

stop() {
    local pid_file=$LOGS/$1.pid pid
    [ -f "$pid_file" ] || return 0
    pid=$(cat "$pid_file")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null && say "$1 did not stop within 10s of SIGTERM: killed"
    fi
    rm -f "$pid_file"
}

drain_pods() {
    # Let kubelet stop the pods itself: it runs the CNI teardown and unmounts their volumes.
    "$KUBECTL" get --raw /readyz >/dev/null 2>&1 || return 0
    for namespace in $("$KUBECTL" get namespaces -o name 2>/dev/null | cut -d/ -f2); do
        case $namespace in default | kube-system | kube-public | kube-node-lease) ;;
        *) "$KUBECTL" delete namespace "$namespace" --wait=false >/dev/null 2>&1 ;;
        esac
    done
    "$KUBECTL" delete deployments,statefulsets,daemonsets,replicasets,jobs,pods --all --all-namespaces \
        --grace-period=1 --wait=false >/dev/null 2>&1
    for _ in $(seq 60); do
        [ -z "$("$KUBECTL" get pods --all-namespaces -o name 2>/dev/null)" ] && break
        sleep 1
    done
}

stop_components() {
    # All at once (the pods are gone, so the order no longer matters), then wait for each.
    for component in "${COMPONENTS_LAST_FIRST[@]}"; do
        [ -f "$LOGS/$component.pid" ] && kill "$(cat "$LOGS/$component.pid")" 2>/dev/null
    done
    for component in "${COMPONENTS_LAST_FIRST[@]}"; do stop "$component"; done
}

stop_containers() {
    local ctr=(ctr -a "$CTR_SOCK" -n k8s.io) shim_pid_file
    if [ -S "$CTR_SOCK" ]; then
        for task in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks kill -s SIGKILL "$task" >/dev/null 2>&1; done
        sleep 1
        for task in $("${ctr[@]}" tasks ls -q 2>/dev/null); do "${ctr[@]}" tasks rm -f "$task" >/dev/null 2>&1; done
        for container in $("${ctr[@]}" containers ls -q 2>/dev/null); do "${ctr[@]}" containers rm "$container" >/dev/null 2>&1; done
    fi
    stop containerd
    # Shims outlive containerd by design: end this containerd's, by the pids they recorded.
    for shim_pid_file in "$STATE"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
        [ -f "$shim_pid_file" ] && kill -9 "$(cat "$shim_pid_file")" 2>/dev/null
    done
}

unmount_state() {
    local mounts
    mounts=$(awk -v state="$STATE" -v root="$CONTAINERD_ROOT" 'index($2, state) == 1 || index($2, root) == 1 {print $2}' /proc/mounts | sort -r)
    for mount in $mounts; do umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null; done
    for netns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns delete "$netns"; done
}

restore_network() {
    # Only the rules and chains the cluster added (KUBE-*, CNI-*); other rules on the host stay.
    # (kube-proxy --cleanup would do this too, but it needs ipset, which is not installed.)
    local table
    for table in iptables ip6tables; do
        command -v "$table-save" >/dev/null || continue
        if "$table-save" | grep -q -E 'KUBE-|CNI-'; then
            "$table-save" | grep -v -E 'KUBE-|CNI-' | "$table-restore"
        fi
    done
    # Tables the cluster brought into being, now empty: gone too (nf_tables backend; needs nft).
    if [ -f "$STATE/host/iptables-tables" ] && command -v nft >/dev/null && iptables -V | grep -q nf_tables; then
        for table in $(iptables-save | awk '/^\*/ {print substr($0, 2)}'); do
            grep -qx "$table" "$STATE/host/iptables-tables" && continue
            iptables-save -t "$table" | grep -q '^-A' || nft delete table ip "$table" 2>/dev/null
        done
    fi
    ip link delete cni0 2>/dev/null
    ip link delete "$NODE_LINK" 2>/dev/null
}

remove_cgroups() {
    # kubelet's QoS cgroups (cgroupfs driver); empty once the pods are gone.
    local hierarchy
    for hierarchy in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
        [ -d "$hierarchy" ] && find "$hierarchy" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    return 0
}

restore_host() {
    local saved=$STATE/host/sysctl.saved
    if [ -f "$saved" ]; then
        while IFS= read -r setting; do sysctl -qw "$setting" >/dev/null 2>&1 || say "could not restore $setting"; done <"$saved"
    fi
    if [ -f "$STATE/host/created-paths" ]; then
        while IFS= read -r path; do [ -n "$path" ] && rm -rf "$path"; done <"$STATE/host/created-paths"
    fi
    rm -rf "$STATE"
    rm -f "$REPO_ROOT/.privproc/k8s/kubeconfig"
}

if [ ! -d "$STATE" ]; then
    say "no cluster state in $STATE: nothing to stop"
    exit 0
fi
total=$SECONDS
step "drain pods" drain_pods
step "stop components" stop_components
step "stop containers and containerd" stop_containers
step "unmount" unmount_state
step "iptables and links" restore_network
step "cgroups" remove_cgroups
step "sysctls, host paths, state dir" restore_host
say "cluster down: $((SECONDS - total))s"
