#!/usr/bin/env bash
# Starts the engines the PostgreSQL store and the cluster run on, when they
# are not running: PostgreSQL (Debian's cluster, as its `postgres` user, the
# way `pg_ctlcluster` does; PostgreSQL refuses to run as root) and
# `nats-server` with JetStream. Safe to run again: what runs is left alone.
# setup.sh installs the packages and then runs this; it installs nothing.
#
# What the tests then find (override with the variables):
#   PostgreSQL  postgres://babel:babel@127.0.0.1:5432/babel   BABEL_TEST_POSTGRES
#               (a `babel` role, password `babel`, that may create
#               databases, owning a `babel` database; each test makes its
#               own schema in it)
#   NATS        nats://127.0.0.1:4222                          BABEL_NATS_PORT
#               (JetStream on, its files and log under /tmp/babel-nats)
set -euo pipefail

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    sudo -u postgres "$@"
  fi
}
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# --- PostgreSQL -------------------------------------------------------------
command -v pg_lsclusters >/dev/null 2>&1 || { echo "engines: PostgreSQL is not installed (run scripts/setup.sh)" >&2; exit 1; }
# The cluster: `main` of the newest installed version, created if the
# package did not (containers without an init system sometimes skip it).
cluster=$(pg_lsclusters -h | awk '$2 == "main" { print $1 }' | sort -V | tail -n 1)
if [ -z "$cluster" ]; then
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  echo "engines: creating PostgreSQL cluster $version/main" >&2
  $sudo pg_createcluster "$version" main >/dev/null
  cluster=$version
fi
read -r _ _ pg_port pg_status _ < <(pg_lsclusters -h | awk -v v="$cluster" '$1 == v && $2 == "main"')
if [ "$pg_status" != online ]; then
  echo "engines: starting PostgreSQL $cluster/main on port $pg_port" >&2
  # Its socket folder lives on a tmpfs that a restart empties.
  $sudo install -d -o postgres -g postgres -m 2775 /var/run/postgresql
  as_postgres pg_ctlcluster "$cluster" main start
fi
for _ in $(seq 1 60); do
  pg_isready -q -h /var/run/postgresql -p "$pg_port" && break
  sleep 0.5
done
pg_isready -q -h /var/run/postgresql -p "$pg_port" || {
  echo "engines: PostgreSQL $cluster/main did not become ready; see /var/log/postgresql/postgresql-$cluster-main.log" >&2
  exit 1
}
# The tests' role and database (loopback only, a test password).
psql_q() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$pg_port" -tAc "$1"; }
if [ "$(psql_q "SELECT 1 FROM pg_roles WHERE rolname = 'babel'")" != 1 ]; then
  psql_q "CREATE ROLE babel LOGIN CREATEDB PASSWORD 'babel'"
fi
if [ "$(psql_q "SELECT 1 FROM pg_database WHERE datname = 'babel'")" != 1 ]; then
  psql_q "CREATE DATABASE babel OWNER babel"
fi
# Scratch schemas a test process left behind when it was killed (each is
# named scratch_<pid>_<random> and dropped by the test when it ends).
while read -r schema; do
  [ -n "$schema" ] || continue
  pid=${schema#scratch_}
  pid=${pid%%_*}
  if ! kill -0 "$pid" 2>/dev/null; then
    as_postgres psql -X -q -p "$pg_port" -d babel -v ON_ERROR_STOP=1 \
      -c "SET client_min_messages = warning" -c "DROP SCHEMA IF EXISTS \"$schema\" CASCADE"
  fi
done < <(as_postgres psql -X -q -p "$pg_port" -d babel -tAc \
  "SELECT nspname FROM pg_namespace WHERE nspname ~ '^scratch_[0-9]+_[0-9a-f]+$'")

# --- NATS -------------------------------------------------------------------
command -v nats-server >/dev/null 2>&1 || { echo "engines: nats-server is not installed (run scripts/setup.sh)" >&2; exit 1; }
nats_port="${BABEL_NATS_PORT:-4222}"
nats_dir=/tmp/babel-nats
# A NATS server greets every connection with `INFO {...}`.
nats_up() {
  [ "$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$nats_port && head -c 4 <&3" 2>/dev/null)" = INFO ]
}
if ! nats_up; then
  echo "engines: starting nats-server on 127.0.0.1:$nats_port (JetStream; log $nats_dir/nats-server.log)" >&2
  mkdir -p "$nats_dir"
  setsid nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$nats_dir/jetstream" \
    -l "$nats_dir/nats-server.log" -P "$nats_dir/nats-server.pid" </dev/null >/dev/null 2>&1 &
  for _ in $(seq 1 40); do
    nats_up && break
    sleep 0.25
  done
  nats_up || { echo "engines: nats-server did not start; see $nats_dir/nats-server.log" >&2; exit 1; }
fi
