#!/usr/bin/env bash
# The gateway benchmark: Switchyard with every feature on (an issued key with its own limits, global
# limits, the usage log in SQLite, metrics, routing metadata, two deployments of the model) beside the
# mock upstream itself, measured in one run, direct and through the gateway alternately so that drift
# cancels in the ratios.
#
#   bench/run.sh                 release build; 1k and 3k requests/s, max throughput, streaming, memory
#   bench/run.sh --smoke         a few seconds, debug build: what CI runs so the harness cannot rot
#   bench/run.sh --seconds 20    longer runs
#
# Prints one table and writes bench/results/<date>.json (not in smoke mode). Needs python3 for the
# table. Processes are pinned with taskset when it exists: the gateway on CPU 1, the mock and the load
# generator on CPU 0.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

smoke=0
secs=10
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) smoke=1 ;;
    --seconds) secs=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

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

cat > "$tmp/config.toml" <<TOML
[server]
address = "127.0.0.1:0"
[auth]
master_key = "sk-bench-master"
[limits]
max_requests_per_minute = 100000000
max_tokens_per_minute = 100000000000
[providers.a]
kind = "openai"
base_url = "$mock/v1"
[providers.b]
kind = "openai"
base_url = "$mock/v1"
[models.bench]
strategy = "weighted"
[[models.bench.deployments]]
provider = "a"
model = "mock-ok"
[[models.bench.deployments]]
provider = "b"
model = "mock-ok"
TOML
SWITCHYARD_HOME="$tmp/home" SWITCHYARD_LOG=warn daemon 1 "$bin/switchyard" serve --config "$tmp/config.toml" > "$tmp/gw.out" 2>&1 &
gw_pid=$!
gw=$(wait_url "$tmp/gw.out")
key=$(curl -s -H "Authorization: Bearer sk-bench-master" "$gw/admin/keys" \
  -d '{"name": "bench", "rpm": 100000000, "tpm": 100000000000, "max_parallel": 100000, "budget_usd": 1000000}' |
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
for r in $rates; do
  lg rate "${direct[@]}" --body "$(body mock-ok)" --rate "$r" --seconds "$secs" | sed "s/^/{\"case\":\"direct\",\"rate\":$r,\"r\":/; s/\$/}/" >> "$results"
  t0=$(cpu_ticks "$gw_pid")
  ( sleep "$(python3 -c "print($secs / 2)")"; rss_kb "$gw_pid" > "$tmp/rss_$r" ) &
  sampler=$!
  lg rate "${through[@]}" --body "$(body bench)" --rate "$r" --seconds "$secs" > "$tmp/gw_$r.json"
  t1=$(cpu_ticks "$gw_pid")
  wait "$sampler"
  python3 - "$tmp/gw_$r.json" "$r" "$t0" "$t1" "$(cat "$tmp/rss_$r")" >> "$results" <<'PY'
import json, os, sys
r = json.load(open(sys.argv[1]))
hz = os.sysconf("SC_CLK_TCK")
cpu = (int(sys.argv[4]) - int(sys.argv[3])) / hz
r["cpu_s_per_1k"] = cpu / max(r["sent"], 1) * 1000
r["rss_kb"] = int(sys.argv[5])
print(json.dumps({"case": "switchyard", "rate": int(sys.argv[2]), "r": r}))
PY
done
lg max "${direct[@]}" --body "$(body mock-ok)" --conns 64 --seconds "$secs" | sed 's/^/{"case":"direct","rate":"max","r":/; s/$/}/' >> "$results"
lg max "${through[@]}" --body "$(body bench)" --conns 64 --seconds "$secs" | sed 's/^/{"case":"switchyard","rate":"max","r":/; s/$/}/' >> "$results"

# Streaming: 200 chunks per answer.
sbody() { body "$1" ', "stream": true'; }
n=$([ "$smoke" = 1 ] && echo 10 || echo 100)
lg stream "${direct[@]}" --body "$(sbody 'mock-ok+tokens=200')" --requests "$n" | sed 's/^/{"case":"direct","rate":"stream","r":/; s/$/}/' >> "$results"
# A second gateway whose deployments stream 200 chunks (the mock's option travels in the upstream
# model name), so both paths stream the same answer.
sed 's/model = "mock-ok"/model = "mock-ok+tokens=200"/' "$tmp/config.toml" > "$tmp/config2.toml"
# ...and a model whose streams last 20 s (200 chunks, 100 ms apart), to hold many open at once.
printf '[models.slow]\nprovider = "a"\nmodel = "mock-ok+tokens=200+delay=100"\n' >> "$tmp/config2.toml"
SWITCHYARD_HOME="$tmp/home2" SWITCHYARD_LOG=warn daemon 1 "$bin/switchyard" serve --config "$tmp/config2.toml" > "$tmp/gw2.out" 2>&1 &
gw2_pid=$!
gw2=$(wait_url "$tmp/gw2.out")
lg stream --url "$gw2/v1/chat/completions" --key sk-bench-master --body "$(sbody bench)" --requests "$n" | sed 's/^/{"case":"switchyard","rate":"stream","r":/; s/$/}/' >> "$results"

# Memory with many open streams.
lg hold --url "$gw2/v1/chat/completions" --key sk-bench-master --body "$(body slow ', "stream": true')" --streams "$hold" --seconds 1 > "$tmp/hold.out" &
hold_pid=$!
until grep -q all_open "$tmp/hold.out" 2>/dev/null || ! kill -0 $hold_pid 2>/dev/null; do sleep 0.1; done
hold_kb=$(rss_kb "$gw2_pid")
wait $hold_pid || true
opened=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "all_open" in l][0]["opened"])' "$tmp/hold.out" 2>/dev/null || echo 0)

