#!/usr/bin/env bash
# The gateway benchmark: Switchyard with every feature on (an issued key with its own limits, global
# limits, the usage log in SQLite, metrics, routing metadata, two deployments of the model) beside the
# mock upstream itself, measured in one run, direct and through the gateway alternately so that drift
# cancels in the ratios.
#
#   bench/run.sh                 release build; 1k and 3k requests/s, max throughput, streaming, memory
#   bench/run.sh --smoke         a few seconds, debug build: what CI runs so the harness cannot rot
#   bench/run.sh --seconds 20    longer runs
#   bench/run.sh --peers         also onwards, the TensorZero gateway (its PyPI wheel), the LiteLLM proxy and
#                                the Portkey gateway, installed into ~/.cache/switchyard/peers (pinned
#                                versions), each with two upstream entries of the same model; then
#                                rounds of maximum load alternating Switchyard, the floor, onwards and
#                                TensorZero (--rounds N, default 3), whose per-round ratios cancel drift
#   bench/run.sh --rounds 5      more alternated rounds
#
# Prints one table and writes bench/results/<date>.json (not in smoke mode). Needs python3 for the
# table. Processes are pinned with taskset when it exists: the gateway on CPU 1, the mock and the load
# generator on CPU 0.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

smoke=0
peers=0
secs=10
rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --peers) peers=1 ;;
    --seconds) secs=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

# The local engine's build needs cmake and libclang (a fresh machine may lack them).
"$root/scripts/install-build-deps.sh" >&2

if [ "$smoke" = 1 ]; then
  secs=2
  rates="200"
  hold=200
  cargo build --locked -p switchyard -p mock-upstream -p loadgen >&2
  bin="${CARGO_TARGET_DIR:-target}/debug"
  profile=debug
else
  rates="1000 3000"
  hold=10000
  cargo build --release --locked -p switchyard -p mock-upstream -p loadgen >&2
  bin="${CARGO_TARGET_DIR:-target}/release"
  profile=release
fi

tmp=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# What every process has used so far: other processes busy during the run are named at the end (on a
# machine this small, one busy neighbour moves every figure).
ps -eo pid=,ppid=,comm=,times= > "$tmp/ps0"

pinning=0
if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then pinning=1; fi
pin() { # pin CPU command...: runs it pinned, in the foreground
  if [ "$pinning" = 1 ]; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi
}
daemon() { # daemon CPU command...: for `&`; exec keeps the process id that $! reports
  if [ "$pinning" = 1 ]; then exec taskset -c "$1" "${@:2}"; else exec "${@:2}"; fi
}
wait_url() { until grep -q "listening on" "$1" 2>/dev/null; do sleep 0.05; done; sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$1" | head -1; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

daemon 0 "$bin/mock-upstream" --listen 127.0.0.1:0 > "$tmp/mock.out" 2>&1 &
mock=$(wait_url "$tmp/mock.out")

# shellcheck source=bench/config.sh
. bench/config.sh
bench_config "$mock" sk-bench-master > "$tmp/config.toml"
SWITCHYARD_HOME="$tmp/home" SWITCHYARD_LOG=warn daemon 1 "$bin/switchyard" serve --config "$tmp/config.toml" > "$tmp/gw.out" 2>&1 &
gw_pid=$!
gw=$(wait_url "$tmp/gw.out")
key=$(curl -s -H "Authorization: Bearer sk-bench-master" "$gw/admin/keys" \
  -d "$BENCH_KEY_BODY" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

body() { printf '{"model": "%s", "messages": [{"role": "user", "content": "Say hello"}]%s}' "$1" "${2:-}"; }
lg() { pin 0 "$bin/loadgen" "$@"; }
direct=(--url "$mock/v1/chat/completions")
through=(--url "$gw/v1/chat/completions" --key "$key")

# Warm up both paths.
lg max "${direct[@]}" --body "$(body mock-ok)" --conns 16 --seconds 1 > /dev/null
lg max "${through[@]}" --body "$(body bench)" --conns 16 --seconds 1 > /dev/null
sleep 0.5
idle_kb=$(rss_kb "$gw_pid")

results="$tmp/results.jsonl"
# gw_case NAME RATE PID loadgen-args...: one load against a gateway, as a row with the gateway's CPU time
# per 1,000 requests (user + system, all its threads) and its RSS halfway through.
gw_case() {
  local name=$1 rate=$2 gpid=$3; shift 3
  local t0 t1
  t0=$(cpu_ticks "$gpid")
  ( sleep "$(python3 -c "print($secs / 2)")"; rss_kb "$gpid" > "$tmp/rss" ) &
  local sampler=$!
  lg "$@" > "$tmp/case.json"
  t1=$(cpu_ticks "$gpid")
  wait "$sampler"
  python3 - "$tmp/case.json" "$name" "$rate" "$t0" "$t1" "$(cat "$tmp/rss")" >> "$results" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1]))
