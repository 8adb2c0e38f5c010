#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this script).
# Needs: the Rust toolchain, a running Docker Engine (no registry access), and
# Debian's chromium + chromium-driver for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# The browser tests need Debian's chromium and chromedriver (.ci/run
# installs them); say so now rather than after the build.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "scripts/test.sh: the browser tests need chromium and chromedriver:" >&2
  echo "  apt-get install -y chromium chromium-driver   (.ci/run does this)" >&2
  exit 1
fi

# The production stack must stay valid: docker-compose resolves
# deploy/docker-compose.yml with the example environment (nothing is pulled
# or started; .ci/run installs docker-compose when missing).
if ! command -v docker-compose >/dev/null; then
  echo "scripts/test.sh: validating deploy/docker-compose.yml needs docker-compose:" >&2
  echo "  apt-get install -y docker-compose   (.ci/run does this)" >&2
  exit 1
fi
docker-compose -f deploy/docker-compose.yml --env-file deploy/.env.example config -q
echo "deploy/docker-compose.yml: valid" >&2

# Style gates first: they are cheap and fail fast.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

# The end-to-end tests deploy the real agent-runtime image, built from the
# static release binary.
cargo build --release -p agent-runtime

status=0
cargo test --workspace --all-targets || status=$?

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
exit $status
