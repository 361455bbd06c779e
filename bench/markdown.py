#!/usr/bin/env python3
"""Renders a bench/results/<date>.json as the Markdown tables BENCHMARKS.md carries.

    python3 bench/markdown.py bench/results/2026-12-03.json
"""
import json
import statistics
import sys

doc = json.load(open(sys.argv[1]))
by = {(r["case"], str(r["rate"])): r["r"] for r in doc["results"]}
order = ["switchyard", "floor", "onwards", "tensorzero", "litellm", "portkey"]


def rps(r):
    return r.get("achieved_rps", r.get("rps", 0)) or 0


def cap(r):
    c = r.get("cpu_s_per_1k")
    return 1000 / c if c else 0


def num(x, digits=3):
    if abs(x) >= 100:
        return f"{x:,.1f}".replace("-", "−") if abs(x) < 1000 else f"{x:,.0f}".replace("-", "−")
    return f"{x:.{digits}f}".replace("-", "−")


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
        # Added latency means something only where the gateway kept up with the rate.
        kept_up = rate == "max" or ratio > 0.97
        add = [l[q] - dl[q] for q in ("p50_ms", "p99_ms", "p999_ms")] if kept_up and rate != "max" else None
        adds = " | ".join(num(a) for a in add) if add else " | | "
        print(f"| {g} @{rate} | {rps(r):.0f} | {num(l['p50_ms'])} | {num(l['p99_ms'])} | {num(l['p999_ms'])} | {adds} | "
              f"{ratio:.2f} | {r.get('cpu_s_per_1k', 0):.3f} | {cap(r):,.0f} | {r.get('rss_kb', 0) / 1024:.1f} |")

sy = by.get(("switchyard", "max"))
if sy:
    print()
    print("| against | its max req/s | Switchyard ÷ it | its req/CPU-s | Switchyard ÷ it |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for g in order[1:]:
        o = by.get((g, "max"))
        if o:
            print(f"| {g} | {rps(o):,.0f} | {rps(sy) / (rps(o) or 1e-9):.2f}× | {cap(o):,.0f} | {cap(sy) / (cap(o) or 1e-9):.2f}× |")

rounds = sorted({k[1] for k in by if k[1].startswith("max_r")}, key=lambda r: int(r[5:]))
if rounds:
    print()
    print("| round | " + " | ".join(f"{g} req/s (req/CPU-s)" for g in order[:4]) + " | ÷ floor | ÷ onwards | ÷ TensorZero |")
    print("| --- | " + " | ".join("---:" for _ in order[:4]) + " | ---: | ---: | ---: |")
    ratios = {g: ([], []) for g in order[1:4]}
    for n, rd in enumerate(rounds, 1):
        cells = []
        for g in order[:4]:
            r = by.get((g, rd))
            cells.append(f"{rps(r):,.0f} ({cap(r):,.0f})" if r else "")
        s = by.get(("switchyard", rd))
        rat = []
        for g in order[1:4]:
            o = by.get((g, rd))
            if s and o:
                a, b = rps(s) / (rps(o) or 1e-9), cap(s) / (cap(o) or 1e-9)
                ratios[g][0].append(a)
                ratios[g][1].append(b)
                rat.append(f"{a:.2f}× ({b:.2f}×)")
            else:
                rat.append("")
        print(f"| {n} | " + " | ".join(cells) + " | " + " | ".join(rat) + " |")
    med = [f"**{statistics.median(a):.2f}× ({statistics.median(b):.2f}×)**" if a else "" for a, b in ratios.values()]
    print("| median | | | | | " + " | ".join(med) + " |")

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
print("peer RSS idle: " + ", ".join(f"{p} {kb / 1024:.1f} MB" for p, kb in doc.get("peer_rss_idle_kb", {}).items()))
