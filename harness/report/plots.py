"""Inline SVG plots, written as strings: no plotting library, no network, no script.

Every function returns one `<svg>` element (without an xmlns attribute: inline
SVG in HTML5 needs none, and the report must not name any http URL) with
`<title>` tooltips on the marks. Labels are escaped here.
"""

from __future__ import annotations

import math
from html import escape
from typing import NamedTuple

from harness.backends import registry

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
# each backend's (and RL baseline's) own colour, from the registry
FIXED = registry.colours()
# other names draw from the palette minus the fixed colours, so that no engine borrows another's colour
_FREE = [c for c in PALETTE if c not in FIXED.values()]
FONT = "font-family:system-ui,sans-serif;font-size:11px"
LOG_FLOOR_DECADE = -17  # below float64 resolution of a logprob difference: nothing lower is worth an axis


def color_for(name: str, order: list[str] | None = None) -> str:
    if name in FIXED:
        return FIXED[name]
    i = (order.index(name) if order and name in order else sum(map(ord, name)))
    return _FREE[i % len(_FREE)]


def fmt(x: float) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and not math.isfinite(x):
        return "NaN" if math.isnan(x) else ("∞" if x > 0 else "−∞")
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1e4 or a < 1e-3:
        return f"{x:.2e}"
    return f"{x:.4g}"


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    out, t = [], start
    while t <= hi + 1e-12 * abs(hi) + 1e-300:
        out.append(round(t, 12))
        t += step
    return out


class _Frame:
    """Plot area with margins; maps data to pixels."""

    def __init__(self, width: int, height: int, x0: float, x1: float, y0: float, y1: float,
                 left: int = 56, right: int = 12, top: int = 22, bottom: int = 34):
        self.w, self.h = width, height
        self.l, self.r, self.t, self.b = left, width - right, top, height - bottom
        self.x0, self.x1 = x0, (x1 if x1 > x0 else x0 + 1)
        self.y0, self.y1 = y0, (y1 if y1 > y0 else y0 + 1)

    def px(self, x: float) -> float:
        return self.l + (x - self.x0) / (self.x1 - self.x0) * (self.r - self.l)

    def py(self, y: float) -> float:
        return self.b - (y - self.y0) / (self.y1 - self.y0) * (self.b - self.t)


