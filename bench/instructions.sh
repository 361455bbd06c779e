#!/usr/bin/env bash
# Instructions the gateway executes per non-streaming chat request, counted by callgrind: stable on a
# busy machine, unlike requests/second. Runs `switchyard serve` under valgrind against mock-upstream,
# sends N keep-alive requests, then 0, and prints (I(N) - I(0)) / N for each binary given.
#
#   bench/instructions.sh [--stream] [N] [SWITCHYARD_BINARY ...]   (default: N=1000, this checkout's release build)
#
# With --stream, each request is a stream of 200 chunks, read to its end: instructions per streamed
# answer.
#
# Every feature is on, as in bench/run.sh: an issued key with its own limits and a budget, global
# limits, the usage log in SQLite (its background writer counts too: the server stores every row
# before it exits), metrics, routing metadata, two deployments of the model. The config is the same for
# every binary (older builds must parse it too).
# Compare two builds in one run: bench/instructions.sh 1000 /path/to/old/switchyard target/release/switchyard
set -euo pipefail
cd "$(dirname "$0")/.."
stream=0
if [ "${1:-}" = --stream ]; then stream=1; shift; fi
n=${1:-1000}
shift || true
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
target="${CARGO_TARGET_DIR:-target}"
if [ $# -eq 0 ]; then
  cargo build --release --locked -p switchyard -p mock-upstream >&2
  set -- "$target/release/switchyard"
elif [ ! -x "$target/release/mock-upstream" ]; then
  cargo build --release --locked -p mock-upstream >&2
fi
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
"$target/release/mock-upstream" --listen 127.0.0.1:0 > "$tmp/mock.out" 2>&1 &
until grep -q listening "$tmp/mock.out" 2>/dev/null; do sleep 0.1; done
mock=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$tmp/mock.out" | head -1)
# shellcheck source=bench/config.sh
. bench/config.sh
if [ "$stream" = 1 ]; then
  bench_config "$mock" sk-bench | sed 's/model = "mock-ok"/model = "mock-ok+tokens=200"/' > "$tmp/config.toml"
else
  bench_config "$mock" sk-bench > "$tmp/config.toml"
fi
# Instructions of one gateway run that serves $2 requests.
count() {
  rm -rf "$tmp/home"
  SWITCHYARD_HOME="$tmp/home" SWITCHYARD_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" "$1" serve \
    --config "$tmp/config.toml" > "$tmp/gw.out" 2> "$tmp/vg.err" &
  local pid=$!
  until grep -q listening "$tmp/gw.out" 2>/dev/null; do
    kill -0 "$pid" 2>/dev/null || { grep -v '^==' "$tmp/vg.err" >&2; exit 1; }
    sleep 0.2
  done
  local url; url=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$tmp/gw.out" | head -1)
  python3 - "$url" "$2" "$BENCH_KEY_BODY" "$stream" <<'PY'
import http.client, json, sys, urllib.parse
u = urllib.parse.urlparse(sys.argv[1]); n = int(sys.argv[2]); stream = sys.argv[4] == "1"
c = http.client.HTTPConnection(u.hostname, u.port)
c.request("POST", "/admin/keys", sys.argv[3], {"Authorization": "Bearer sk-bench"})
r = c.getresponse(); key = json.loads(r.read())["key"]
req = {"model": "bench", "messages": [{"role": "user", "content": "hello from the benchmark"}]}
if stream:
    req["stream"] = True
body = json.dumps(req)
for _ in range(n):
    c.request("POST", "/v1/chat/completions", body, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    r = c.getresponse(); data = r.read()
    assert r.status == 200, r.status
    if stream:
        assert data.count(b"data: ") >= 200 and data.endswith(b"data: [DONE]\n\n"), data[-200:]
PY
  kill -INT "$pid"; wait "$pid" || true
  awk '/^(summary|totals):/ {print $2; exit}' "$tmp/cg.out"
}
for bin in "$@"; do
  base=$(count "$bin" 0)
  full=$(count "$bin" "$n")
  what=$([ "$stream" = 1 ] && echo "per streamed answer (200 chunks)" || echo "per request")
  printf '%-60s %9d instructions %s\n' "$bin" $(( (full - base) / n )) "$what"
done