n = r.get("sent", r.get("requests", 0))
r["cpu_s_per_1k"] = (int(sys.argv[5]) - int(sys.argv[4])) / os.sysconf("SC_CLK_TCK") / max(n, 1) * 1000
r["rss_kb"] = int(sys.argv[6])
rate = sys.argv[3]
print(json.dumps({"case": sys.argv[2], "rate": int(rate) if rate.isdigit() else rate, "r": r}))
PY
}
# Direct and through alternately, rate by rate, so that drift cancels in the ratios.
for r in $rates; do
  lg rate "${direct[@]}" --body "$(body mock-ok)" --rate "$r" --seconds "$secs" | sed "s/^/{\"case\":\"direct\",\"rate\":$r,\"r\":/; s/\$/}/" >> "$results"
  gw_case switchyard "$r" "$gw_pid" rate "${through[@]}" --body "$(body bench)" --rate "$r" --seconds "$secs"
done
lg max "${direct[@]}" --body "$(body mock-ok)" --conns 64 --seconds "$secs" | sed 's/^/{"case":"direct","rate":"max","r":/; s/$/}/' >> "$results"
gw_case switchyard max "$gw_pid" max "${through[@]}" --body "$(body bench)" --conns 64 --seconds "$secs"

# The floor: one HTTP hop on Switchyard's own stack (axum server, hyper-util's pooled client) that does nothing else.
# What a gateway built on it costs beyond this is what its features cost.
daemon 1 "$bin/loadgen" proxy --listen 127.0.0.1:0 --upstream "$mock" > "$tmp/floor.out" 2>&1 &
floor_pid=$!
floor=$(wait_url "$tmp/floor.out")
lg max --url "$floor/v1/chat/completions" --body "$(body mock-ok)" --conns 16 --seconds 1 > /dev/null
for r in $rates; do
  gw_case floor "$r" "$floor_pid" rate --url "$floor/v1/chat/completions" --body "$(body mock-ok)" --rate "$r" --seconds "$secs"
done
gw_case floor max "$floor_pid" max --url "$floor/v1/chat/completions" --body "$(body mock-ok)" --conns 64 --seconds "$secs"

# Streaming: 200 chunks per answer. A second gateway whose deployments stream 200 chunks (the mock's
# option travels in the upstream model name), so both paths stream the same answer...
sbody() { body "$1" ', "stream": true'; }
sed 's/model = "mock-ok"/model = "mock-ok+tokens=200"/' "$tmp/config.toml" > "$tmp/config2.toml"
# ...and a model whose streams last 20 s (200 chunks, 100 ms apart), to hold many open at once.
printf '[models.slow]\nprovider = "a"\nmodel = "mock-ok+tokens=200+delay=100"\n' >> "$tmp/config2.toml"
SWITCHYARD_HOME="$tmp/home2" SWITCHYARD_LOG=warn daemon 1 "$bin/switchyard" serve --config "$tmp/config2.toml" > "$tmp/gw2.out" 2>&1 &
gw2_pid=$!
gw2=$(wait_url "$tmp/gw2.out")
n=$([ "$smoke" = 1 ] && echo 10 || echo 300)
# One stream at a time (what the gateway itself adds), then four at once (streams sharing the CPUs),
# direct and through alternately.
for c in 1 4; do
  lg stream "${direct[@]}" --body "$(sbody 'mock-ok+tokens=200')" --requests "$n" --conns "$c" | sed "s/^/{\"case\":\"direct\",\"rate\":\"stream$c\",\"r\":/; s/\$/}/" >> "$results"
  lg stream --url "$gw2/v1/chat/completions" --key sk-bench-master --body "$(sbody bench)" --requests "$n" --conns "$c" | sed "s/^/{\"case\":\"switchyard\",\"rate\":\"stream$c\",\"r\":/; s/\$/}/" >> "$results"
  lg stream --url "$floor/v1/chat/completions" --body "$(sbody 'mock-ok+tokens=200')" --requests "$n" --conns "$c" | sed "s/^/{\"case\":\"floor\",\"rate\":\"stream$c\",\"r\":/; s/\$/}/" >> "$results"
