#!/usr/bin/env bash
# The control plane's HTTP benchmarks (DESIGN.md §3, issue 7): GET /api/agents under wrk,
# message-proxy overhead vs calling the agent directly, and zcaas's RSS with 200 agents.
# Against the local engine and a separate release `zcaas serve`; prints the figures recorded
# in BENCHMARKS.md. Usage: scripts/bench-http.sh [rss] [list] [proxy]   (default: all)
# Needs wrk (apt-get install -y wrk). Everything it creates is labelled io.zcaas.test=<prefix>
# and removed at the end, on error and on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "bench-http: wrk not found (apt-get install -y wrk)" >&2; exit 1; }
cargo build --release -p control-plane -p agent-runtime -p zcaas-tests --bins --examples
exec "${CARGO_TARGET_DIR:-target}"/x86_64-unknown-linux-gnu/release/examples/bench_http "$@"
