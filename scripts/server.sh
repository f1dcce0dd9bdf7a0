#!/usr/bin/env bash
# Builds and runs the Babel server on its defaults (0.0.0.0:7447, SQLite in
# the user's data directory). Extra arguments go to babel-server, e.g.
#   scripts/server.sh --listen 127.0.0.1:7447 --db /tmp/babel.db
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release -p babel-server -- "$@"
