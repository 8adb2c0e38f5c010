#!/usr/bin/env bash
# Builds the stock upstream ZeroClaw runtime as a FROM-scratch image, for the test tier that
# drives it (tests/tests/stock_runtime.rs) and for the side-by-side benchmarks.
#
# Usage: scripts/build-stock-zeroclaw-image.sh [VERSION]   (default 0.6.9, the newest release
#        of `zeroclawlabs` in cargo's registry). Prints the image tag on its last line:
#        zcaas/zeroclaw-stock:<VERSION>.
#
# The binary is `cargo install zeroclawlabs --version VERSION --locked`, linked statically
# (crt-static, like our own runtime) and built ONCE per machine and version: it is cached outside
# the work tree in ${ZCAAS_STOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/zcaas/zeroclaw-stock}/VERSION.
# Nothing of upstream's code or binary is ever written into the repository.
#
# Build profile: upstream's release profile is opt-level "z" with fat LTO and one codegen unit
# (tens of minutes on two cores). The test tier needs upstream's behaviour, not its size, so the
# profile is overridden to opt-level 1, no LTO, 16 codegen units, and the default features (Lark
# channel, Prometheus exporter) are left out: Telegram, Discord and Slack are always compiled in.
#
# The image reproduces the release stage of upstream's Dockerfile: /usr/local/bin/zeroclaw,
# /zeroclaw-data/{.zeroclaw/config.toml,workspace} owned by 65534, the same ENV, WORKDIR, USER,
# EXPOSE, ENTRYPOINT ["zeroclaw"] and CMD ["gateway"], and the same minimal baked config. It
# carries org.opencontainers.image.version=VERSION, which is what the control plane reads to
# choose the runtime profile (zeroclaw-v1 below 0.8), and our ownership label.
set -euo pipefail

VERSION="${1:-0.6.9}"
TAG="zcaas/zeroclaw-stock:${VERSION}"
CACHE="${ZCAAS_STOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/zcaas/zeroclaw-stock}/${VERSION}"
BIN="$CACHE/root/bin/zeroclaw"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

# Run from `cargo test`, cargo's per-crate variables leak in; drop them (see
# build-agent-image.sh), and never build into the caller's target directory.
for name in $(compgen -e); do
    case "$name" in
        CARGO_PKG_*|CARGO_MANIFEST_*|CARGO_CRATE_*|CARGO_BIN_*|CARGO_CFG_*|CARGO_PRIMARY_PACKAGE|CARGO_TARGET_TMPDIR|OUT_DIR|CARGO_TARGET_DIR|RUSTFLAGS|CARGO_ENCODED_RUSTFLAGS|CARGO_BUILD_TARGET)
            unset "$name" ;;
    esac
done

if [ ! -x "$BIN" ]; then
    mkdir -p "$CACHE"
    # One builder at a time per version (two test binaries may ask at once).
    exec 9>"$CACHE/.lock"
    flock 9
    if [ ! -x "$BIN" ]; then
        command -v cc >/dev/null || { echo "build-stock-zeroclaw-image: a C compiler (cc) is needed" >&2; exit 1; }
        echo "building zeroclawlabs $VERSION (once per machine; cached in $CACHE)" >&2
        started=$(date +%s)
        # cd out of any workspace so its .cargo/config.toml does not apply.
        (cd "$CACHE" && \
            CARGO_TARGET_DIR="$CACHE/target" \
            RUSTFLAGS="-C target-feature=+crt-static" \
            CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
            CARGO_PROFILE_RELEASE_LTO=off \
            CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
            CARGO_PROFILE_RELEASE_DEBUG=0 \
            CARGO_PROFILE_RELEASE_INCREMENTAL=false \
            cargo install zeroclawlabs --version "=$VERSION" --locked --no-default-features \
                --target x86_64-unknown-linux-gnu --root "$CACHE/root" --quiet)
        echo "$(( $(date +%s) - started ))" > "$CACHE/build-seconds"
        echo "built zeroclawlabs $VERSION in $(cat "$CACHE/build-seconds") s" >&2
        # The intermediate objects are not needed again: keep the binary only.
        rm -rf "$CACHE/target"
    fi
    exec 9>&-
fi

# The image: rebuilt only when missing or built from another binary.
digest=$(sha256sum "$BIN" | cut -c1-64)
if [ "$(docker image inspect -f '{{ index .Config.Labels "io.zcaas.stock-binary" }}' "$TAG" 2>/dev/null)" != "$digest" ]; then
    [ -r "$CA_BUNDLE" ] || { echo "build-stock-zeroclaw-image: CA bundle $CA_BUNDLE not readable" >&2; exit 1; }
    CTX="$(mktemp -d)"
    trap 'rm -rf "$CTX"' EXIT
    install -m 0755 "$BIN" "$CTX/zeroclaw"
    install -m 0644 "$CA_BUNDLE" "$CTX/ca-certificates.crt"
    mkdir -p "$CTX/zeroclaw-data/.zeroclaw" "$CTX/zeroclaw-data/workspace"
    # Upstream's baked config, as its Dockerfile prints it.
    printf '%s\n' \
        'workspace_dir = "/zeroclaw-data/workspace"' \
        'config_path = "/zeroclaw-data/.zeroclaw/config.toml"' \
        'api_key = ""' \
        'default_provider = "openrouter"' \
        'default_model = "anthropic/claude-sonnet-4-20250514"' \
        'default_temperature = 0.7' \
        '' \
        '[gateway]' \
        'port = 42617' \
        'host = "[::]"' \
        'allow_public_bind = true' \
        > "$CTX/zeroclaw-data/.zeroclaw/config.toml"
    cat > "$CTX/Dockerfile" <<EOF
FROM scratch
COPY zeroclaw /usr/local/bin/zeroclaw
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --chown=65534:65534 zeroclaw-data /zeroclaw-data
ENV LANG=C.UTF-8
ENV ZEROCLAW_WORKSPACE=/zeroclaw-data/workspace
ENV HOME=/zeroclaw-data
ENV ZEROCLAW_GATEWAY_PORT=42617
WORKDIR /zeroclaw-data
USER 65534:65534
EXPOSE 42617
LABEL org.opencontainers.image.title="zeroclaw (stock upstream, built by zcaas for tests)"
LABEL org.opencontainers.image.version="$VERSION"
LABEL io.zcaas.stock-binary="$digest"
ENTRYPOINT ["zeroclaw"]
CMD ["gateway"]
EOF
    DOCKER_BUILDKIT=0 docker build --quiet -t "$TAG" --label io.zcaas.managed=true "$CTX" >/dev/null
fi
echo "$TAG"
