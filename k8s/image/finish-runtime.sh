#!/bin/sh
# The image's run stage, after Debian's python3 is installed: the unprivileged user the services run
# as, no package-manager leftovers, and no shell (nothing at run time needs one: the entry point and
# the probes are exec-form; an exec into a running pod finds no shell to start). Run by the
# Dockerfile and, inside a Debian chroot, by k8s/local/build-image.sh. Must be the last step.
set -eu
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:?set SOURCE_DATE_EPOCH}"   # useradd dates /etc/shadow with it
groupadd --system --gid 10001 privproc
useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
    --shell /usr/sbin/nologin privproc
rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old /var/lib/dpkg/*-old \
    /var/log/* /tmp/* /root/.cache
rm -f /etc/machine-id /var/cache/ldconfig/aux-cache
# Last: this script's own interpreter goes (it is already loaded).
rm -f /usr/bin/sh /usr/bin/dash /usr/bin/bash /usr/bin/rbash /bin/sh /bin/dash /bin/bash /bin/rbash
