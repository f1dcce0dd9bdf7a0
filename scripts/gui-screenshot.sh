#!/usr/bin/env bash
# Takes the README's pictures of the desktop app, each saved by the app
# itself from a virtual X display (Xvfb, Mesa's software OpenGL):
#   call             docs/screenshot-call.png: a call to Ben (`--demo call`)
#   signin           docs/screenshot-signin.png: the sign-in form
#   lost-connection  docs/screenshot-lost-connection.png: the server gone
#   incoming         docs/screenshot-incoming.png: Ben calling
#   conversation     docs/screenshot-conversation.png: messages with Ben
# Demos run a server on loopback with contacts in every state, and keep
# their settings in a temporary folder. Xvfb and Mesa come from
# `scripts/setup.sh --screenshots`, which this script runs first.
# Usage: scripts/gui-screenshot.sh [NAME...]   (default: all five)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --screenshots

# GUI_SCREENSHOT_PROFILE=dev takes them with a debug build (quicker to build).
profile="${GUI_SCREENSHOT_PROFILE:-release}"
cargo build --profile "$profile" -p babel-gui
dir="$profile"
[ "$profile" = dev ] && dir=debug
bin="${CARGO_TARGET_DIR:-target}/$dir/babel-gui"
mkdir -p docs

shot() { # NAME SECONDS ARGS...
  local out="docs/screenshot-$1.png" after="$2"
  shift 2
  rm -f "$out"
  local home
  home="$(mktemp -d)"
  # Software rendering: no GPU needed. A fresh home: no saved session.
  LIBGL_ALWAYS_SOFTWARE=1 BABEL_GUI_HOME="$home" timeout 120 xvfb-run -a -s "-screen 0 1280x800x24" \
    "$bin" --screenshot "$out" --screenshot-after "$after" "$@"
  rm -rf "$home"
  test -s "$out" || { echo "gui-screenshot: no picture was taken for $out" >&2; exit 1; }
  echo "gui-screenshot: $out"
}

names=("$@")
((${#names[@]})) || names=(call signin lost-connection incoming conversation)
for n in "${names[@]}"; do
  case "$n" in
    call) shot call 12 --demo call ;;
    signin) shot signin 1 --server babel.example.org:7447 ;;
    lost-connection) shot lost-connection 2 --demo lost-connection ;;
    incoming) shot incoming 2 --demo incoming ;;
    conversation) shot conversation 2 --demo conversation ;;
    *) echo "gui-screenshot: unknown picture $n (call, signin, lost-connection, incoming, conversation)" >&2; exit 2 ;;
  esac
done
