#!/usr/bin/env bash
# The HA takeover benchmark (issue 14): two replicas on one PostgreSQL
# database, the leader SIGKILLed repeatedly; prints the figures recorded in
# BENCHMARKS.md. Usage: scripts/bench-ha.sh [ROUNDS]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/postgres.sh
cargo build --release -p control-plane -p agent-runtime -p zcaas-tests --bins --examples
exec "${CARGO_TARGET_DIR:-target}"/x86_64-unknown-linux-gnu/release/examples/bench_ha "$@"
