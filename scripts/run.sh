#!/usr/bin/env bash
# Starts a working zcaas on this machine: builds the static binaries, then runs
# `zcaas serve` with the embedded defaults (SQLite file, master key and JWT
# secret generated in ./data, the agent image built if missing, the network
# created, an admin account printed once, the API on 127.0.0.1:8080).
# Extra arguments go to `zcaas serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p control-plane
cargo build --profile agent -p agent-runtime
target="${CARGO_TARGET_DIR:-target}"/x86_64-unknown-linux-gnu
exec "$target"/release/zcaas serve --agent-binary "$target"/agent/agent-runtime "$@"
