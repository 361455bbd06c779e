#!/usr/bin/env bash
# Requests/second of non-streaming chat through the gateway vs. straight to mock-upstream, in one run,
# and the ratio between them. Usage: bench/gateway.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-64}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked -p switchyard -p mock-upstream >&2
bin="${CARGO_TARGET_DIR:-target}/release"
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT

"$bin/mock-upstream" --listen 127.0.0.1:0 > "$tmp/mock.out" &
until grep -q listening "$tmp/mock.out" 2>/dev/null; do sleep 0.1; done
mock=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$tmp/mock.out" | head -1)

cat > "$tmp/config.toml" <<TOML
[server]
address = "127.0.0.1:0"
[auth]
master_key = "sk-bench"
[providers.mock]
kind = "openai"
base_url = "$mock/v1"
[models.bench]
provider = "mock"
model = "mock-ok"
TOML
SWITCHYARD_LOG=warn "$bin/switchyard" serve --config "$tmp/config.toml" > "$tmp/gw.out" &
until grep -q listening "$tmp/gw.out" 2>/dev/null; do sleep 0.1; done
gw=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$tmp/gw.out" | head -1)

sed 's/MODEL/mock-ok/' bench/chat.lua > "$tmp/direct.lua"
sed 's/MODEL/bench/' bench/chat.lua > "$tmp/gateway.lua"
run() { wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$2" "$1/v1/chat/completions" | tee "$tmp/$3.txt" >&2; awk '/Requests\/sec/ {print $2}' "$tmp/$3.txt"; }
wrk -t2 -c"$conns" -d2s -s "$tmp/gateway.lua" "$gw/v1/chat/completions" >/dev/null   # warm up
direct=$(run "$mock" "$tmp/direct.lua" direct)
through=$(run "$gw" "$tmp/gateway.lua" gateway)
p50d=$(awk '/ 50%/ {print $2}' "$tmp/direct.txt"); p50g=$(awk '/ 50%/ {print $2}' "$tmp/gateway.txt")
echo
echo "direct to mock-upstream: $direct req/s (p50 $p50d)"
echo "through switchyard:      $through req/s (p50 $p50g)"
awk -v a="$through" -v b="$direct" 'BEGIN { printf "ratio gateway/direct:    %.2f\n", a / b }'
