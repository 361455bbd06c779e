#!/usr/bin/env bash
# The gateway's CPU time per request (user and system, all its threads, from /proc) at a fixed rate,
# with every feature on (bench/config.sh). CPU time per request barely moves when the machine is busy,
# unlike latency or requests/second, so two builds compare well on a small, noisy machine. Binaries
# given together run alternately, round after round, so drift spreads over all of them.
#
#   bench/cpu.sh [--rate 1500] [--seconds 5] [--rounds 3] [SWITCHYARD_BINARY ...]
#                (default: this checkout's release build)
#
# Prints one line per run: CPU ms per request (user, system), latency p50 / p99, RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=1500
secs=5
rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate=$2; shift ;;
    --seconds) secs=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    *) break ;;
  esac
  shift
done
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p mock-upstream -p loadgen >&2
if [ $# -eq 0 ]; then
  cargo build --release --locked -p switchyard >&2
  set -- "$target/release/switchyard"
fi
bin="$target/release"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
pinning=0
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then pinning=1; fi
pin() { if [ "$pinning" = 1 ]; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }
# For `&`: exec keeps the process id that $! reports.
daemon() { if [ "$pinning" = 1 ]; then exec taskset -c "$1" "${@:2}"; else exec "${@:2}"; fi; }
url_of() { until grep -q "listening on" "$1" 2>/dev/null; do sleep 0.05; done; sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$1" | head -1; }
daemon 0 "$bin/mock-upstream" --listen 127.0.0.1:0 > "$tmp/mock.out" 2>&1 &
mock=$(url_of "$tmp/mock.out")
# shellcheck source=bench/config.sh
. bench/config.sh
bench_config "$mock" sk-bench-master > "$tmp/config.toml"
body='{"model": "bench", "messages": [{"role": "user", "content": "Say hello"}]}'
for _ in $(seq 1 "$rounds"); do
  for gwbin in "$@"; do
    rm -rf "$tmp/home" "$tmp/gw.out"
    SWITCHYARD_HOME="$tmp/home" SWITCHYARD_LOG=warn daemon 1 "$gwbin" serve --config "$tmp/config.toml" > "$tmp/gw.out" 2>&1 &
    gw_pid=$!
    gw=$(url_of "$tmp/gw.out")
    key=$(curl -s -H "Authorization: Bearer sk-bench-master" "$gw/admin/keys" -d "$BENCH_KEY_BODY" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
    lg=(pin 0 "$bin/loadgen")
    "${lg[@]}" max --url "$gw/v1/chat/completions" --key "$key" --body "$body" --conns 16 --seconds 1 > /dev/null
    t0=$(awk '{print $14, $15}' "/proc/$gw_pid/stat")
    out=$("${lg[@]}" rate --url "$gw/v1/chat/completions" --key "$key" --body "$body" --rate "$rate" --seconds "$secs")
    t1=$(awk '{print $14, $15}' "/proc/$gw_pid/stat")
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$gw_pid/status")
    python3 - "$out" "$gwbin" "$rss" $t0 $t1 <<'PY'
import json, os, sys
r = json.loads(sys.argv[1]); hz = os.sysconf("SC_CLK_TCK"); n = max(r["sent"], 1)
u0, s0, u1, s1 = map(int, sys.argv[4:8])
u, s = (u1 - u0) / hz / n * 1000, (s1 - s0) / hz / n * 1000
l = r["latency"]
print(f"{sys.argv[2]:<50} CPU {u + s:.3f} ms/req (user {u:.3f}, system {s:.3f})  p50 {l['p50_ms']:.2f}  "
      f"p99 {l['p99_ms']:.2f} ms  errors {r['errors']}  RSS {int(sys.argv[3]) // 1024} MB")
PY
    kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true
  done
done
