#!/usr/bin/env bash
# Builds the agent-runtime image: FROM scratch, static binary, CA bundle, /zeroclaw-data owned
# by 65534:65534. Usage: scripts/build-agent-image.sh [TAG]   (default zcaas/agent-runtime:latest)
#
# Uses the legacy builder (no buildx, no registry access): the context is assembled in a temp
# directory with exactly the layout agent-runtime/Dockerfile documents.
set -euo pipefail

TAG="${1:-zcaas/agent-runtime:latest}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

# Run from `cargo test`, cargo's per-crate variables leak in; some build scripts (ring) rerun
# when they change, which would rebuild half the tree each time. Drop them.
for name in $(compgen -e); do
    case "$name" in
        CARGO_PKG_*|CARGO_MANIFEST_*|CARGO_CRATE_*|CARGO_BIN_*|CARGO_CFG_*|CARGO_PRIMARY_PACKAGE|CARGO_TARGET_TMPDIR|OUT_DIR)
            unset "$name" ;;
    esac
done

cd "$ROOT"
cargo build --profile agent -p agent-runtime
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-gnu/agent/agent-runtime"
[ -x "$BIN" ] || { echo "build-agent-image: $BIN not found" >&2; exit 1; }
[ -r "$CA_BUNDLE" ] || { echo "build-agent-image: CA bundle $CA_BUNDLE not readable" >&2; exit 1; }

CTX="$(mktemp -d)"
trap 'rm -rf "$CTX"' EXIT
install -m 0755 "$BIN" "$CTX/agent-runtime"
install -m 0644 "$CA_BUNDLE" "$CTX/ca-certificates.crt"
# Owned by 65534 in the context too; the Dockerfile's COPY --chown makes it so in the image
# whoever runs this script.
for d in zeroclaw-data zeroclaw-data/.zeroclaw zeroclaw-data/workspace; do
    install -d -m 0755 -o 65534 -g 65534 "$CTX/$d" 2>/dev/null || install -d -m 0755 "$CTX/$d"
done
install -m 0644 "$ROOT/agent-runtime/Dockerfile" "$CTX/Dockerfile"

DOCKER_BUILDKIT=0 docker build --quiet -t "$TAG" --label io.zcaas.managed=true "$CTX" >/dev/null
echo "built $TAG ($(docker image inspect -f '{{.Size}}' "$TAG") bytes)"