def _open(width: int, height: int, label: str) -> list[str]:
    return [f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{escape(label)}" style="{FONT}">', f"<title>{escape(label)}</title>",
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>']


def _axes(f: _Frame, xticks: list[tuple[float, str]], yticks: list[tuple[float, str]], x_label: str,
          y_label: str, title: str) -> list[str]:
    out = [f'<rect x="{f.l}" y="{f.t}" width="{f.r - f.l}" height="{f.b - f.t}" fill="none" stroke="#bbb"/>']
    for y, lab in yticks:
        py = f.py(y)
        out.append(f'<line x1="{f.l}" x2="{f.r}" y1="{py:.1f}" y2="{py:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{f.l - 4}" y="{py + 3:.1f}" text-anchor="end" fill="#444">{escape(lab)}</text>')
    for x, lab in xticks:
        px = f.px(x)
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{f.b}" y2="{f.b + 4}" stroke="#999"/>')
        out.append(f'<text x="{px:.1f}" y="{f.b + 15}" text-anchor="middle" fill="#444">{escape(lab)}</text>')
    if x_label:
        out.append(f'<text x="{(f.l + f.r) / 2:.0f}" y="{f.h - 3}" text-anchor="middle" fill="#222">'
                   f'{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text x="11" y="{(f.t + f.b) / 2:.0f}" text-anchor="middle" fill="#222" '
                   f'transform="rotate(-90 11 {(f.t + f.b) / 2:.0f})">{escape(y_label)}</text>')
    if title:
        out.append(f'<text x="{f.l}" y="14" fill="#222" font-weight="600">{escape(title)}</text>')
    return out


def _legend(f: _Frame, names: list[tuple[str, str]]) -> list[str]:
    out, x = [], f.r
    for name, color in reversed(names):
        wtxt = 7 * len(name) + 16
        x -= wtxt
        out.append(f'<rect x="{x}" y="6" width="10" height="10" fill="{color}"/>'
                   f'<text x="{x + 13}" y="15" fill="#222">{escape(name)}</text>')
    return out


def logprob_diff_plot(series: list[tuple[str, str, list[float | None]]], *, threshold: float | None = None,
                      divergence: int | None = None, width: int = 640, height: int = 180,
                      title: str = "|Δ logprob| vs reference per completion token") -> str:
    """|dlogp| per token position on a log axis, one polyline per backend.

    `series`: (name, color, per-position dlogp or None where there is no value). Exact zeros sit on the
    floor line; non-finite values (one side -inf) are drawn as triangles on the top edge."""
    finite = [abs(v) for _, _, vs in series for v in vs if v is not None and math.isfinite(v) and v != 0]
    lo = math.floor(math.log10(min(finite))) if finite else -8
    hi = math.ceil(math.log10(max(finite))) if finite else 0
    if threshold and threshold > 0:
        lo, hi = min(lo, math.floor(math.log10(threshold)) - 1), max(hi, math.ceil(math.log10(threshold)))
    lo = max(lo, -17)
    if hi <= lo:
        hi = lo + 1
    n = max((len(vs) for _, _, vs in series), default=1)
    f = _Frame(width, height, -0.5, n - 0.5, lo - 0.3, hi + 0.35)
    step = max(1, math.ceil(n / 16))
    xt = [(i, str(i)) for i in range(0, n, step)]
    ystep = max(1, math.ceil((hi - lo) / 6))
    yt = [(e, f"1e{e}") for e in range(hi, lo - 1, -ystep)]
    out = _open(width, height, title)
    out += _axes(f, xt, yt, "completion token position", "|Δ logprob|", title)
    if divergence is not None:
        px = f.px(divergence - 0.5)
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{f.t}" y2="{f.b}" stroke="#c00" stroke-dasharray="4 3">'
                   f'<title>first token divergence at position {divergence}</title></line>')
    if threshold and threshold > 0:
        py = f.py(math.log10(threshold))
        out.append(f'<line x1="{f.l}" x2="{f.r}" y1="{py:.1f}" y2="{py:.1f}" stroke="#c00" stroke-width="1"'
                   f' stroke-dasharray="6 3"><title>tolerance {fmt(threshold)}</title></line>')
        out.append(f'<text x="{f.l + 3}" y="{py - 3:.1f}" fill="#c00">tolerance {fmt(threshold)}</text>')
    for name, color, vs in series:
        pts = []
        marks = []
        for i, v in enumerate(vs):
            if v is None:
                if len(pts) > 1:
                    marks.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{color}" '
                                 f'stroke-width="1.5" opacity="0.8"/>')
                pts = []
                continue
            tip = f"{name} pos {i}: Δ={fmt(v)}"
            if not math.isfinite(v):
                x = f.px(i)
                marks.append(f'<path d="M{x - 4:.1f},{f.t + 7} L{x + 4:.1f},{f.t + 7} L{x:.1f},{f.t} Z" '
                             f'fill="{color}"><title>{escape(tip)}</title></path>')
                continue
            y = math.log10(abs(v)) if v != 0 else lo - 0.3
            x, py = f.px(i), f.py(max(y, lo - 0.3))
            pts.append(f"{x:.1f},{py:.1f}")
            marks.append(f'<circle cx="{x:.1f}" cy="{py:.1f}" r="2.6" fill="{color}"><title>{escape(tip)}</title>'
                         f'</circle>')
        if len(pts) > 1:
            out.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{color}" stroke-width="1.5" '
                       f'opacity="0.8"/>')
        out += marks
    out += _legend(f, [(n, c) for n, c, _ in series])
    out.append("</svg>")
    return "".join(out)


def log_histogram(values: list[float], *, color: str, title: str, width: int = 330, height: int = 170,
                  lo: int = -17, hi: int = 1) -> str:
    """Histogram of |dlogp| over decades [1e-k, 1e-k+1), with an exact-zero bar on the left and a
    non-finite bar on the right."""
    zero = sum(1 for v in values if v == 0)
    bad = sum(1 for v in values if not math.isfinite(v))
    fin = [abs(v) for v in values if math.isfinite(v) and v != 0]
    if fin:
        lo = max(lo, math.floor(math.log10(min(fin))))
        hi = max(lo + 1, math.ceil(math.log10(max(fin)) + 1e-12))
    else:  # nothing but exact zeros (or nothing): a short axis is enough
        lo, hi = -8, 0
    edges = list(range(lo, hi))
    bins = [0] * len(edges)
    for v in fin:
        k = min(max(math.floor(math.log10(v)) - lo, 0), len(edges) - 1)
        bins[k] += 1
    labels = ["0"] + [f"1e{e}" for e in edges] + ["∞/NaN"]
    counts = [zero] + bins + [bad]
    top = max(counts) or 1
    f = _Frame(width, height, 0, len(counts), 0, top * 1.1, left=40, bottom=40)
    out = _open(width, height, title)
    yt = [(t, str(int(t))) for t in _nice_ticks(0, top, 4) if t == int(t)]
    step = max(1, math.ceil(len(labels) / 8))
    last = len(labels) - 1
    xt = [(i + 0.5, lab) for i, lab in enumerate(labels) if i in (0, last) or (i % step == 0 and last - i >= step)]
    out += _axes(f, xt, yt, "|Δ logprob| (decade lower edge)", "tokens", title)
    bw = (f.r - f.l) / len(counts)
    for i, c in enumerate(counts):
        if not c:
            continue
        x, y = f.px(i), f.py(c)
        fill = "#c00" if i == len(counts) - 1 else ("#999" if i == 0 else color)
        rng = labels[i] if i in (0, len(counts) - 1) else f"[{labels[i]}, 1e{edges[i - 1] + 1})"
        out.append(f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{f.b - y:.1f}" fill="{fill}">'
                   f'<title>{escape(rng)}: {c} tokens</title></rect>')
    out.append("</svg>")
    return "".join(out)