python3 - "$results" "$idle_kb" "$hold_kb" "$hold" "$opened" "$profile" "$smoke" "$root" <<'PY'
import datetime, json, os, platform, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
idle_kb, hold_kb, hold, opened, profile, smoke, root = sys.argv[2:9]
by = {(r["case"], str(r["rate"])): r["r"] for r in rows}
def lat(r, k):
    l = r.get("latency") or r.get(k) or {}
    return l
out = []
print(f"\nSwitchyard benchmark ({profile} build, {os.cpu_count()} CPUs, {platform.machine()})")
print(f"{'case':<22}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'+p50':>8}{'+p99':>8}{'+p99.9':>8}{'ratio':>7}{'CPU s/1k':>10}{'RSS MB':>8}")
for rate in [k[1] for k in by if k[0] == "direct" and k[1] not in ("stream",)]:
    d, s = by.get(("direct", rate)), by.get(("switchyard", rate))
    if not d or not s:
        continue
    for name, r in (("direct", d), ("switchyard", s)):
        l = r["latency"] or {}
        rps = r.get("achieved_rps", r.get("rps", 0))
        extra = ""
        if name == "switchyard":
            dl = d["latency"] or {}
            add = [l.get(q, 0) - dl.get(q, 0) for q in ("p50_ms", "p99_ms", "p999_ms")]
            drps = d.get("achieved_rps", d.get("rps", 1)) or 1
            extra = f"{add[0]:>8.3f}{add[1]:>8.3f}{add[2]:>8.3f}{rps / drps:>7.2f}"
            extra += f"{r.get('cpu_s_per_1k', 0):>10.3f}" if "cpu_s_per_1k" in r else f"{'':>10}"
            extra += f"{r.get('rss_kb', 0) / 1024:>8.1f}" if "rss_kb" in r else ""
        print(f"{name + ' @' + rate:<22}{rps:>10.0f}{l.get('p50_ms', 0):>9.3f}{l.get('p99_ms', 0):>9.3f}{l.get('p999_ms', 0):>10.3f}{extra}")
d, s = by.get(("direct", "stream")), by.get(("switchyard", "stream"))
if d and s:
    print(f"\nstreaming (200 chunks): TTFT p50/p99 direct {d['ttft']['p50_ms']:.3f}/{d['ttft']['p99_ms']:.3f} ms, "
          f"through {s['ttft']['p50_ms']:.3f}/{s['ttft']['p99_ms']:.3f} ms (added p99 {s['ttft']['p99_ms'] - d['ttft']['p99_ms']:.3f} ms); "
          f"chunk gap p99 direct {d['gap']['p99_ms']:.3f}, through {s['gap']['p99_ms']:.3f} ms")
print(f"memory: RSS idle {int(idle_kb) / 1024:.1f} MB; with {opened}/{hold} open streams {int(hold_kb) / 1024:.1f} MB")
doc = {"date": datetime.datetime.utcnow().isoformat() + "Z", "profile": profile, "cpus": os.cpu_count(),
       "rss_idle_kb": int(idle_kb), "rss_open_streams_kb": int(hold_kb), "open_streams": int(opened),
       "results": rows}
if smoke == "0":
    os.makedirs(f"{root}/bench/results", exist_ok=True)
    path = f"{root}/bench/results/{datetime.date.today().isoformat()}.json"
    json.dump(doc, open(path, "w"), indent=1)
    print(f"wrote {path}")
else:
    bad = [r for r in rows if (r["r"].get("errors") or 0) > 0]
    assert not bad, f"smoke run had errors: {bad}"
    assert int(opened) == int(hold), f"only {opened} of {hold} streams opened"
    print("smoke: ok")
PY
