#!/usr/bin/env python3
"""Renders a bench/results/<date>.json as the Markdown tables BENCHMARKS.md carries.

    python3 bench/markdown.py bench/results/2026-12-03.json
"""
import json
import sys

doc = json.load(open(sys.argv[1]))
by = {(r["case"], str(r["rate"])): r["r"] for r in doc["results"]}
order = ["switchyard", "floor", "onwards", "tensorzero", "litellm", "portkey"]


def rps(r):
    return r.get("achieved_rps", r.get("rps", 0)) or 0


def cap(r):
    c = r.get("cpu_s_per_1k")
    return 1000 / c if c else 0


def num(x):
    text = f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.1f}" if abs(x) >= 100 else f"{x:.3f}"
    return text.replace("-", "−")


print("| case | req/s | p50 ms | p99 ms | p99.9 ms | +p50 | +p99 | +p99.9 | ratio | CPU s/1k | req/CPU-s | RSS MB |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for rate in ("1000", "3000", "max"):
    d = by.get(("direct", rate))
    if not d:
        continue
    dl = d["latency"]
    print(f"| direct @{rate} | {rps(d):.0f} | {num(dl['p50_ms'])} | {num(dl['p99_ms'])} | {num(dl['p999_ms'])} | | | | | | | |")
    for g in order:
        r = by.get((g, rate))
        if not r:
            continue
        l = r["latency"]
        ratio = rps(r) / (rps(d) or 1)
        # Added latency means something only where the gateway kept up with the rate (not its queue).
        add = [l[q] - dl[q] for q in ("p50_ms", "p99_ms", "p999_ms")] if rate != "max" and ratio > 0.97 else None
        adds = " | ".join(num(a) for a in add) if add else " | | "
        print(f"| {g} @{rate} | {rps(r):.0f} | {num(l['p50_ms'])} | {num(l['p99_ms'])} | {num(l['p999_ms'])} | {adds} | "
              f"{ratio:.2f} | {r.get('cpu_s_per_1k', 0):.3f} | {cap(r):,.0f} | {r.get('rss_kb', 0) / 1024:.1f} |")

# Switchyard's ratios are the ones run.sh computed and stored under "against".
against = doc.get("against", {})
if against:
    print()
    print("| against | its max req/s | Switchyard ÷ it | its req/CPU-s | Switchyard ÷ it |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for g in order[1:]:
        if g in against:
            o, v = by[(g, "max")], against[g]
            print(f"| {g} | {rps(o):,.0f} | {v['max_rps_ratio']:.2f}× | {cap(o):,.0f} | {v['capacity_ratio']:.2f}× |")

rounds = sorted({k[1] for k in by if k[1].startswith("max_r")}, key=lambda r: int(r[5:]))
alternated = against.get("alternated", {})
if rounds and alternated:
    print()
    print("| round | " + " | ".join(f"{g} req/s (req/CPU-s)" for g in order[:4]) + " | ÷ floor | ÷ onwards | ÷ TensorZero |")
    print("| --- | " + " | ".join("---:" for _ in order[:4]) + " | ---: | ---: | ---: |")
    for n, rd in enumerate(rounds):
        cells = [f"{rps(r):,.0f} ({cap(r):,.0f})" if (r := by.get((g, rd))) else "" for g in order[:4]]
        ratios = [f"{a['max_rps_ratios'][n]:.2f}× ({a['capacity_ratios'][n]:.2f}×)" if (a := alternated.get(g)) and len(a["max_rps_ratios"]) == len(rounds) else ""
                  for g in order[1:4]]
        print(f"| {n + 1} | " + " | ".join(cells + ratios) + " |")
    medians = [f"**{a['max_rps_ratio_median']:.2f}× ({a['capacity_ratio_median']:.2f}×)**" if (a := alternated.get(g)) else ""
               for g in order[1:4]]
    print("| median | | | | | " + " | ".join(medians) + " |")

for c in ("1", "4"):
    d, s, f = (by.get((g, "stream" + c)) for g in ("direct", "switchyard", "floor"))
    if d and s:
        line = (f"\nstreaming, {c} at a time: TTFT p50/p99 direct {d['ttft']['p50_ms']:.3f}/{d['ttft']['p99_ms']:.3f} ms; "
                f"Switchyard {s['ttft']['p50_ms']:.3f}/{s['ttft']['p99_ms']:.3f} (added {s['ttft']['p50_ms'] - d['ttft']['p50_ms']:.3f}/"
                f"{s['ttft']['p99_ms'] - d['ttft']['p99_ms']:.3f}); gap p99/p99.9 direct {d['gap']['p99_ms']:.3f}/{d['gap']['p999_ms']:.3f}, "
                f"Switchyard {s['gap']['p99_ms']:.3f}/{s['gap']['p999_ms']:.3f}")
        if f:
            line += (f"; floor {f['ttft']['p50_ms']:.3f}/{f['ttft']['p99_ms']:.3f} (added {f['ttft']['p50_ms'] - d['ttft']['p50_ms']:.3f}/"
                     f"{f['ttft']['p99_ms'] - d['ttft']['p99_ms']:.3f})")
        print(line)
idle, held, n = doc["rss_idle_kb"], doc["rss_open_streams_kb"], doc["open_streams"]
fi, fh, fn = doc["floor_rss_idle_kb"], doc["floor_rss_open_streams_kb"], doc["floor_open_streams"]
print(f"\nmemory: idle {idle / 1024:.1f} MB; {n} open streams {held / 1024:.1f} MB ({(held - idle) / max(n, 1):.1f} KB a stream); "
      f"floor idle {fi / 1024:.1f} MB, {fn} streams {fh / 1024:.1f} MB ({(fh - fi) / max(fn, 1):.1f} KB a stream)")
if "h2_rss_open_streams_kb" in doc:
    hi, hh, hn = doc["h2_rss_idle_kb"], doc["h2_rss_open_streams_kb"], doc["h2_open_streams"]
    print(f"with HTTP/2 to the upstream: idle {hi / 1024:.1f} MB, {hn} open streams {hh / 1024:.1f} MB "
          f"({(hh - hi) / max(hn, 1):.1f} KB a stream)")
print("peer RSS idle: " + ", ".join(f"{p} {kb / 1024:.1f} MB" for p, kb in doc.get("peer_rss_idle_kb", {}).items()))
