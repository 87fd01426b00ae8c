# Test-only stand-in for the official prom/prometheus image: the Debian package on the
# tests' own base (no registry is reachable where they run). It keeps the official image's
# interface: /usr/bin/prometheus as entrypoint, config under /etc/prometheus, data under
# /prometheus, port 9090, so docker-compose.yml's `command:` applies unchanged.
# Users never need this file.
ARG BASE_IMAGE=localhost/conveyor-base:bookworm
FROM ${BASE_IMAGE}
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus wget \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
    && mkdir -p /prometheus && chown prometheus:prometheus /prometheus
USER prometheus
WORKDIR /prometheus
VOLUME ["/prometheus"]
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