done

# Memory with many open streams. hold_rss PID NAME loadgen-hold-args...: opens $hold streams, reads the
# gateway's RSS once all are open, and prints "RSS_KB OPENED".
hold_rss() {
  local gpid=$1 out="$tmp/$2.out"; shift 2
  lg hold "$@" --streams "$hold" --seconds 1 > "$out" &
  local hpid=$!
  until grep -q all_open "$out" 2>/dev/null || ! kill -0 $hpid 2>/dev/null; do sleep 0.1; done
  local kb; kb=$(rss_kb "$gpid")
  wait $hpid || true
  echo "$kb $(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "all_open" in l][0]["opened"])' "$out" 2>/dev/null || echo 0)"
}
read -r hold_kb opened < <(hold_rss "$gw2_pid" hold --url "$gw2/v1/chat/completions" --key sk-bench-master --body "$(body slow ', "stream": true')")
# The same streams through the floor: what one idle HTTP/1.1 hop on this stack holds per open stream.
floor_idle_kb=$(rss_kb "$floor_pid")
read -r floor_hold_kb floor_opened < <(hold_rss "$floor_pid" fhold --url "$floor/v1/chat/completions" --body "$(body 'mock-ok+tokens=200+delay=100' ', "stream": true')")
echo "$floor_idle_kb $floor_hold_kb $floor_opened" > "$tmp/floor_hold"
kill "$gw2_pid" 2>/dev/null || true
# The same streams through a gateway that speaks HTTP/2 to the mock (`http2_prior_knowledge`): every
# stream multiplexed over one upstream connection instead of a connection each, as an HTTPS cloud API
# is reached by ALPN. Its own process, so that the RSS above does not carry over.
sed 's|^base_url = .*|&\nhttp2_prior_knowledge = true|' "$tmp/config2.toml" > "$tmp/config3.toml"
SWITCHYARD_HOME="$tmp/home3" SWITCHYARD_LOG=warn daemon 1 "$bin/switchyard" serve --config "$tmp/config3.toml" > "$tmp/gw3.out" 2>&1 &
gw3_pid=$!
gw3=$(wait_url "$tmp/gw3.out")
lg stream --url "$gw3/v1/chat/completions" --key sk-bench-master --body "$(sbody bench)" --requests 20 --conns 4 > /dev/null
h2_idle_kb=$(rss_kb "$gw3_pid")
read -r h2_hold_kb h2_opened < <(hold_rss "$gw3_pid" h2hold --url "$gw3/v1/chat/completions" --key sk-bench-master --body "$(body slow ', "stream": true')")
echo "$h2_idle_kb $h2_hold_kb $h2_opened" > "$tmp/h2_hold"
kill "$gw3_pid" 2>/dev/null || true

