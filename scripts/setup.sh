#!/usr/bin/env bash
# Installs what building Babel needs from the system, and nothing when it is
# already there. Safe to run again; used by server.sh and test.sh.
set -euo pipefail

# command -> Debian package providing it (cmake builds libopus from source)
# (iptables: the NAT test between network namespaces)
declare -A tools=([cc]=gcc [pkg-config]=pkg-config [cmake]=cmake [iptables]=iptables [ip]=iproute2)
missing=()
for t in "${!tools[@]}"; do
  command -v "$t" >/dev/null 2>&1 || missing+=("${tools[$t]}")
done
# libraries -> Debian package (ALSA headers for the cpal audio backend)
declare -A libs=([alsa]=libasound2-dev)
for l in "${!libs[@]}"; do
  pkg-config --exists "$l" 2>/dev/null || missing+=("${libs[$l]}")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust first (https://rustup.rs)" >&2
  exit 1
fi