def line_chart(series: list[tuple[str, str, list[tuple[float, float]]]], *, title: str, x_label: str,
               y_label: str, width: int = 640, height: int = 220) -> str:
    """Plain x-y lines (reward curves)."""
    pts_all = [(x, y) for _, _, pts in series for x, y in pts if math.isfinite(x) and math.isfinite(y)]
    if not pts_all:
        pts_all = [(0.0, 0.0), (1.0, 1.0)]
    xs, ys = [p[0] for p in pts_all], [p[1] for p in pts_all]
    ylo, yhi = min(ys), max(ys)
    pad = (yhi - ylo) * 0.05 or 0.5
    xpad = (max(xs) - min(xs)) * 0.02
    f = _Frame(width, height, min(xs) - xpad, max(xs) + xpad, ylo - pad, yhi + pad)
    out = _open(width, height, title)
    out += _axes(f, [(t, fmt(t)) for t in _nice_ticks(f.x0, f.x1)],
                 [(t, fmt(t)) for t in _nice_ticks(f.y0, f.y1)], x_label, y_label, title)
    for name, color, pts in series:
        good = [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
        line = " ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in good)
        out.append(f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="1.8">'
                   f'<title>{escape(name)}</title></polyline>')
        if len(good) <= 60:
            out += [f'<circle cx="{f.px(x):.1f}" cy="{f.py(y):.1f}" r="2.2" fill="{color}">'
                    f'<title>{escape(name)}: x={fmt(x)} y={fmt(y)}</title></circle>' for x, y in good]
    out += _legend(f, [(n, c) for n, c, _ in series])
    out.append("</svg>")
    return "".join(out)


def bar_chart(bars: list[tuple[str, str, float]], *, title: str, unit: str = "", width: int = 360,
              height: int = 200) -> str:
    """One bar per (label, color, value): benchmark figures."""
    vals = [v for _, _, v in bars if v is not None and math.isfinite(v)]
    top = max(vals + [0.0]) or 1.0
    bottom = min(vals + [0.0])
    f = _Frame(width, height, 0, max(len(bars), 1), bottom, top * 1.12, left=56, bottom=40)
    out = _open(width, height, title)
    xt = [(i + 0.5, lab) for i, (lab, _, _) in enumerate(bars)]
    out += _axes(f, xt, [(t, fmt(t)) for t in _nice_ticks(f.y0, f.y1, 4)], "", unit, title)
    bw = (f.r - f.l) / max(len(bars), 1)
    for i, (lab, color, v) in enumerate(bars):
        if v is None or not math.isfinite(v):
            continue
        x, y0, y1 = f.px(i), f.py(max(v, 0)), f.py(min(v, 0))
        out.append(f'<rect x="{x + bw * 0.15:.1f}" y="{y0:.1f}" width="{bw * 0.7:.1f}" height="{y1 - y0:.1f}" '
                   f'fill="{color}"><title>{escape(lab)}: {fmt(v)} {escape(unit)}</title></rect>')
        out.append(f'<text x="{x + bw / 2:.1f}" y="{y0 - 3:.1f}" text-anchor="middle" fill="#222">'
                   f'{escape(fmt(v))}</text>')
    out.append("</svg>")
    return "".join(out)


class Band(NamedTuple):
    """One series of a band chart, x = step index: per-step mean, its lo..hi band, optionally each seed's own
    curve (`seeds`: (label, values)) and the per-step count behind the mean (`n`). None is a missing value."""

    name: str
    color: str
    mean: list
    lo: list
    hi: list
    seeds: list = []
    n: list | None = None


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _segments(idx_vals: list[tuple[int, float | None]]) -> list[list[tuple[int, float]]]:
    """Runs of consecutive present values: a missing step breaks a line rather than bridging it."""
    out, cur = [], []
    for i, v in idx_vals:
        if v is None:
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append((i, v))
    if cur:
        out.append(cur)
    return out


def band_chart(bands: list[Band], *, title: str, y_label: str, x_label: str = "step", log_y: bool = False,
               threshold: float | None = None, width: int = 720, height: int = 240) -> str:
    """Per-step mean line with a shaded lo..hi band per series, thin per-seed lines, an optional dashed
    threshold; linear or log y.

    On a log axis the bottom of the axis is a floor: values <= 0 (a k3 of exactly 0, the lower end of a
    t-interval that includes 0) and values below it are drawn on it, and its tick reads "<=1e<k>". The
    floor sits one decade under the smallest positive mean/hi/seed value when anything falls below that
    value, so an exact zero is never mistaken for the smallest measured value."""
    def vals(b: Band, which: str) -> list:
        if which == "seeds":
            return [v for _, vs in b.seeds for v in vs]
        return list(getattr(b, which))

    main = [v for b in bands for w in ("mean", "hi", "seeds") for v in vals(b, w) if _finite(v)]
    every = main + [v for b in bands for v in b.lo if _finite(v)]
    n_steps = max((len(b.mean) for b in bands), default=0) or 1
    if log_y:
        pos = [v for v in main if v > 0] + ([threshold] if threshold and threshold > 0 else [])
        lo_e = max(math.floor(math.log10(min(pos))), LOG_FLOOR_DECADE) if pos else -12
        hi_e = math.ceil(math.log10(max(pos))) if pos else 0
        below = any(v < 10.0 ** lo_e for v in every)
        floor_e = max(lo_e - 1, LOG_FLOOR_DECADE) if below else lo_e
        hi_e = max(hi_e, floor_e + 1)

        def ty(v: float) -> float:
            return max(math.log10(v), floor_e) if v > 0 else floor_e

        f = _Frame(width, height, -0.3, n_steps - 1 + 0.3, floor_e, hi_e + 0.15)
        ystep = max(1, math.ceil((hi_e - floor_e) / 7))
        yt = [(e, f"1e{e}") for e in range(hi_e, floor_e - 1, -ystep)]
        if below:  # the floor's own tick; a regular tick right above it would overprint it
            gap = 1 if ystep == 1 else 2
            yt = [(e, lab) for e, lab in yt if e - floor_e >= gap] + [(floor_e, f"≤1e{floor_e}")]
    else:
        ys = every or [0.0, 1.0]
        ylo, yhi = min(ys), max(ys)
        if threshold is not None and _finite(threshold):
            ylo, yhi = min(ylo, threshold), max(yhi, threshold)
        pad = (yhi - ylo) * 0.05 or 0.5

        def ty(v: float) -> float:
            return v

        f = _Frame(width, height, -0.3, n_steps - 1 + 0.3, ylo - pad, yhi + pad)
        yt = [(t, fmt(t)) for t in _nice_ticks(f.y0, f.y1)]
    xstep = max(1, math.ceil(n_steps / 12))
    out = _open(width, height, title)
    out += _axes(f, [(i, str(i)) for i in range(0, n_steps, xstep)], yt, x_label, y_label, title)

    def pt(i: int, v: float) -> str:
        return f"{f.px(i):.1f},{f.py(ty(v)):.1f}"

    for b in bands:  # all bands first, so that no band covers another series' line
        both = [(i, (lo, hi)) if _finite(lo) and _finite(hi) else (i, None)
                for i, (lo, hi) in enumerate(zip(b.lo, b.hi))]
        for seg in _segments(both):
            ring = [pt(i, hi) for i, (_, hi) in seg] + [pt(i, lo) for i, (lo, _) in reversed(seg)]
            out.append(f'<polygon points="{" ".join(ring)}" fill="{b.color}" fill-opacity="0.18" stroke="none">'
                       f'<title>{escape(b.name)}: band</title></polygon>')
    for b in bands:
        for label, vs in b.seeds:
            for seg in _segments([(i, v if _finite(v) else None) for i, v in enumerate(vs)]):
                out.append(f'<polyline points="{" ".join(pt(i, v) for i, v in seg)}" fill="none" '
                           f'stroke="{b.color}" stroke-width="0.8" opacity="0.45">'
                           f'<title>{escape(f"{b.name} seed {label}")}</title></polyline>')
    for b in bands:
        mean = [(i, v if _finite(v) else None) for i, v in enumerate(b.mean)]
        for seg in _segments(mean):
            out.append(f'<polyline points="{" ".join(pt(i, v) for i, v in seg)}" fill="none" stroke="{b.color}" '
                       f'stroke-width="1.8"><title>{escape(b.name)}: mean</title></polyline>')
        if len(b.mean) <= 60:
            for i, v in mean:
                if v is None:
                    continue
                lo = b.lo[i] if i < len(b.lo) else None
                hi = b.hi[i] if i < len(b.hi) else None
                n = f", {b.n[i]} seeds" if b.n and i < len(b.n) and b.n[i] is not None else ""
                tip = f"{b.name} step {i}: {fmt(v)} [{fmt(lo)}, {fmt(hi)}]{n}"
                out.append(f'<circle cx="{f.px(i):.1f}" cy="{f.py(ty(v)):.1f}" r="2.2" fill="{b.color}">'
                           f'<title>{escape(tip)}</title></circle>')
    if threshold is not None and _finite(threshold) and (threshold > 0 or not log_y):
        py = f.py(ty(threshold))
        out.append(f'<line x1="{f.l}" x2="{f.r}" y1="{py:.1f}" y2="{py:.1f}" stroke="#c00" stroke-width="1" '
                   f'stroke-dasharray="6 3"><title>threshold {fmt(threshold)}</title></line>')
        out.append(f'<text x="{f.l + 3}" y="{py - 3:.1f}" fill="#c00">threshold {fmt(threshold)}</text>')
    out += _legend(f, [(b.name, b.color) for b in bands])
    out.append("</svg>")
    return "".join(out)


class Interval(NamedTuple):
    """One row of an equivalence chart: a difference and its interval, in units of its margin."""

    label: str
    diff: float | None
    lo: float | None
    hi: float | None
    outcome: str  # equivalent | different | inconclusive
    tip: str = ""


OUTCOME_COLORS = {"equivalent": "#2ca02c", "different": "#d62728", "inconclusive": "#e6a700"}


def equivalence_chart(rows: list[Interval], *, title: str, x_label: str = "difference / margin",
                      width: int = 720, row_height: int = 18) -> str:
    """A forest plot: per row the difference (dot) and its interval (bar), both divided by the row's margin,
    against dashed lines at -1 and +1 (the margin) and a solid line at 0; coloured by outcome. An interval
    inside the dashed lines is what equivalence means. Rows reaching past the axis are clipped at its edge
    (the tooltip keeps the value)."""
    vals = [abs(v) for r in rows for v in (r.diff, r.lo, r.hi) if _finite(v)]
    reach = min(max([1.5] + [v * 1.1 for v in vals]), 6.0)
    left = max([120] + [7 * len(r.label) + 10 for r in rows])
    height = 22 + 34 + row_height * max(len(rows), 1)
    f = _Frame(width, height, -reach, reach, 0, max(len(rows), 1), left=min(left, width // 2))
    out = _open(width, height, title)
    xt = [(t, fmt(t)) for t in _nice_ticks(-reach, reach, 6)]
    out += _axes(f, xt, [], x_label, "", title)

    def cx(v: float) -> float:
        return f.px(max(-reach, min(reach, v)))

    for x, dash in ((-1.0, "6 3"), (1.0, "6 3"), (0.0, "")):
        out.append(f'<line x1="{f.px(x):.1f}" x2="{f.px(x):.1f}" y1="{f.t}" y2="{f.b}" stroke="{"#c00" if dash else "#888"}" '
                   f'stroke-width="1"{f" stroke-dasharray={chr(34)}{dash}{chr(34)}" if dash else ""}>'
                   f'<title>{"margin" if dash else "no difference"}</title></line>')
    for i, r in enumerate(rows):
        y = f.py(len(rows) - i - 0.5)
        color = OUTCOME_COLORS.get(r.outcome, "#555")
        out.append(f'<text x="{f.l - 4}" y="{y + 3:.1f}" text-anchor="end" fill="#222">{escape(r.label)}</text>')
        tip = escape(r.tip or f"{r.label}: {r.outcome}")
        if _finite(r.lo) and _finite(r.hi):
            out.append(f'<line x1="{cx(r.lo):.1f}" x2="{cx(r.hi):.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{color}" '
                       f'stroke-width="3"><title>{tip}</title></line>')
        if _finite(r.diff):
            out.append(f'<circle cx="{cx(r.diff):.1f}" cy="{y:.1f}" r="3.5" fill="{color}"><title>{tip}</title>'
                       "</circle>")
    out += _legend(f, [(k, c) for k, c in OUTCOME_COLORS.items()])
    out.append("</svg>")
    return "".join(out)
