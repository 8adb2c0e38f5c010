#!/usr/bin/env bash
# Runs the control-plane benchmarks of DESIGN.md §3 against the local engine
# and prints the figures recorded in BENCHMARKS.md. Arguments select parts:
# deploy pipeline concurrent repair reconcile (default: all), and stock (only
# when named: our runtime vs the stock upstream image, built once per machine).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --profile agent -p agent-runtime
cargo build --release -p zcaas-tests --bins --examples
exec "${CARGO_TARGET_DIR:-target}"/x86_64-unknown-linux-gnu/release/examples/bench "$@"
