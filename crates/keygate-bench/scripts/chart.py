#!/usr/bin/env python3
"""Draws throughput against concurrency per backend as an SVG line chart.

    chart.py sweep.csv throughput.svg      (CSV: backend,clients,rps,p99_ms)

No plotting library needed: the SVG is written by hand.
"""
import csv
import math
import sys
from collections import defaultdict

COLORS = ["#444444", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]


def main(src, dst):
    series = defaultdict(list)
    with open(src) as f:
        for row in csv.DictReader(f):
            if row["rps"]:
                series[row["backend"]].append((int(row["clients"]), float(row["rps"])))
    if not series:
        sys.exit("no data in " + src)
    w, h, left, right, top, bottom = 760, 440, 80, 150, 40, 60
    xs = sorted({c for s in series.values() for c, _ in s})
    ymax = max(r for s in series.values() for _, r in s) * 1.1
    step = 10 ** math.floor(math.log10(ymax / 5))
    step = next(m * step for m in (1, 2, 5, 10) if ymax / (m * step) <= 6)

    def px(c):
        i = xs.index(c)
        return left + (w - left - right) * i / max(1, len(xs) - 1)

    def py(r):
        return top + (h - top - bottom) * (1 - r / ymax)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2 - 60}" y="22" font-size="15">keygate: lookups/s vs concurrent clients (cache off)</text>']
    y = 0.0
    while y <= ymax:
        out.append(f'<line x1="{left}" x2="{w - right}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{py(y) + 4:.1f}" text-anchor="end">{int(y):,}</text>')
        y += step
    for c in xs:
        out.append(f'<text x="{px(c):.1f}" y="{h - bottom + 18}" text-anchor="middle">{c}</text>')
    out.append(f'<text x="{(left + w - right) / 2}" y="{h - 15}" text-anchor="middle">concurrent Wazuh-style clients</text>')
    for i, (name, pts) in enumerate(sorted(series.items())):
        color = COLORS[i % len(COLORS)]
        pts.sort()
        path = " ".join(f"{px(c):.1f},{py(r):.1f}" for c, r in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
        for c, r in pts:
            out.append(f'<circle cx="{px(c):.1f}" cy="{py(r):.1f}" r="3" fill="{color}"/>')
        ly = top + 20 + i * 20
        out.append(f'<line x1="{w - right + 15}" x2="{w - right + 35}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{w - right + 40}" y="{ly + 4}">{name}</text>')
    out.append("</svg>")
    with open(dst, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
