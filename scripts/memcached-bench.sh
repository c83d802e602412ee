#!/usr/bin/env bash
# Real memcached vs the trust memcached example, same load, same machine, one after the other.
#
#   scripts/memcached-bench.sh            # defaults below; N=... HOT_N=... PORT=... to change them
#
# Installs Debian's `memcached` and `libmemcached-tools` with apt-get when missing. Starts
#   memcached -t 2 -m 64 -p $PORT -l 127.0.0.1 -U 0
#   target/release/examples/memcached --workers 2 --memory-mb 64 --port $((PORT+1)) --lenient-keys
# and runs against each, in turn:
#   1. mix      memaslap (`memcaslap`): 64 clients, 9:1 get/set (its default), N operations, window 10k
#               (each client cycles over its own 10k keys: 640k keys in all)
#   2. small    the same with window 1k (64k keys: a smaller, hotter working set)
#   3. hot-get  memcslap --test=get: every one of the 64 threads reads the same HOT_N keys (loaded first), so
#               all clients hammer one small set of keys
#   4. set      memcslap --test=set: 64 threads storing HOT_N keys each
# and prints ops/s for each server and the ratio trust/memcached.
#
# `--lenient-keys`: memaslap's keys begin with 8 bytes of 0x10, which protocol.txt forbids and memcached does
# not check; the trust server refuses them unless told to be lenient.
set -euo pipefail

N=${N:-1000000}
HOT_N=${HOT_N:-5000}
PORT=${PORT:-21211}
OURS_PORT=$((PORT + 1))
cd "$(dirname "$0")/.."

if ! command -v memcached >/dev/null || ! command -v memcslap >/dev/null || ! command -v memcaslap >/dev/null; then
    echo "installing memcached and libmemcached-tools" >&2
    sudo=()
    if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq memcached libmemcached-tools >/dev/null
fi

cargo build --release -q -p trust-examples --example memcached

pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# memcached refuses to run as root without -u.
user_flag=()
if [ "$(id -u)" = 0 ]; then user_flag=(-u nobody); fi
memcached "${user_flag[@]}" -t 2 -m 64 -p "$PORT" -l 127.0.0.1 -U 0 &
pids+=($!)
target/release/examples/memcached --workers 2 --memory-mb 64 --port "$OURS_PORT" --lenient-keys 2>/dev/null &
pids+=($!)

wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    exit 1
}
wait_port "$PORT"
wait_port "$OURS_PORT"
for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "a server exited at start (port taken?); PORT=... picks others" >&2; exit 1; }
done

# ops/s of one run
mix() { # port window
    memcaslap -s "127.0.0.1:$1" -T 2 -c 64 -x "$N" -w "$2" 2>&1 | sed -n 's/.*TPS: \([0-9]*\).*/\1/p' | tail -1
}
slap() { # port test
    local out keys secs
    out=$(memcslap --servers="127.0.0.1:$1" --concurrency=64 --execute-number="$HOT_N" --test="$2" 2>&1)
    keys=$(sed -n "s/.*Time to $2 *\([0-9]*\) keys.*/\1/p" <<<"$out")
    secs=$(sed -n "s/.*Time to $2 .*: *\([0-9.]*\) seconds.*/\1/p" <<<"$out")
    awk -v k="$keys" -v s="$secs" 'BEGIN { if (s > 0) printf "%d", k / s; else print 0 }'
}

printf '%-10s %-58s %14s %14s %8s\n' scenario load "memcached op/s" "trust op/s" ratio
row() { # name description memcached trust
    awk -v n="$1" -v d="$2" -v m="$3" -v t="$4" \
        'BEGIN { printf "%-10s %-58s %14d %14d %7.2fx\n", n, d, m, t, (m > 0 ? t / m : 0) }'
}
for scenario in mix small hot-get set; do
    case $scenario in
        mix) desc="memaslap 64 conns, 9:1 get/set, $N ops, 640k keys"; m=$(mix "$PORT" 10k); t=$(mix "$OURS_PORT" 10k) ;;
        small) desc="memaslap 64 conns, 9:1 get/set, $N ops, 64k keys"; m=$(mix "$PORT" 1k); t=$(mix "$OURS_PORT" 1k) ;;
        hot-get) desc="memcslap 64 threads get, all on the same $HOT_N keys"; m=$(slap "$PORT" get); t=$(slap "$OURS_PORT" get) ;;
        set) desc="memcslap 64 threads x $HOT_N sets"; m=$(slap "$PORT" set); t=$(slap "$OURS_PORT" set) ;;
    esac
    row "$scenario" "$desc" "${m:-0}" "${t:-0}"
done

# What delegation did underneath, over the whole run (trust server only).
echo
echo "trust server, stats trust:"
exec 3<>"/dev/tcp/127.0.0.1/$OURS_PORT"
printf 'stats trust\r\nquit\r\n' >&3
tr -d '\r' <&3 | sed -n 's/^STAT /  /p'
exec 3<&-
