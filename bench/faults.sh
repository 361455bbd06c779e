#!/usr/bin/env bash
# What makes the gateway's RSS with N streams held open, on the shipping build (mimalloc): every page
# the process touches for the first time is a page fault, and `perf` records each one with its call
# stack. The sites are printed as bytes of RSS a stream, each with the first two frames above the
# allocator. heaptrack (bench/heap.sh) sees the heap of a system-allocator build instead: what is
# allocated, not what is resident.
#
#   bench/faults.sh [N] [SWITCHYARD_BINARY]        (default 2000, this checkout's release build)
#   bench/faults.sh --h2 [N] [SWITCHYARD_BINARY]   the same with HTTP/2 to the upstream
#
# Needs perf (`apt-get install linux-perf`) with software events allowed (perf_event_paranoid <= 2).
set -euo pipefail
cd "$(dirname "$0")/.."
h2=false
if [ "${1:-}" = "--h2" ]; then h2=true; shift; fi
n=${1:-2000}
command -v perf >/dev/null || { echo "perf is needed: apt-get install linux-perf" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-target}"
if [ $# -ge 2 ]; then
  sw=$2
  cargo build --release --locked -p mock-upstream -p loadgen >&2
else
  cargo build --release --locked -p switchyard -p mock-upstream -p loadgen >&2
  sw="$target/release/switchyard"
fi
bin="$target/release"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
"$bin/mock-upstream" --listen 127.0.0.1:0 > "$tmp/mock.out" 2>&1 &
until grep -q listening "$tmp/mock.out" 2>/dev/null; do sleep 0.05; done
mock=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$tmp/mock.out" | head -1)
# The benchmark's own config (every feature on), with a model whose streams last 20 s.
# shellcheck source=bench/config.sh
. bench/config.sh
{
  bench_config "$mock" sk-bench-master
  printf '[models.slow]\nprovider = "a"\nmodel = "mock-ok+tokens=200+delay=100"\n'
} > "$tmp/config.toml"
if [ "$h2" = true ]; then sed -i 's|^base_url = .*|&\nhttp2_prior_knowledge = true|' "$tmp/config.toml"; fi
SWITCHYARD_HOME="$tmp/home" SWITCHYARD_LOG=warn "$sw" serve --config "$tmp/config.toml" > "$tmp/gw.out" 2>&1 &
gw_pid=$!
until grep -q "listening on" "$tmp/gw.out" 2>/dev/null; do sleep 0.05; done
gw=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$tmp/gw.out" | head -1)
body='{"model": "slow", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
# Warm up (as bench/run.sh does before its idle reading), then record from before the first stream
# opens until all are open.
"$bin/loadgen" stream --url "$gw/v1/chat/completions" --key sk-bench-master \
  --body '{"model": "bench", "stream": true, "messages": [{"role": "user", "content": "hi"}]}' --requests 20 --conns 4 > /dev/null
idle_kb=$(awk '/VmRSS/ {print $2}' "/proc/$gw_pid/status")
perf record -q -m 256M -c 1 -e page-faults --call-graph dwarf,8192 -o "$tmp/perf.data" -p "$gw_pid" > "$tmp/perf.out" 2>&1 &
perf_pid=$!
sleep 1
"$bin/loadgen" hold --url "$gw/v1/chat/completions" --key sk-bench-master --body "$body" \
  --streams "$n" --seconds 1 > "$tmp/hold.out" &
hold=$!
until grep -q all_open "$tmp/hold.out" 2>/dev/null || ! kill -0 $hold 2>/dev/null; do sleep 0.1; done
held_kb=$(awk '/VmRSS/ {print $2}' "/proc/$gw_pid/status")
kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
wait $hold 2>/dev/null || true
opened=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "all_open" in l][0]["opened"])' "$tmp/hold.out")
lost=$(perf report -i "$tmp/perf.data" --stats 2>/dev/null | awk '/LOST_SAMPLES/ {print $NF; exit}' || true)
if [ -n "$lost" ] && [ "$lost" != 0 ]; then
  printf '\033[1;33m!!! perf lost %s page faults (its buffer overflowed): the sites below undercount\033[0m\n' "$lost" >&2
fi
perf script -i "$tmp/perf.data" -F ip,sym 2>/dev/null | sed -E 's/^\s+[0-9a-f]+ //' > "$tmp/stacks.txt"
python3 - "$tmp/stacks.txt" "$opened" "$idle_kb" "$held_kb" "$h2" <<'PY'
import collections, re, sys
path, opened, idle_kb, held_kb, h2 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
# Frames of the allocator, of moves and of standard-library plumbing: the site is the first frame
# above them.
plumbing = re.compile(r"^(mi_|_mi_|alloc::|__mem|core::|bytes::bytes_mut|<alloc|<core::pin|\[unknown\]|tokio::sync::mpsc::list)")
sites, total = collections.Counter(), 0
for stack in open(path).read().split("\n\n"):
    frames = [f.strip() for f in stack.strip().split("\n") if f.strip()]
    if not frames:
        continue
    total += 1
    own = [f for f in frames if not plumbing.match(f)][:2]
    sites[" <- ".join(f[:90] for f in own) or frames[0]] += 1
page = 4096
print(f"{opened} streams open ({'HTTP/2' if h2 == 'true' else 'HTTP/1.1'} to the upstream): RSS {idle_kb / 1024:.1f} MB idle, "
      f"{held_kb / 1024:.1f} MB held ({(held_kb - idle_kb) * 1024 / max(opened, 1):,.0f} B a stream)")
print(f"pages first touched meanwhile: {total} ({total * page / max(opened, 1):,.0f} B a stream)")
for site, count in sites.most_common(20):
    print(f"{count * page / max(opened, 1):8,.0f} B  {site}")
PY
