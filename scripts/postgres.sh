#!/usr/bin/env bash
# PostgreSQL for the tests (.ci/run calls this before scripts/test.sh).
# Idempotent: makes sure a server answers on 127.0.0.1:${ZCAAS_PG_PORT:-5432}
# with a role zcaas (password zcaas) that may CREATEDB; the tests create and
# drop one database per test, named zcaas_t_<uuid>.
#
# - No PostgreSQL server binaries: installs Debian's postgresql package.
# - Nothing answers on the port: starts a private, throw-away cluster owned
#   by this script in ${ZCAAS_PG_DIR:-/tmp/zcaas-pg} (initdb on first use),
#   run as the postgres OS user, tuned for tests (fsync off, no synchronous
#   commit, 300 connections). Stop it with:
#     runuser -u postgres -- <bindir>/pg_ctl -D /tmp/zcaas-pg/data stop
# - Something answers already: only makes sure the zcaas role exists (through
#   our cluster's socket, or the postgres superuser's peer login).
set -euo pipefail

port=${ZCAAS_PG_PORT:-5432}
dir=${ZCAAS_PG_DIR:-/tmp/zcaas-pg}
data="$dir/data"

say() { echo "scripts/postgres.sh: $*" >&2; }
die() {
  say "error: $*"
  exit 1
}

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# The newest PostgreSQL server binaries installed (Debian layout).
bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ]; then
      echo "$d"
      return 0
    fi
  done
  return 1
}

bin=$(bindir) || {
  say "no PostgreSQL server binaries: installing Debian's postgresql package"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
    die "apt-get update failed"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null ||
    die "apt-get install postgresql failed"
  bin=$(bindir) || die "postgresql installed, but no server binaries under /usr/lib/postgresql/*/bin"
}
say "using $("$bin/postgres" --version) ($bin)"

# Runs a command as the postgres OS user (PostgreSQL refuses to run as root).
as_postgres() {
  if [ "$(id -un)" = postgres ]; then
    "$@"
  elif command -v runuser >/dev/null && [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    $sudo -u postgres -- "$@"
  fi
}
id postgres >/dev/null 2>&1 ||
  die "no postgres OS user (Debian's postgresql package creates it)"

ready() { "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; }

# Whether our role can log in over TCP and create databases.
role_ok() {
  [ "$(PGPASSWORD=zcaas PGCONNECT_TIMEOUT=5 "$bin/psql" -h 127.0.0.1 -p "$port" -U zcaas \
    -d postgres -XtAc 'SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user' \
    2>/dev/null)" = t ]
}

ensure_role_sql="DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'zcaas') THEN
    CREATE ROLE zcaas LOGIN CREATEDB PASSWORD 'zcaas';
  ELSE
    ALTER ROLE zcaas LOGIN CREATEDB PASSWORD 'zcaas';
  END IF;
END \$\$;"

if ready; then
  if role_ok; then
    say "a server already answers on 127.0.0.1:$port with role zcaas: nothing to do"
    exit 0
  fi
  say "a server answers on 127.0.0.1:$port; creating role zcaas"
  # Ours (socket in $dir), else a system cluster (default socket, peer login).
  if [ -S "$dir/.s.PGSQL.$port" ]; then
    as_postgres "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -Xq \
      -v ON_ERROR_STOP=1 -c "$ensure_role_sql" || die "creating role zcaas failed"
  else
    as_postgres "$bin/psql" -p "$port" -d postgres -Xq -v ON_ERROR_STOP=1 \
      -c "$ensure_role_sql" ||
      die "creating role zcaas on the server at 127.0.0.1:$port failed (not ours: create it by hand)"
  fi
  role_ok || die "role zcaas still cannot log in over TCP on 127.0.0.1:$port (pg_hba.conf?)"
  say "role zcaas ready on 127.0.0.1:$port"
  exit 0
fi

# Our private cluster.
if [ ! -f "$data/PG_VERSION" ]; then
  say "creating a test cluster in $data"
  $sudo mkdir -p "$dir"
  $sudo chown postgres: "$dir"
  $sudo chmod 700 "$dir"
  pwfile=$(as_postgres mktemp "$dir/pw.XXXXXX")
  echo postgres | as_postgres tee "$pwfile" >/dev/null
  as_postgres "$bin/initdb" -D "$data" -U postgres --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2
    die "initdb failed"
  }
  as_postgres rm -f "$pwfile"
  as_postgres tee -a "$data/postgresql.conf" >/dev/null <<EOF

# scripts/postgres.sh: a throw-away cluster for the tests.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
log_checkpoints = off
# A test drops its database WITH (FORCE) while a pool may still be opening a
# connection to it; a backend still authenticating cannot be terminated and
# the drop waits for it: keep that wait short (default 60 s).
authentication_timeout = 5s
EOF
fi
want=$("$bin/postgres" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)*.*/\1/')
have=$(cat "$data/PG_VERSION")
[ "$have" = "$want" ] ||
  die "$data holds a PostgreSQL $have cluster, the binaries are $want: remove $dir to start afresh"

say "starting the test cluster in $data on 127.0.0.1:$port"
as_postgres "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -o "-p $port" -w -t 60 start >/dev/null || {
  tail -n 30 "$dir/server.log" >&2 || true
  die "the server did not start (log: $dir/server.log)"
}
ready || die "the server started but does not answer on 127.0.0.1:$port"
as_postgres "$bin/psql" -h "$dir" -p "$port" -U postgres -d postgres -Xq -v ON_ERROR_STOP=1 \
  -c "$ensure_role_sql" || die "creating role zcaas failed"
role_ok || die "role zcaas cannot log in over TCP on 127.0.0.1:$port"
say "PostgreSQL ready on 127.0.0.1:$port (role zcaas, cluster $data)"
