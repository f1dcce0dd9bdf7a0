#!/usr/bin/env bash
# Runs every check CI runs: formatting, lints, doc links, the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo doc (broken or private links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
echo "== cargo test"
cargo test --workspace
echo "== fuzz: every target for ${FUZZ_SECONDS:-30} s (FUZZ_SECONDS=0 skips)"
if [ "${FUZZ_SECONDS:-30}" != 0 ]; then
  FUZZ_SECONDS="${FUZZ_SECONDS:-30}" scripts/fuzz.sh
fi
