#!/bin/sh
# The image's build stage: the service virtualenv at /opt/privproc, from hash-pinned wheels only.
# Run by the Dockerfile and, inside a Debian chroot, by k8s/local/build-image.sh: one list of steps.
# usage: install-venv.sh SOURCE_DIR WHEEL_DIR   (SOURCE_DIR holds pyproject.toml, services/, requirements/)
#
# Reproducible: SOURCE_DATE_EPOCH makes Python write hash-checked .pyc files (no source mtimes in
# them), PYTHONHASHSEED fixes set ordering in marshalled code, and --isolated keeps the caller's
# pip settings out. pip itself runs from Debian's wheel and stays out of the image.
set -eu
src=$1
wheels=$2
: "${SOURCE_DATE_EPOCH:?set SOURCE_DATE_EPOCH (the image build pins it)}"
export SOURCE_DATE_EPOCH PYTHONHASHSEED=0 LC_ALL=C.UTF-8

set -- /usr/share/python-wheels/pip-*.whl
pip_wheel=$1
[ -f "$pip_wheel" ] || { echo "no pip wheel in /usr/share/python-wheels (install python3-venv)" >&2; exit 1; }
pip() { /opt/privproc/bin/python "$pip_wheel/pip" --isolated --disable-pip-version-check --no-cache-dir "$@"; }

python3 -m venv --without-pip /opt/privproc
# The lock is complete (every dependency pinned with its hashes), so nothing is resolved here.
pip install --no-index --find-links "$wheels" --only-binary :all: --require-hashes --no-deps \
    -r "$src/requirements/runtime.txt" -r "$src/requirements/models.txt"
pip install --no-index --no-deps --no-build-isolation "$src"
