#!/usr/bin/env bash
# The store-dependent benchmarks of issue 14 on both backends, one after the
# other in one run on the same machine: RSS and GET /api/agents under wrk
# with 200 agents running (bench_http rss list), a
# full reconcile pass over 200 running agents (reconcile) and POST → RUNNING
# (deploy), first on SQLite, then on a fresh PostgreSQL database
# (scripts/postgres.sh starts the server). Prints the figures recorded in
# BENCHMARKS.md. Needs wrk (apt-get install -y wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "bench-stores: wrk not found (apt-get install -y wrk)" >&2; exit 1; }
scripts/postgres.sh
cargo build --release -p control-plane -p agent-runtime -p zcaas-tests --bins --examples
bin="${CARGO_TARGET_DIR:-target}"/x86_64-unknown-linux-gnu/release/examples
for store in sqlite postgres; do
  echo "=== store: $store ==="
  ZCAAS_TEST_STORE=$store "$bin"/bench_http rss list
  ZCAAS_TEST_STORE=$store "$bin"/bench deploy reconcile
done
