#!/usr/bin/env bash
# Installs what building and testing Babel needs from the system, and nothing
# when it is already there. Safe to run again; used by server.sh and test.sh.
# Tests and programs never install anything themselves: a test that misses a
# tool fails and names it (and says to run this script).
set -euo pipefail

missing=()
# command -> Debian package providing it (cmake builds libopus from source)
# (iptables, ip: the NAT test between network namespaces; tmux: the tests
# that drive `babel` on a terminal; text2wave, espeak-ng: the speech the
# quality harness and `babel demo` send; ffmpeg: it decodes the harness's
# real voices; pg_ctlcluster, nats-server: the engines of the PostgreSQL
# store and the cluster, started below; turnserver, turnutils_uclient: coturn,
# which babel-relay-bench --coturn-clients measures side by side with the relay)
declare -A tools=([cc]=gcc [pkg-config]=pkg-config [cmake]=cmake [iptables]=iptables [ip]=iproute2
  [tmux]=tmux [text2wave]=festival [espeak-ng]=espeak-ng [python3]=python3 [ffmpeg]=ffmpeg
  [pg_ctlcluster]=postgresql [nats-server]=nats-server [turnserver]=coturn [turnutils_uclient]=coturn)
for t in "${!tools[@]}"; do
  command -v "$t" >/dev/null 2>&1 || missing+=("${tools[$t]}")
done
# libraries -> Debian package (ALSA headers for the cpal audio backend)
declare -A libs=([alsa]=libasound2-dev)
for l in "${!libs[@]}"; do
  pkg-config --exists "$l" 2>/dev/null || missing+=("${libs[$l]}")
done
# files -> Debian package (the quality harness's festival voice, the font of
# its plots, its real voices: wideband prompts by Allison Smith in English
# and Spanish, June Wallack in French, Carlo Flora in Italian; its real
# noises: keyboard recordings from bucklespring, OpenSFX's wind)
declare -A files=([/usr/share/festival/voices/us/cmu_us_slt_arctic_hts]=festvox-us-slt-hts
  [/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf]=fonts-dejavu-core
  [/usr/share/asterisk/sounds/en_US_f_Allison]=asterisk-core-sounds-en-g722
  [/usr/share/asterisk/sounds/fr_CA_f_June]=asterisk-core-sounds-fr-g722
  [/usr/share/asterisk/sounds/es_MX_f_Allison]=asterisk-core-sounds-es-g722
  [/usr/share/asterisk/sounds/it_IT_m_Carlo]=asterisk-core-sounds-it-g722
  [/usr/share/buckle/wav]=bucklespring-data
  [/usr/share/games/openttd/baseset/opensfx/opensfx.cat]=openttd-opensfx)
for f in "${!files[@]}"; do
  [ -e "$f" ] || missing+=("${files[$f]}")
done
# PESQ's virtual environment needs venv with pip, and Python's headers (pesq
# compiles a C extension).
if command -v python3 >/dev/null 2>&1; then
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  python3 -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
    || missing+=(python3-dev)
else
  missing+=(python3-venv python3-dev)
fi

# `--screenshots` (scripts/gui-screenshot.sh): a virtual X display and
# Mesa's software OpenGL for the desktop app's pictures. No test needs them.
if [ "${1:-}" = --screenshots ]; then
  command -v xvfb-run >/dev/null 2>&1 || missing+=(xvfb xauth)
  declare -A gl=([libGL.so.1]=libgl1 [libEGL.so.1]=libegl1 [libxkbcommon-x11.so.0]=libxkbcommon-x11-0
    [libXcursor.so.1]=libxcursor1 [libXrandr.so.2]=libxrandr2 [libXi.so.6]=libxi6)
  for lib in "${!gl[@]}"; do
    ldconfig -p | grep -q "$lib" || missing+=("${gl[$lib]}")
  done
  [ -d /usr/lib/x86_64-linux-gnu/dri ] || [ -d /usr/lib/dri ] || missing+=(libgl1-mesa-dri)
fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${missing[@]}"
fi

# PESQ (ITU-T P.862.2 wideband, from PyPI) for the quality harness, in a
# virtual environment of its own. The version is the one BENCHMARKS.md's
# scores were made with (babel-tools' quality/deps.rs checks it).
pesq_version=0.0.4
venv="${BABEL_PESQ_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/babel/pesq-venv}"
pesq_ok() {
  "$venv/bin/python" -c "import numpy, pesq, importlib.metadata as m; assert m.version('pesq') == '$pesq_version'" \
    >/dev/null 2>&1
}
if ! pesq_ok; then
  echo "setup: building the PESQ environment in $venv (pip install numpy pesq==$pesq_version)" >&2
  mkdir -p "$(dirname "$venv")"
  python3 -m venv --clear "$venv"
  # numpy first: pesq's build needs it.
  "$venv/bin/pip" install --quiet --disable-pip-version-check numpy
  "$venv/bin/pip" install --quiet --disable-pip-version-check "pesq==$pesq_version"
  pesq_ok || { echo "setup: PESQ does not import in $venv after installing it" >&2; exit 1; }
fi

"$(dirname "$0")/engines.sh"

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust first (https://rustup.rs)" >&2
  exit 1
fi
