# Test-only stand-in for the official etcd image (gcr.io/etcd-development/etcd): Debian's
# etcd-server and etcd-client on the tests' own base (no registry is reachable where they
# run). The compose file's `ha` profile runs `etcd` (entrypoint) configured by ETCD_*
# variables and checks health with `etcdctl`: both are on PATH here as in the official
# image. Users never need this file.
ARG BASE_IMAGE=localhost/conveyor-base:bookworm
FROM ${BASE_IMAGE}
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server etcd-client \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
    && mkdir -p /etcd-data
VOLUME ["/etcd-data"]
EXPOSE 2379 2380
ENTRYPOINT ["etcd"]
