#!/usr/bin/env bash
# Density (issue 16): agents created through the API in waves up to 2 000 (or --agents N), and at
# each checkpoint what each one costs the host (PSS of the agent, its containerd shim, its
# fuse-overlayfs helper and any docker-proxy), zcaas and dockerd RSS and idle CPU, POST → RUNNING
# and the create rate; with the whole fleet: a message to every agent, GET /api/agents under wrk,
# a full reconcile pass, and a control-plane restart until every agent is confirmed RUNNING; then
# everything deleted through the API. Against the local engine and a separate release `zcaas serve`.
# Usage: scripts/bench-density.sh [--agents N] [--checkpoints 100,1000,2000] [--concurrency 8]
#        [--per-user 100] [--idle-secs 60] [--settle-secs 15] [--wrk-secs 20]
#        [--address auto|network|host-port] [--min-available-mib 1536] [--probe 5]
#        [--agents-per-network N]   (default: the product's; small values check the spread)
# Needs wrk and /usr/bin/time (apt-get install -y wrk time). Everything it creates is labelled
# io.zcaas.test=<prefix> and removed at the end, on error and on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "bench-density: wrk not found (apt-get install -y wrk)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench-density: /usr/bin/time not found (apt-get install -y time)" >&2; exit 1; }
cargo build --release -p control-plane -p agent-runtime -p zcaas-tests --bins --examples
# The agents' image is built from the `agent` profile's binary.
cargo build --profile agent -p agent-runtime
# One agent costs the control plane a few descriptors (its HTTP connections); the fleet's
# containers cost dockerd and containerd many more, but those are the daemons' own limits.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "${CARGO_TARGET_DIR:-target}"/x86_64-unknown-linux-gnu/release/examples/bench_density "$@"