# ---- Peers: the same fixed-rate and closed-loop runs, each gateway pinned where Switchyard was. ----
if [ "$peers" = 1 ] && [ "$smoke" = 0 ]; then
  pdir="${SWITCHYARD_PEERS:-$HOME/.cache/switchyard/peers}"
  mkdir -p "$pdir"
  [ -x "$pdir/onwards/bin/onwards" ] || cargo install --locked --root "$pdir/onwards" onwards --version 1.2.0 >&2
  [ -x "$pdir/venv/bin/litellm" ] || { python3 -m venv "$pdir/venv"; "$pdir/venv/bin/pip" install -q 'litellm[proxy]==1.106.2' 'tensorzero==2026.6.0' >&2; }
  [ -f "$pdir/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" ] ||
    (mkdir -p "$pdir/portkey" && cd "$pdir/portkey" && npm install --no-audit --no-fund --loglevel=error @portkey-ai/gateway@1.15.2 >&2)
  port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  ready() { for _ in $(seq 1 600); do curl -sf "$1" > /dev/null 2>&1 && return 0; sleep 0.1; done; echo "$2 did not start" >&2; return 1; }
  measure() { # name pid url model [loadgen args...]
    local name=$1 ppid=$2 url=$3 model=$4; shift 4
    lg max --url "$url" --body "$(body "$model")" --conns 16 --seconds 1 "$@" > /dev/null
    echo "$name $(rss_kb "$ppid")" >> "$tmp/peer_idle"
    for r in $rates; do
      gw_case "$name" "$r" "$ppid" rate --url "$url" --body "$(body "$model")" --rate "$r" --seconds "$secs" "$@"
    done
    gw_case "$name" max "$ppid" max --url "$url" --body "$(body "$model")" --conns 64 --seconds "$secs" "$@"
  }

  # onwards: two weighted providers of one model.
  p=$(port); mp=$(port)
  printf '{"targets":{"bench":{"strategy":"weighted_random","providers":[{"url":"%s/v1","onwards_model":"mock-ok","weight":1},{"url":"%s/v1","onwards_model":"mock-ok","weight":1}]}}}\n' "$mock" "$mock" > "$tmp/onwards.json"
  RUST_LOG=error daemon 1 "$pdir/onwards/bin/onwards" -f "$tmp/onwards.json" --port "$p" --metrics-port "$mp" > "$tmp/onwards.log" 2>&1 &
  opid=$!
  onwards_url="http://127.0.0.1:$p/v1/chat/completions"
  ready "http://127.0.0.1:$p/v1/models" onwards && measure onwards "$opid" "$onwards_url" bench
  # (kept running for the alternated rounds below)

  # LiteLLM: two model_list entries of one model name, no database, logging off.
  p=$(port)
  cat > "$tmp/litellm.yaml" <<YAML
model_list:
  - model_name: bench
    litellm_params: {model: openai/mock-ok, api_base: "$mock/v1", api_key: dummy}
  - model_name: bench
    litellm_params: {model: openai/mock-ok, api_base: "$mock/v1", api_key: dummy}
router_settings: {routing_strategy: simple-shuffle}
litellm_settings: {telemetry: False, callbacks: []}
general_settings: {master_key: sk-bench-litellm-key, disable_spend_logs: True, disable_error_logs: True}
YAML
  LITELLM_LOG=ERROR daemon 1 "$pdir/venv/bin/litellm" --config "$tmp/litellm.yaml" --host 127.0.0.1 --port "$p" > "$tmp/litellm.log" 2>&1 &
  lpid=$!
  ready "http://127.0.0.1:$p/health/liveliness" litellm && measure litellm "$lpid" "http://127.0.0.1:$p/v1/chat/completions" bench --key sk-bench-litellm-key
  kill "$lpid" 2>/dev/null || true

  # TensorZero: the gateway in its wheel (it picks its own port); two variants of one function, one
  # model each, sampled evenly; observability off.
  cat > "$tmp/tensorzero.toml" <<TOML
[gateway]
observability.enabled = false
[models.bench_a]
routing = ["up"]
[models.bench_a.providers.up]
type = "openai"
api_base = "$mock/v1"
model_name = "mock-ok"
api_key_location = "none"
[models.bench_b]
routing = ["up"]
[models.bench_b.providers.up]
type = "openai"
api_base = "$mock/v1"
model_name = "mock-ok"
api_key_location = "none"
[functions.bench]
type = "chat"
[functions.bench.variants.a]
type = "chat_completion"
model = "bench_a"
[functions.bench.variants.b]
type = "chat_completion"
model = "bench_b"
TOML
  cat > "$tmp/t0.py" <<'PY3'
