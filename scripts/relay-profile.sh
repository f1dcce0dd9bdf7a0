#!/bin/bash
# Where a relay's CPU goes at a steady rate, for Babel's relay and for coturn
# (issue #18 item 5; BENCHMARKS.md, "The relay's cost per packet: where the
# kernel's time goes"). Needs perf, and coturn for the second form.
#
#   scripts/relay-profile.sh babel  OUT BIN_DIR CALLS   # relay worker thread, CALLS calls at 50 datagrams/s each way
#   scripts/relay-profile.sh coturn OUT CLIENTS         # whole turnserver, turnutils_uclient -y with CLIENTS clients
#
# BIN_DIR holds release babel-server and babel-relay-bench. Both forms profile
# 8 s of the steady state (perf record -g, and perf stat for the CPU time),
# print the CPU per relayed datagram at the nominal rate (Babel: CALLS x 100
# datagrams/s; coturn: CLIENTS x 50 messages/s, each message two relayed
# datagrams) and the share of each category (scripts/perf-classify.py), and
# count who woke whom (sched:sched_wakeup, 5 s, whole machine) into OUT.wakes.
# Everything runs under chrt -f 20 as the benchmark does. Leaves OUT.* files.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
mode=$1 out=$2
window=8

wakes() { # OUT comm-prefix...
    local o=$1; shift
    perf record -q -e sched:sched_wakeup -a -o "$o.wdata" -- sleep 5 2>/dev/null
    perf script -i "$o.wdata" -F comm,trace 2>/dev/null | python3 -c '
import sys, re, collections
names = sys.argv[1:]
kind = lambda c: next((n for n in names if c.startswith(n)), "other")
n = collections.Counter()
for line in sys.stdin:
    m = re.match(r"\s*(.+?)\s+comm=(.+?) pid=", line)
    if m and kind(m.group(2)) != "other":
        n[(kind(m.group(1).strip()), kind(m.group(2)))] += 1
for (a, b), c in n.most_common(): print(f"{c:8d} wake-ups in 5 s  {a} -> {b}")' "$@" > "$o.wakes"
    rm -f "$o.wdata"
}

report() { # OUT datagrams/s
    local o=$1 rate=$2
    local ms
    ms=$(awk '/task-clock/ {gsub(",", "", $1); print $1}' "$o.stat")
    echo "load average: $(cat "$o.load")"
    awk -v ms="$ms" -v r="$rate" -v w=$window 'BEGIN { printf "CPU %.0f ms in %d s at %d datagrams/s: %.2f us per relayed datagram\n", ms, w, r, ms * 1000 / (r * w) }'
    perf script -i "$o.data" -F comm,tid,ip,sym,dso 2>/dev/null | "$here/perf-classify.py" --own
    cat "$o.wakes"
}

case $mode in
babel)
    bin=$3 calls=$4
    chrt -f 20 "$bin/babel-relay-bench" --server-bin "$bin/babel-server" --relay-workers 1 --calls "$calls" --no-bare \
        --channel-calls 0 --seconds 20 --warmup 1 --quiet-wait 0 --attempts 1 --json > "$out.json" 2> "$out.err" &
    bench=$!
    until grep -q "relay, $calls calls" "$out.err" 2>/dev/null; do
        kill -0 $bench 2>/dev/null || { echo "the bench stopped: $out.err" >&2; exit 1; }
        sleep 0.5
    done
    sleep 3
    server=$(pgrep -P $bench babel-server)
    tid=$(grep -l '^babel-relay-0$' /proc/"$server"/task/*/comm | head -1 | cut -d/ -f5)
    cat /proc/loadavg > "$out.load"
    perf stat -e task-clock,context-switches -t "$tid" -o "$out.stat" -- sleep $window &
    stat=$!
    perf record -q -g -t "$tid" -o "$out.data" -- sleep $window 2>/dev/null
    wait $stat
    wakes "$out" babel-relay-0 babel-relay-ben
    wait $bench
    report "$out" $((calls * 100))
    ;;
coturn)
    clients=$3
    dir=$(mktemp -d)
    port=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    chrt -f 20 turnserver -n --no-cli --no-tls --no-dtls --listening-ip 127.0.0.1 --relay-ip 127.0.0.1 \
        --listening-port "$port" --min-port 40000 --max-port 49999 --lt-cred-mech --user bench:babel-turn-bench \
        --realm babel.bench --allow-loopback-peers --log-file stdout --simple-log --userdb "$dir/turndb" \
        --pidfile "$dir/pid" > "$dir/server.log" 2>&1 &
    turn=$!
    sleep 2
    chrt -f 20 turnutils_uclient -y -c -X -m "$clients" -n 100000 -l 160 -z 20 -u bench -w babel-turn-bench \
        -p "$port" 127.0.0.1 > "$dir/uclient.log" 2>&1 &
    uclient=$!
    # uclient's log is block-buffered: wait for every client, then for the ramp to settle.
    until grep -q "msz=$clients," "$dir/uclient.log"; do
        kill -0 $uclient 2>/dev/null || { echo "uclient stopped: $dir/uclient.log" >&2; exit 1; }
        sleep 1
    done
    sleep 6
    cat /proc/loadavg > "$out.load"
    perf stat -e task-clock,context-switches -p $turn -o "$out.stat" -- sleep $window &
    stat=$!
    perf record -q -g -p $turn -o "$out.data" -- sleep $window 2>/dev/null
    wait $stat
    wakes "$out" turnserver turnutils_uclie
    kill $uclient $turn
    wait 2>/dev/null || true
    rm -rf "$dir"
    report "$out" $((clients * 100))
    ;;
*)
    echo "usage: $0 babel OUT BIN_DIR CALLS | coturn OUT CLIENTS" >&2
    exit 2
    ;;
esac
