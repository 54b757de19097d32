# restik: the controller (`restik run`) and the sidecar (`restik watch`) in one image,
# with restic, running as the non-root user restik (65532:65532).
#
#   ../shared/tools/build-image.sh -t restik:dev . -- restik --version    (or: make image)
#   docker build -t restik:dev .
#
# Two stages: `build` installs the project into a virtualenv at /opt/restik; the final
# stage copies that venv next to the same Debian python3, so no compiler, pip cache or
# build tools end up in the image.

ARG VERSION=0.1.0
# The base of both stages. Where a registry is used, pin it by digest, so a rebuild gets
# the same bytes whatever the tag points to by then:
#   docker build --build-arg BASE_IMAGE=docker.io/library/debian:trixie-slim@sha256:<digest> .
# (`docker buildx imagetools inspect debian:trixie-slim` prints the digest). The default is
# the tag, which the registry-less build (../shared/tools/build-image.sh) bootstraps itself.
ARG BASE_IMAGE=debian:trixie-slim

FROM ${BASE_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/restik/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/restik \
 && pip install --no-cache-dir setuptools wheel
WORKDIR /src
# Dependencies first, from the hash-pinned lock alone (requirements.lock, generated from
# setup.cfg's install_requires: see its header): every file pip installs must match a hash
# in the lock, wheels only, so no package's build code runs here. This layer is reused
# until the lock changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements.lock
# Then the project itself (see .dockerignore for what is sent); the build tools and pip
# go again, the image never installs anything at run time.
COPY . .
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
 && python3 -m pip uninstall -y setuptools wheel pip

FROM ${BASE_IMAGE}
ARG VERSION
LABEL org.opencontainers.image.title="restik" \
      org.opencontainers.image.description="Backs up the volumes of Kubernetes workloads with restic: a controller adds a restic sidecar to labeled workloads" \
      org.opencontainers.image.source="https://github.com/restik/restik" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
# python3: the same interpreter path as in the build stage, so the venv works as copied.
# restic: what the sidecar runs. ca-certificates: TLS to S3/REST/... repositories.
# tini: PID 1 that forwards signals and reaps restic's children.
# restik-entrypoint: runs `restik ARGS`, and accepts a leading `restik` too
# (`podman run IMAGE restik --version` as well as `podman run IMAGE --version`).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 restic ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log \
 && printf '%s\n' '#!/bin/sh' \
        '# `IMAGE restik ARGS...` means the same as `IMAGE ARGS...`, so both spellings work.' \
        'if [ "$1" = restik ]; then shift; fi' \
        'exec /opt/restik/bin/restik "$@"' > /usr/local/bin/restik-entrypoint \
 && chmod 0755 /usr/local/bin/restik-entrypoint \
 && groupadd --system --gid 65532 restik \
 && useradd --system --uid 65532 --gid 65532 --home-dir /home/restik --create-home \
        --shell /usr/sbin/nologin restik
COPY --from=build /opt/restik /opt/restik
ENV PATH=/opt/restik/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 65532:65532
WORKDIR /home/restik
ENTRYPOINT ["tini", "--", "restik-entrypoint"]
CMD ["--help"]
