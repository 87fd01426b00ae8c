# syntax=docker/dockerfile:1
# One image for every Conveyor role: the command picks it.
#
#   docker build -t conveyor .
#   docker run --init -p 7700:7700 -v coordinator:/data conveyor coordinator
#   docker run --init -e CONVEYOR_LISTEN=0.0.0.0:7701 -e CONVEYOR_ID=1 \
#       -e CONVEYOR_ADVERTISED_URL=http://HOST:7701 -e CONVEYOR_URL=http://HOST:7700 \
#       -p 7701:7701 -v broker-1:/data conveyor broker
#   docker run --rm -e CONVEYOR_URL=http://HOST:7700 conveyor produce orders hello
#
# Run with --init (compose: `init: true`) so a tiny init reaps zombies and forwards
# signals; conveyor itself also stops cleanly on SIGTERM as PID 1.
#
# BASE_IMAGE must be Debian-like with python3 >= 3.11 and its venv module: the official
# slim image by default; the container tests pass a base built with debootstrap because
# no registry is reachable on their machines. Everything refers to `python3`, which
# both provide.
ARG BASE_IMAGE=python:3.11-slim

# ---- stage 1: build the wheel (the same artifact CI publishes) -------------------------
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/build/bin/pip wheel --no-deps --wheel-dir /dist .

# ---- stage 2: install it for a non-root user ------------------------------------------
# With the server and cli extras: the image runs every role (`pip install conveyor-mq`
# alone is the client library).
FROM ${BASE_IMAGE} AS runtime
# Build metadata for the labels, passed by the pipelines (the version itself lives only in
# src/conveyor/_version.py; `conveyor --version` in the image always reports it).
ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="conveyor" \
      org.opencontainers.image.description="Conveyor: a partitioned, replicated message queue (coordinator, broker and client in one image)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/conveyor-mq/conveyor" \
      org.opencontainers.image.documentation="https://github.com/conveyor-mq/conveyor/blob/main/docs/deployment.md"

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /dist/ /tmp/wheels/
RUN python3 -m venv /opt/conveyor \
    && /opt/conveyor/bin/pip install "$(ls /tmp/wheels/*.whl)[server,cli]" \
    && rm -rf /tmp/wheels \
    && groupadd --system --gid 10001 conveyor \
    && useradd --system --uid 10001 --gid conveyor --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin conveyor \
    && mkdir -p /data \
    && chown conveyor:conveyor /data

# Every option of every subcommand also comes from CONVEYOR_<OPTION>; these defaults suit a
# container (listen on all interfaces, data on the volume). Brokers override the port. A
# broker's Kafka listener (on by default; Conveyor's clients speak Kafka to brokers) gets a
# fixed port here to publish; clients outside need CONVEYOR_KAFKA_ADVERTISE (deployment.md).
ENV PATH=/opt/conveyor/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONVEYOR_LISTEN=0.0.0.0:7700 \
    CONVEYOR_KAFKA_LISTEN=0.0.0.0:9092 \
    CONVEYOR_DATA=/data

USER conveyor:conveyor
WORKDIR /data
VOLUME ["/data"]
EXPOSE 7700 7701 9092

# Probes the port of CONVEYOR_LISTEN (so set the address by environment, not --listen),
# over HTTPS when a certificate is configured. It checks that this very process answers,
# so it does not verify the certificate (the name would be 127.0.0.1, not the service's).
# A client-role container (produce/consume) serves nothing: disable the check there.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, ssl, urllib.request as r; port = os.environ.get('CONVEYOR_LISTEN', ':7700').rpartition(':')[2]; scheme = 'https' if os.environ.get('CONVEYOR_TLS_CERT') else 'http'; r.urlopen(f'{scheme}://127.0.0.1:{port}/healthz', timeout=4, context=ssl._create_unverified_context())"]

ENTRYPOINT ["conveyor"]
CMD ["--help"]
