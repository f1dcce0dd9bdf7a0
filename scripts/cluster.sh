#!/usr/bin/env bash
# Three babel-server nodes on this machine, for a person to try: PostgreSQL
# and nats-server started when they are not running (scripts/setup.sh), the
# nodes `n1`..`n3` on 127.0.0.1:7451, :7452 and :7453 sharing one PostgreSQL
# schema (`cluster` in the tests' `babel` database) and the local nats-server
# (cluster name `babel-try`), logs and pids under /tmp/babel-cluster.
#
#   scripts/cluster.sh          start (again: restarts the nodes, keeps the data)
#   scripts/cluster.sh stop     stop the three nodes (PostgreSQL and NATS stay up)
#   scripts/cluster.sh reset    stop them and drop the `cluster` schema
#
# The nodes are one service for accounts, contacts, messages, events,
# logouts and presence: users may sit on different nodes. Calls do not cross
# nodes yet (issue #18 item 3): both parties of a call use the same node.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=/tmp/babel-cluster
ports=(7451 7452 7453)

stop() {
  for f in "$dir"/node-*.pid; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid"
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$f"
  done
}

psql_babel() { PGPASSWORD=babel PGOPTIONS='-c client_min_messages=warning' psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U babel -d babel -c "$1"; }

case "${1:-start}" in
  stop)
    stop
    echo "cluster: nodes stopped"
    exit 0
    ;;
  reset)
    stop
    psql_babel "DROP SCHEMA IF EXISTS cluster CASCADE"
    echo "cluster: nodes stopped, schema dropped"
    exit 0
    ;;
  start) ;;
  *)
    echo "usage: scripts/cluster.sh [start|stop|reset]" >&2
    exit 2
    ;;
esac

scripts/setup.sh
cargo build --release -p babel-server
bin="${CARGO_TARGET_DIR:-target}/release/babel-server"
mkdir -p "$dir"
stop
psql_babel "CREATE SCHEMA IF NOT EXISTS cluster"
# The address goes in the environment, not on the command line (which `ps`
# shows to everyone).
export BABEL_DB='postgres://babel:babel@127.0.0.1:5432/babel?options=-c%20search_path%3Dcluster'
for i in "${!ports[@]}"; do
  n=$((i + 1))
  port=${ports[$i]}
  setsid "$bin" --listen "127.0.0.1:$port" --nats nats://127.0.0.1:4222 --cluster babel-try --node "n$n" >"$dir/node-$n.out" 2>"$dir/node-$n.log" </dev/null &
  echo $! >"$dir/node-$n.pid"
done
for i in "${!ports[@]}"; do
  n=$((i + 1))
  for _ in $(seq 1 100); do
    grep -q '^listening on' "$dir/node-$n.out" 2>/dev/null && break
    kill -0 "$(cat "$dir/node-$n.pid")" 2>/dev/null || { echo "cluster: node $n failed; see $dir/node-$n.log" >&2; cat "$dir/node-$n.log" >&2; stop; exit 1; }
    sleep 0.1
  done
  echo "cluster: node $n on $(sed -n 's/^listening on //p' "$dir/node-$n.out") (log $dir/node-$n.log)"
done
echo "cluster: PostgreSQL schema 'cluster' in postgres://babel@127.0.0.1:5432/babel; nats-server on 127.0.0.1:4222"
echo "cluster: try  babel --server 127.0.0.1:7451,127.0.0.1:7452,127.0.0.1:7453 ...  (kill a node: the client moves to the next); stop with: scripts/cluster.sh stop"
