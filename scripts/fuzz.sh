#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS seconds each, one
# after another on one core, and exits non-zero if any of them crashes.
#
#   FUZZ_SECONDS     time per target (default 30)
#   FUZZ_TARGET_DIR  cargo target dir (default /tmp/babel-fuzz-target)
#   FUZZ_SANITIZER   address (default) or none
#   FUZZ_TARGETS     space-separated subset of targets (default: all)
#
# Only a stable toolchain is needed: cargo fuzz's nightly flags are allowed
# with RUSTC_BOOTSTRAP=1. The committed seeds in fuzz/corpus/<target> are read
# but not written: new inputs go to $FUZZ_TARGET_DIR/corpus/<target>. Crash
# inputs land in fuzz/artifacts/<target>/ (git-ignored); reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run <target> fuzz/artifacts/<target>/crash-...
# from fuzz/. To fold new inputs into the seeds, copy them into
# fuzz/corpus/<target> and run `cargo fuzz cmin <target>`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-30}"
sanitizer="${FUZZ_SANITIZER:-address}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/tmp/babel-fuzz-target}"
export RUSTC_BOOTSTRAP=1
cargo_fuzz_version="0.13.2"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz $cargo_fuzz_version" >&2
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version" </dev/null
fi

if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "== cargo fuzz build (sanitizer: $sanitizer)"
cargo fuzz build --sanitizer "$sanitizer" </dev/null

failed=()
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${seconds}s"
  scratch="$CARGO_TARGET_DIR/corpus/$t"
  mkdir -p "$scratch" "corpus/$t"
  # One process, one core (no -jobs/-fork). -rss_limit_mb guards the shared machine.
  if cargo fuzz run --sanitizer "$sanitizer" "$t" "$scratch" "corpus/$t" -- \
      -max_total_time="$seconds" -dict="$PWD/babel.dict" \
      -rss_limit_mb=2048 -print_final_stats=1 </dev/null; then
    echo "== $t: no crash"
  else
    echo "== $t: FAILED (see fuzz/artifacts/$t/)" >&2
    failed+=("$t")
  fi
done

if ((${#failed[@]})); then
  echo "fuzz: crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${seconds}s without a crash"
