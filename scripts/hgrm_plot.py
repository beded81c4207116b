#!/usr/bin/env python3
"""Plot HdrHistogram percentile distributions (.hgrm files) as one SVG.

Reads the text format that `sockpool-client bench --hgrm FILE` writes (the
`Value Percentile TotalCount 1/(1-Percentile)` table of wrk2 and HdrHistogram's
`outputPercentileDistribution`, values in milliseconds) and draws latency by
percentile, one line per file, as HdrHistogram's own plotter does: the x axis is
1/(1-percentile) on a log scale, so 90%, 99%, 99.9% ... are evenly spaced and the
tail gets as much room as the median.

Only the Python standard library: the SVG is written by hand, so the script runs
wherever python3 does (matplotlib is not needed).

Usage:
    scripts/hgrm_plot.py [-o OUT.svg] [--title TEXT] [--log-y] [LABEL=]FILE.hgrm ...

Each input is a file, or LABEL=FILE to name its line (default: the file name
without .hgrm). Writes to stdout without -o.
"""

import argparse
import math
import os
import sys
from xml.sax.saxutils import escape

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
WIDTH, HEIGHT = 900, 540
LEFT, RIGHT, TOP, BOTTOM = 80, 200, 50, 60


def parse_hgrm(text):
    """Returns [(percentile 0..1, value ms)] from an .hgrm text; raises
    ValueError if there is no table."""
    points = []
    in_table = False
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "Value" and "Percentile" in line:
            in_table = True
            continue
        if line.startswith("#"):
            if in_table:
                break
            continue
        if not in_table or len(fields) < 3:
            continue
        try:
            value, percentile = float(fields[0]), float(fields[1])
        except ValueError:
            continue
        points.append((percentile, value))
    if not points:
        raise ValueError("no percentile table")
    return points


def x_of(percentile, x_max):
    """Log10 of 1/(1-p), with p = 1 (the max) drawn at the axis' end."""
    if percentile >= 1.0:
        return x_max
    return min(math.log10(1.0 / (1.0 - percentile)), x_max)


def nice_step(span):
    raw = span / 6.0
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * magnitude:
            return m * magnitude
    return 10 * magnitude


def percentile_label(decade):
    if decade == 0:
        return "0%"
    nines = 100.0 - 100.0 / 10 ** decade
    text = f"{nines:.{max(decade - 2, 0)}f}"
    return text + "%"


def render(series, title, log_y):
    # The x axis runs to the decade past the highest finite 1/(1-p) of any file.
    finite = [x_of(p, 99) for _, pts in series for p, _ in pts if p < 1.0]
    decades = max(2, math.ceil(max(finite, default=2) + 1e-9))
    x_max = float(decades)
    values = [v for _, pts in series for _, v in pts]
    v_max = max(values) if values else 1.0
    if log_y:
        positive = [v for v in values if v > 0] or [0.001]
        y_lo = 10 ** math.floor(math.log10(min(positive)))
        y_hi = 10 ** math.ceil(math.log10(max(v_max, y_lo * 10)))
    else:
        step = nice_step(v_max if v_max > 0 else 1.0)
        y_lo, y_hi = 0.0, step * math.ceil((v_max if v_max > 0 else 1.0) / step)

    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x):
        return LEFT + plot_w * x / x_max

    def py(v):
        if log_y:
            v = max(v, y_lo)
            frac = (math.log10(v) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo))
        else:
            frac = (v - y_lo) / (y_hi - y_lo)
        return TOP + plot_h * (1.0 - frac)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{LEFT + plot_w / 2}" y="28" text-anchor="middle" font-size="16">'
        f"{escape(title)}</text>",
    ]
    # Grid and x labels: one per decade of 1/(1-p).
    for d in range(decades + 1):
        x = px(d)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + plot_h}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{x:.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">'
                   f"{percentile_label(d)}</text>")
    out.append(f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 15}" text-anchor="middle">'
               "percentile (log scale of 1/(1-percentile))</text>")
    # Grid and y labels.
    if log_y:
        ticks = []
        t = y_lo
        while t <= y_hi * 1.0001:
            ticks.append(t)
            t *= 10
    else:
        step = nice_step(y_hi - y_lo)
        ticks = [y_lo + i * step for i in range(int(round((y_hi - y_lo) / step)) + 1)]
    for t in ticks:
        y = py(t)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" '
                   'stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    out.append(f'<text transform="translate(20,{TOP + plot_h / 2}) rotate(-90)" '
               'text-anchor="middle">latency (ms)</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" '
               'fill="none" stroke="#333"/>')
    # One line per file, and its legend entry.
    for i, (label, pts) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{px(x_of(p, x_max)):.1f},{py(v):.1f}" for p, v in pts)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" '
                   f'points="{coords}"/>')
        ly = TOP + 10 + 20 * i
        lx = LEFT + plot_w + 15
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 20}" y2="{ly}" '
                   f'stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{lx + 26}" y="{ly + 4}">{escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", metavar="[LABEL=]FILE")
    parser.add_argument("-o", "--output", help="SVG file to write (default: stdout)")
    parser.add_argument("--title", default="Latency by percentile")
    parser.add_argument("--log-y", action="store_true", help="log scale for latency")
    args = parser.parse_args(argv)
    series = []
    for item in args.inputs:
        label, sep, path = item.partition("=")
        if not sep:
            path = item
            label = os.path.basename(item)
            if label.endswith(".hgrm"):
                label = label[: -len(".hgrm")]
        try:
            with open(path, encoding="utf-8") as f:
                series.append((label, parse_hgrm(f.read())))
        except OSError as err:
            reason = (err.strerror or str(err)).lower()
            print(f"error: cannot read {path}: {reason}", file=sys.stderr)
            return 1
        except ValueError as err:
            print(f"error: cannot read {path}: {err}", file=sys.stderr)
            return 1
    svg = render(series, args.title, args.log_y)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(svg)
    else:
        sys.stdout.write(svg)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
