#!/usr/bin/env bash
# Runs the Swarm backend's deploy benchmark (issue 15): POST → RUNNING on
# the Docker backend, a one-node and a three-node swarm side by side, then
# 50 concurrent creates on the three-node swarm (and on the Docker backend),
# and prints the figures recorded in BENCHMARKS.md. Root only: the swarm
# harness creates network namespaces. Arguments go to the example:
# --runs N (default 10), --max-deploys N, --no-docker-concurrent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "bench-swarm.sh: run as root (the swarm harness creates network namespaces)" >&2
    exit 1
fi
cargo build --profile agent -p agent-runtime
cargo build --release -p zcaas-tests --bins --examples
exec "${CARGO_TARGET_DIR:-target}"/x86_64-unknown-linux-gnu/release/examples/bench_swarm "$@"