import signal, sys, time
from tensorzero import _start_http_gateway
gw = _start_http_gateway(config_file=sys.argv[1], clickhouse_url=None, postgres_url=None, valkey_url=None, async_setup=False)
print("listening on", gw.base_url, flush=True)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(3600)
PY3
  RUST_LOG=error daemon 1 "$pdir/venv/bin/python" "$tmp/t0.py" "$tmp/tensorzero.toml" > "$tmp/t0.log" 2>&1 &
  tpid=$!
  for _ in $(seq 1 300); do grep -q "listening on" "$tmp/t0.log" && break; sleep 0.1; done
  t0url=$(grep -o 'http://127[^ ]*/openai/v1' "$tmp/t0.log" | head -1)
  [ -n "$t0url" ] && measure tensorzero "$tpid" "$t0url/chat/completions" "tensorzero::function_name::bench"
  # (kept running for the alternated rounds below)

  # Portkey: load balancing across two targets, given per request in x-portkey-config.
  p=$(port)
  daemon 1 node "$pdir/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" --port="$p" --headless > "$tmp/portkey.log" 2>&1 &
  kpid=$!
  cfg='{"strategy":{"mode":"loadbalance"},"targets":[{"provider":"openai","api_key":"dummy","custom_host":"'"$mock"'/v1","weight":1},{"provider":"openai","api_key":"dummy","custom_host":"'"$mock"'/v1","weight":1}]}'
  ready "http://127.0.0.1:$p/" portkey && measure portkey "$kpid" "http://127.0.0.1:$p/v1/chat/completions" mock-ok --header "x-portkey-config: $cfg"
  kill "$kpid" 2>/dev/null || true

  # Maximum load again, in rounds that alternate the gateways within seconds of each other, so that the
  # machine's drift (other tenants of the host, CPU frequency) lands on all of them alike: each round's
  # ratios compare like with like. LiteLLM and Portkey, two orders of magnitude behind, are left out.
  for i in $(seq 1 "$rounds"); do
    gw_case switchyard "max_r$i" "$gw_pid" max "${through[@]}" --body "$(body bench)" --conns 64 --seconds "$secs"
    gw_case floor "max_r$i" "$floor_pid" max --url "$floor/v1/chat/completions" --body "$(body mock-ok)" --conns 64 --seconds "$secs"
    kill -0 "$opid" 2>/dev/null && gw_case onwards "max_r$i" "$opid" max --url "$onwards_url" --body "$(body bench)" --conns 64 --seconds "$secs"
    [ -n "$t0url" ] && gw_case tensorzero "max_r$i" "$tpid" max --url "$t0url/chat/completions" --body "$(body "tensorzero::function_name::bench")" --conns 64 --seconds "$secs"
  done
  kill "$opid" "$tpid" 2>/dev/null || true
fi
kill "$floor_pid" 2>/dev/null || true

touch "$tmp/peer_idle"
ps -eo pid=,ppid=,comm=,times= > "$tmp/ps1"
python3 - "$tmp/ps0" "$tmp/ps1" "$$" <<'PY'
import sys
def load(p):
    out = {}
    for line in open(p):
        f = line.split()
        if len(f) >= 4:
            out[f[0]] = (f[1], " ".join(f[2:-1]), int(f[-1]))
    return out
before, after, me = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
def ours(pid):
    seen = set()
    while pid in after and pid not in seen:
        if pid == me:
            return True
        seen.add(pid)
        pid = after[pid][0]
    return False
busy = sorted(((a[2] - before[p][2], a[1]) for p, a in after.items() if p in before and not ours(p)), reverse=True)
busy = [(s, c) for s, c in busy if s >= 1]
if busy:
    print("\033[1;33m!!! other processes were busy during the run (CPU seconds): "
          + ", ".join(f"{c} {s}" for s, c in busy[:6]) + "; the figures carry their noise\033[0m")
PY
python3 - "$results" "$idle_kb" "$hold_kb" "$hold" "$opened" "$profile" "$smoke" "$root" "$tmp/peer_idle" "$tmp/floor_hold" "$tmp/h2_hold" <<'PY'
import datetime, json, os, platform, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
idle_kb, hold_kb, hold, opened, profile, smoke, root = sys.argv[2:9]
peer_idle = dict(l.split() for l in open(sys.argv[9]) if l.strip())
floor_idle_kb, floor_hold_kb, floor_opened = (int(x) for x in open(sys.argv[10]).read().split())
h2_idle_kb, h2_hold_kb, h2_opened = (int(x) for x in open(sys.argv[11]).read().split())
by = {(r["case"], str(r["rate"])): r["r"] for r in rows}
peers = [c for c in ("onwards", "tensorzero", "litellm", "portkey") if any(k[0] == c for k in by)]
gateways = ["switchyard", "floor"] + peers
def rps(r):
    return r.get("achieved_rps", r.get("rps", 0)) or 0
def capacity(r):
    """Requests per second of the gateway's own CPU: what one core could serve if the upstream and the
    load generator were not in the way (the rig's two cores bound the measured rates)."""
    c = r.get("cpu_s_per_1k")
    return 1000 / c if c else None
