#!/usr/bin/env bash
# Where the gateway's memory goes with N streams held open: runs a system-allocator release build
# (`--features system-alloc`; heaptrack cannot see mimalloc's pages) under heaptrack, opens N streams
# of 200 chunks 100 ms apart through it, stops it and prints the heap's peak and its largest
# consumers, each with the allocation sites behind it.
#
#   bench/heap.sh [N]        (default 2000)
#   bench/heap.sh --h2 [N]   the same with HTTP/2 to the upstream (`http2_prior_knowledge`)
#
# Needs heaptrack (`apt-get install heaptrack`). The build goes to the usual release directory, so a
# later `cargo build --release` rebuilds the shipping binary (with mimalloc).
set -euo pipefail
cd "$(dirname "$0")/.."
h2=false
if [ "${1:-}" = "--h2" ]; then h2=true; shift; fi
n=${1:-2000}
command -v heaptrack >/dev/null || { echo "heaptrack is needed: apt-get install heaptrack" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p switchyard --features system-alloc -p mock-upstream -p loadgen >&2
bin="$target/release"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$bin/mock-upstream" --listen 127.0.0.1:0 > "$tmp/mock.out" 2>&1 &
until grep -q listening "$tmp/mock.out" 2>/dev/null; do sleep 0.05; done
mock=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$tmp/mock.out" | head -1)
cat > "$tmp/config.toml" <<TOML
[server]
address = "127.0.0.1:0"
[auth]
master_key = "sk-bench-master"
[providers.a]
kind = "openai"
base_url = "$mock/v1"
http2_prior_knowledge = $h2
[models.slow]
provider = "a"
model = "mock-ok+tokens=200+delay=100"
TOML
SWITCHYARD_HOME="$tmp/home" SWITCHYARD_LOG=warn heaptrack -o "$tmp/heap" "$bin/switchyard" serve --config "$tmp/config.toml" > "$tmp/gw.out" 2>&1 &
ht=$!
until grep -q "listening on" "$tmp/gw.out" 2>/dev/null; do sleep 0.1; done
gw=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$tmp/gw.out" | head -1)
"$bin/loadgen" hold --url "$gw/v1/chat/completions" --key sk-bench-master \
  --body '{"model": "slow", "stream": true, "messages": [{"role": "user", "content": "hi"}]}' \
  --streams "$n" --seconds 1 > "$tmp/hold.out" &
hold=$!
until grep -q all_open "$tmp/hold.out" 2>/dev/null || ! kill -0 $hold 2>/dev/null; do sleep 0.1; done
grep all_open "$tmp/hold.out" || { echo "the streams did not all open" >&2; exit 1; }
# A graceful stop, so heaptrack writes its file.
# Only the server itself: the pattern anchored so that it misses heaptrack's own wrapper, which must
# live on to finish the file.
pkill -TERM -f "^$bin/switchyard serve --config $tmp/config.toml" || true
wait $hold 2>/dev/null || true
# heaptrack writes its file as the process ends (after the shutdown grace for the open streams).
wait $ht 2>/dev/null || true
heaptrack_print -f "$tmp"/heap*.zst > "$tmp/report.txt" 2>/dev/null
grep -E "^peak heap memory consumption" "$tmp/report.txt"
echo "per open stream: $(python3 -c "
import re, sys
t = open(sys.argv[1]).read()
m = re.search(r'peak heap memory consumption: ([0-9.]+)([KMG]?)', t)
v = float(m.group(1)) * {'': 1, 'K': 1e3, 'M': 1e6, 'G': 1e9}[m.group(2)]
print(f'{v / int(sys.argv[2]) / 1000:.1f} KB')" "$tmp/report.txt" "$n")"
# The largest consumers at the peak, each with the first frames of its call stack.
sed -n '/PEAK MEMORY CONSUMERS/,/MOST TEMPORARY/p' "$tmp/report.txt" |
  grep -v '^\s*in /\|^\s*at ' | awk '/peak memory consumed over/ {n++} n <= 12' |
  awk '/consumed over/ {k = 0; print; next} {k++; if (k <= 6) print}' | cut -c1-160
