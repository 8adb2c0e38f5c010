#!/usr/bin/env bash
# Builds the control-plane image from the static release binaries (deploy/Dockerfile.control-plane):
# FROM scratch, zcaas and agent-runtime, the host's CA bundle, /data owned by 65532:65532.
# Usage: scripts/build-control-plane-image.sh [TAG]   (default zcaas/control-plane:latest)
#
# ZCAAS_BINARY / AGENT_BINARY: use these static binaries instead of building the release ones
# (tests/tests/compose_stack.rs passes the test profile's, which the test run built anyway).
#
# The legacy builder (DOCKER_BUILDKIT=0; no buildx, no registry): the context is assembled in a
# temporary directory with exactly the layout the Dockerfile documents.
set -euo pipefail

TAG="${1:-zcaas/control-plane:latest}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
APP_UID=65532

# Run from `cargo test`, cargo's per-crate variables leak in and make some build scripts rerun.
for name in $(compgen -e); do
    case "$name" in
        CARGO_PKG_*|CARGO_MANIFEST_*|CARGO_CRATE_*|CARGO_BIN_*|CARGO_CFG_*|CARGO_PRIMARY_PACKAGE|CARGO_TARGET_TMPDIR|OUT_DIR)
            unset "$name" ;;
    esac
done

cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-gnu"
if [ -n "${ZCAAS_BINARY:-}" ]; then
    ZCAAS_BIN="$ZCAAS_BINARY"
else
    cargo build --release -p control-plane
    ZCAAS_BIN="$TARGET/release/zcaas"
fi
if [ -n "${AGENT_BINARY:-}" ]; then
    AGENT_BIN="$AGENT_BINARY"
else
    cargo build --profile agent -p agent-runtime
    AGENT_BIN="$TARGET/agent/agent-runtime"
fi
for bin in "$ZCAAS_BIN" "$AGENT_BIN"; do
    [ -x "$bin" ] || { echo "build-control-plane-image: $bin not found" >&2; exit 1; }
done
[ -r "$CA_BUNDLE" ] || { echo "build-control-plane-image: CA bundle $CA_BUNDLE not readable" >&2; exit 1; }

CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT
install -m 0755 "$ZCAAS_BIN" "$CTX/zcaas"
install -m 0755 "$AGENT_BIN" "$CTX/agent-runtime"
install -m 0644 "$CA_BUNDLE" "$CTX/ca-certificates.crt"
install -d -m 0700 "$CTX/data" "$CTX/tmp"
install -m 0644 "$ROOT/deploy/Dockerfile.control-plane" "$CTX/Dockerfile"

# No io.zcaas.managed label here: see the Dockerfile's last note.
DOCKER_BUILDKIT=0 docker build --quiet -t "$TAG" \
    --label "org.opencontainers.image.title=zcaas control plane" \
    --label "org.opencontainers.image.revision=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)" \
    "$CTX" >/dev/null
echo "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG") bytes, user $APP_UID)"