print(f"\nSwitchyard benchmark ({profile} build, {os.cpu_count()} CPUs, {platform.machine()})")
print("floor: one HTTP hop on Switchyard's own stack doing nothing else (loadgen proxy)")
print(f"{'case':<20}{'req/s':>9}{'p50 ms':>10}{'p99 ms':>10}{'p99.9 ms':>10}{'+p50':>10}{'+p99':>10}{'+p99.9':>10}"
      f"{'ratio':>7}{'CPU s/1k':>10}{'req/CPU-s':>10}{'RSS MB':>8}")
for rate in [k[1] for k in by if k[0] == "direct" and not k[1].startswith("stream") and not k[1].startswith("max_r")]:
    d = by[("direct", rate)]
    dl = d.get("latency") or {}
    for name in ["direct"] + gateways:
        r = by.get((name, rate))
        if r is None:
            continue
        l = r.get("latency") or {}
        line = f"{name + ' @' + rate:<20}{rps(r):>9.0f}{l.get('p50_ms', 0):>10.3f}{l.get('p99_ms', 0):>10.3f}{l.get('p999_ms', 0):>10.3f}"
        if name != "direct":
            add = [l.get(q, 0) - dl.get(q, 0) for q in ("p50_ms", "p99_ms", "p999_ms")]
            line += f"{add[0]:>10.3f}{add[1]:>10.3f}{add[2]:>10.3f}{rps(r) / (rps(d) or 1):>7.2f}"
            cap = capacity(r)
            line += f"{r.get('cpu_s_per_1k', 0):>10.3f}{cap or 0:>10.0f}{r.get('rss_kb', 0) / 1024:>8.1f}"
        print(line)
for c in ("1", "4"):
    d, s = by.get(("direct", "stream" + c)), by.get(("switchyard", "stream" + c))
    if d and s:
        print(f"\nstreaming (200 chunks, {c} at a time): TTFT p50/p99 direct {d['ttft']['p50_ms']:.3f}/{d['ttft']['p99_ms']:.3f} ms, "
              f"through {s['ttft']['p50_ms']:.3f}/{s['ttft']['p99_ms']:.3f} ms (added p50 {s['ttft']['p50_ms'] - d['ttft']['p50_ms']:.3f}, "
              f"p99 {s['ttft']['p99_ms'] - d['ttft']['p99_ms']:.3f} ms); "
              f"chunk gap p99/p99.9 direct {d['gap']['p99_ms']:.3f}/{d['gap']['p999_ms']:.3f}, through {s['gap']['p99_ms']:.3f}/{s['gap']['p999_ms']:.3f} ms")
        f = by.get(("floor", "stream" + c))
        if f:
            print(f"  the floor's TTFT p50/p99 {f['ttft']['p50_ms']:.3f}/{f['ttft']['p99_ms']:.3f} ms (added p50 "
                  f"{f['ttft']['p50_ms'] - d['ttft']['p50_ms']:.3f}, p99 {f['ttft']['p99_ms'] - d['ttft']['p99_ms']:.3f} ms), "
                  f"chunk gap p99/p99.9 {f['gap']['p99_ms']:.3f}/{f['gap']['p999_ms']:.3f} ms")
per_stream = lambda held, idle, n: (held - idle) / max(n, 1)
print(f"memory: RSS idle {int(idle_kb) / 1024:.1f} MB; with {opened}/{hold} open streams {int(hold_kb) / 1024:.1f} MB "
      f"({per_stream(int(hold_kb), int(idle_kb), int(opened)):.1f} KB a stream)")
print(f"  the floor: idle {floor_idle_kb / 1024:.1f} MB; with {floor_opened}/{hold} open streams {floor_hold_kb / 1024:.1f} MB "
      f"({per_stream(floor_hold_kb, floor_idle_kb, floor_opened):.1f} KB a stream)")
print(f"  Switchyard with HTTP/2 to the upstream: idle {h2_idle_kb / 1024:.1f} MB; with {h2_opened}/{hold} open streams "
      f"{h2_hold_kb / 1024:.1f} MB ({per_stream(h2_hold_kb, h2_idle_kb, h2_opened):.1f} KB a stream)")
