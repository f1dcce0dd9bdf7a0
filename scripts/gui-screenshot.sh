#!/usr/bin/env bash
# Takes the README's picture of the desktop app during a call:
# docs/screenshot-call.png. Runs `babel-gui --demo-call` (a server on
# loopback, contacts in every state, a call to Ben who answers and talks)
# in a virtual X display, and the app saves its own window after a few
# seconds of call. Installs Xvfb and Mesa's software OpenGL when missing.
# Usage: scripts/gui-screenshot.sh [OUT.png] [SECONDS_OF_CALL]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/screenshot-call.png}"
after="${2:-12}"
scripts/setup.sh

# command or library -> Debian package
missing=()
command -v xvfb-run >/dev/null 2>&1 || missing+=(xvfb xauth)
for lib in libGL.so.1 libEGL.so.1 libxkbcommon-x11.so.0 libXcursor.so.1 libXrandr.so.2 libXi.so.6; do
  ldconfig -p | grep -q "$lib" || missing+=("$lib")
done
if ((${#missing[@]})); then
  echo "gui-screenshot: installing Xvfb and OpenGL libraries" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq xvfb xauth libgl1 libgl1-mesa-dri libegl1 libxkbcommon-x11-0 \
    libxcursor1 libxrandr2 libxi6
fi

cargo build --release -p babel-gui
bin="${CARGO_TARGET_DIR:-target}/release/babel-gui"
mkdir -p "$(dirname "$out")"
rm -f "$out"
# Software rendering: no GPU needed.
LIBGL_ALWAYS_SOFTWARE=1 timeout 120 xvfb-run -a -s "-screen 0 1280x800x24" \
  "$bin" --demo-call --screenshot "$out" --screenshot-after "$after"
test -s "$out" || { echo "gui-screenshot: no picture was taken" >&2; exit 1; }
echo "gui-screenshot: $out"
