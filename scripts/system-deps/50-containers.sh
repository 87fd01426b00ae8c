#!/usr/bin/env bash
# Podman and friends, for tests/deploy (the container image and the docker-compose cluster,
# run through podman because no Docker engine runs here): podman, buildah, debootstrap (the
# tests build their own base image from the Debian mirror apt uses, since no container
# registry is reachable), uidmap, slirp4netns, fuse-overlayfs, the CNI plugins with
# dnsname (containers find each other by service name), runc (the default crun fails
# here), catatonit (what `init: true` / `--init` runs as PID 1) and Debian's
# docker-compose v1 (it talks to podman's Docker-compatible API socket).
# Idempotent: exits at once when every command is on PATH. Without root or apt it says why
# and exits 0; the container test then skips with that reason.
set -euo pipefail

commands=(podman buildah debootstrap runc docker-compose slirp4netns fuse-overlayfs newuidmap)
missing=()
for command in "${commands[@]}"; do
    command -v "$command" >/dev/null 2>&1 || missing+=("$command")
done
# CNI plugins and catatonit are not commands on PATH.
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
[ -x /usr/lib/cni/dnsname ] || missing+=(dnsname)
[ -x /usr/bin/catatonit ] || [ -x /usr/libexec/podman/catatonit ] || missing+=(catatonit)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: podman & co not installed (needs root for apt-get; missing: ${missing[*]});" \
        "the container deployment test will skip"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: podman & co not installed (no apt-get here); the container deployment" \
        "test will skip"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
packages=(podman buildah debootstrap uidmap slirp4netns fuse-overlayfs
    containernetworking-plugins golang-github-containernetworking-plugin-dnsname runc
    catatonit docker-compose)
if ! apt-cache show podman >/dev/null 2>&1; then
    apt-get update -qq || true
fi
if ! apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; then
    apt-get update -qq || true
    if ! apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; then
        echo "system-deps: apt-get install ${packages[*]} failed; the container deployment" \
            "test will skip"
        exit 0
    fi
fi
echo "system-deps: installed $(podman --version) and $(docker-compose version --short 2>/dev/null)"