summary = {}
sy = by.get(("switchyard", "max"))
if sy:
    for other in gateways[1:]:
        o = by.get((other, "max"))
        if not o:
            continue
        summary[other] = {
            "max_rps_ratio": rps(sy) / (rps(o) or 1e-9),
            "capacity_ratio": (capacity(sy) or 0) / (capacity(o) or 1e-9),
        }
    print("\nat max load, Switchyard against each: measured req/s ratio; req per CPU-second ratio")
    for other, v in summary.items():
        o = by[(other, "max")]
        print(f"  {other:<11} {rps(o):>8.0f} req/s ({v['max_rps_ratio']:.2f}x)   {capacity(o) or 0:>7.0f} req/CPU-s ({v['capacity_ratio']:.2f}x)")
    print(f"  switchyard  {rps(sy):>8.0f} req/s           {capacity(sy) or 0:>7.0f} req/CPU-s")
rounds = sorted({k[1] for k in by if k[1].startswith("max_r")}, key=lambda r: int(r[5:]))
if rounds and sy:
    import statistics
    print(f"\nalternated rounds at max load ({len(rounds)}): req/s and req/CPU-s each round; Switchyard's ratio to each, per round and median")
    alternated = {}
    for other in [g for g in gateways if g in ("floor", "onwards", "tensorzero")]:
        pairs = [(by[("switchyard", r)], by[(other, r)]) for r in rounds if ("switchyard", r) in by and (other, r) in by]
        if not pairs:
            continue
        rr = [rps(a) / (rps(b) or 1e-9) for a, b in pairs]
        cr = [(capacity(a) or 0) / (capacity(b) or 1e-9) for a, b in pairs]
        alternated[other] = {"max_rps_ratios": rr, "capacity_ratios": cr,
                             "max_rps_ratio_median": statistics.median(rr), "capacity_ratio_median": statistics.median(cr)}
        print(f"  {other:<11} req/s " + " ".join(f"{rps(b):>6.0f}" for _, b in pairs) + "   req/CPU-s " + " ".join(f"{capacity(b) or 0:>6.0f}" for _, b in pairs)
              + f"   Switchyard ÷ it: req/s " + " ".join(f"{x:.2f}" for x in rr) + f" (median {statistics.median(rr):.2f}x), per CPU-s "
              + " ".join(f"{x:.2f}" for x in cr) + f" (median {statistics.median(cr):.2f}x)")
    sy_rounds = [by[("switchyard", r)] for r in rounds if ("switchyard", r) in by]
    print(f"  {'switchyard':<11} req/s " + " ".join(f"{rps(a):>6.0f}" for a in sy_rounds) + "   req/CPU-s " + " ".join(f"{capacity(a) or 0:>6.0f}" for a in sy_rounds))
    summary["alternated"] = alternated
if peer_idle:
    print("peer RSS idle: " + ", ".join(f"{p} {int(kb) / 1024:.1f} MB" for p, kb in peer_idle.items()))
doc = {"date": datetime.datetime.utcnow().isoformat() + "Z", "profile": profile, "cpus": os.cpu_count(),
       "rss_idle_kb": int(idle_kb), "rss_open_streams_kb": int(hold_kb), "open_streams": int(opened),
       "floor_rss_idle_kb": floor_idle_kb, "floor_rss_open_streams_kb": floor_hold_kb, "floor_open_streams": floor_opened,
       "h2_rss_idle_kb": h2_idle_kb, "h2_rss_open_streams_kb": h2_hold_kb, "h2_open_streams": h2_opened,
       "peer_rss_idle_kb": {p: int(kb) for p, kb in peer_idle.items()}, "against": summary, "results": rows}
if smoke == "0":
    os.makedirs(f"{root}/bench/results", exist_ok=True)
    path = f"{root}/bench/results/{datetime.date.today().isoformat()}.json"
    json.dump(doc, open(path, "w"), indent=1)
    print(f"wrote {path}")
else:
    bad = [r for r in rows if (r["r"].get("errors") or 0) > 0]
    assert not bad, f"smoke run had errors: {bad}"
    assert int(opened) == int(hold), f"only {opened} of {hold} streams opened"
    assert h2_opened == int(hold), f"only {h2_opened} of {hold} streams opened over HTTP/2"
    assert all(by.get((g, "max"), {}).get("cpu_s_per_1k", 0) > 0 for g in ("switchyard", "floor")), "no CPU time measured"
    print("smoke: ok")
PY
