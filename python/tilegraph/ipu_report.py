"""HTML report of a program on tilegraph's emulated IPU ("IPU Model"), after Graphcore's
PopVision Graph Analyser.

    python -m tilegraph.ipu_report report.json report.html

render_html(report) turns the IPU Model's JSON report (a dict, format "tilegraph-ipu-report"
version 1) into one self-contained HTML page with no network resources; write_html(report,
path) writes it to a file. Every cycle, time and throughput figure is an estimate of the IPU
Model, not a measurement, and the page says so. The page shows:
  - a summary: target, IPUs, whether the program fits, cycles, time per step, throughput;
  - per IPU, the memory of every tile stacked by category, against the tile capacity;
  - memory liveness over the program steps: live bytes and the fullest tile, per IPU;
  - an execution trace of the compute sets (sync / exchange / compute, one lane per IPU),
    the longest compute sets and the cycles per operation;
  - the overflowing tiles and the largest contributors with their source file:line.
The report is embedded as JSON; the page's script draws everything when it loads. Exact
values sit in data-value / data-* attributes beside the readable text. Standard library only.
"""
import base64
import hashlib
import html
import json
import math
import os
import re
import sys


def render_html(report: dict) -> str:
    """The report as one self-contained HTML page."""
    target_name = (report.get("target") or {}).get("name", "IPU")
    script_hash = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
    parts = {
        "title": html.escape(f"tilegraph IPU report: {target_name}"),
        "script_hash": script_hash,
        "style": _STYLE,
        "data": _embeddable_json(report),
        "script": _SCRIPT,
    }
    # One pass over the template, so text substituted in is never itself substituted.
    return re.sub(r"\{\{(\w+)\}\}", lambda m: parts[m.group(1)], _TEMPLATE)


def write_html(report: dict, path) -> str:
    """Writes render_html(report) to path; returns the path."""
    path = os.fspath(path)
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_html(report))
    return path


def _embeddable_json(report: dict) -> str:
    """The report as JSON that can sit inside a <script> element, and still parses back to it.

    In a script element the HTML parser only reacts to "</script" and "<!--"; every "<", ">"
    and "&" (in JSON they only occur inside strings) becomes a \\u escape, which keeps the
    text inert and equal once parsed. NaN / infinities (not JSON) become null."""
    text = json.dumps(_finite(report), separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{{script_hash}}'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{title}}</title>
<style>{{style}}</style>
</head>
<body>
<header>
<h1>tilegraph IPU report</h1>
<p id="estimate-note" class="note">Cycles, times and throughput are <b>estimates</b> of the
IPU Model (tilegraph's emulated IPU), not measurements on IPU hardware.</p>
</header>
<noscript><p class="banner">This report is drawn by JavaScript; enable it to see the report.</p></noscript>
<div id="banners"></div>
<section id="summary"><h2>Summary</h2></section>
<section id="tile-memory"><h2>Memory per tile</h2></section>
<section id="liveness"><h2>Memory liveness</h2></section>
<section id="trace"><h2>Execution trace (estimate)</h2></section>
<section id="overflows"><h2>Overflowing tiles</h2></section>
<section id="largest"><h2>Largest contributors</h2></section>
<div id="tooltip" hidden></div>
<script type="application/json" id="report-data">{{data}}</script>
<script>{{script}}</script>
</body>
</html>
"""

_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 24px 40px; color: #222; }
h1 { font-size: 22px; margin: 16px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 16px 0 6px; }
.note { color: #555; margin: 4px 0; }
.banner { background: #c62828; color: #fff; font-weight: 600; padding: 10px 14px;
          border-radius: 4px; margin: 12px 0; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { border: 1px solid #ddd; border-radius: 4px; padding: 8px 12px; min-width: 150px; }
.card .label { color: #666; font-size: 12px; }
.card .value { font-size: 18px; font-weight: 600; }
.card .detail { color: #666; font-size: 12px; }
.value.bad { color: #c62828; }
table { border-collapse: collapse; margin: 6px 0; font-size: 13px; }
th, td { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: left;
         max-width: 420px; overflow-wrap: anywhere; }
th { background: #f4f4f4; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.frame { padding-left: 90px; margin: 4px 0 2px; }
.plot { position: relative; border-left: 1px solid #999; border-bottom: 1px solid #999; }
.plot svg { display: block; width: 100%; height: 100%; }
.y-tick { position: absolute; right: 100%; transform: translateY(-50%); padding-right: 6px;
          font-size: 11px; color: #555; white-space: nowrap; }
.x-ticks { display: flex; justify-content: space-between; font-size: 11px; color: #555; }
.legend { display: flex; flex-wrap: wrap; gap: 12px; font-size: 12px; margin: 4px 0 4px 90px; }
.swatch { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
rect.tile, rect.cs-bar, rect.hover-area { fill: transparent; }
rect.tile.over { fill: rgba(198, 40, 40, 0.12); }
rect.tile:hover, rect.cs-bar:hover { fill: rgba(0, 0, 0, 0.25); }
line.capacity { stroke: #c62828; stroke-width: 1.5; stroke-dasharray: 5 3; }
polyline { fill: none; stroke-width: 1.5; }
#tooltip { position: fixed; z-index: 10; pointer-events: none; background: #fff;
           border: 1px solid #999; padding: 6px 8px; font-size: 12px; white-space: pre;
           box-shadow: 0 2px 6px rgba(0, 0, 0, 0.2); }
"""

# Drawn with the DOM API only: text from the report is always set as text, never as markup.
_SCRIPT = r"""
"use strict";
const renderStart = performance.now();
const report = JSON.parse(document.getElementById("report-data").textContent);
const target = report.target || {};
const capacity = target.bytes_per_tile || 0;
const isEstimate = report.estimate !== false;

const MAX_TILE_BARS = 1536;     // more tiles than this: one bar per group (its fullest tile)
const MAX_LINE_POINTS = 2000;   // liveness lines: the maximum of each bucket of steps
const MAX_TRACE_BARS = 2000;    // per IPU lane: consecutive compute sets merged beyond this
const TOP_COMPUTE_SETS = 25;
const MAX_TABLE_ROWS = 200;
const CATEGORY_ORDER = ["variables", "activations", "exchange", "vertex_state", "code"];
const PALETTE = ["#4e79a7", "#59a14f", "#f28e2b", "#b07aa1", "#9c755f", "#76b7b2", "#edc948",
                 "#ff9da7", "#bab0ac", "#e15759"];
const PHASES = [["sync", "#9e9e9e"], ["exchange", "#f28e2b"], ["compute", "#4e79a7"]];
const SVG_NS = "http://www.w3.org/2000/svg";

// ---- formatting: readable text; exact values go to data-value attributes ----
function withCommas(n) {
  if (n == null || !isFinite(n)) return "n/a";
  const [whole, fraction] = String(n).split(".");
  return whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + (fraction ? "." + fraction : "");
}
function formatBytes(n) {
  if (n == null) return "n/a";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let scaled = n, unit = 0;
  while (Math.abs(scaled) >= 1024 && unit < units.length - 1) { scaled /= 1024; unit++; }
  if (unit === 0) return withCommas(n) + " B";
  return scaled.toFixed(Math.abs(scaled) >= 100 ? 0 : Math.abs(scaled) >= 10 ? 1 : 2) + " " + units[unit];
}
function formatSeconds(s) {
  if (s == null) return "n/a";
  if (s < 1e-3) return (s * 1e6).toFixed(1) + " \u00b5s";
  if (s < 1) return (s * 1e3).toFixed(2) + " ms";
  return s.toFixed(3) + " s";
}
const formatCycles = n => withCommas(n);
const formatPercent = fraction => (100 * fraction).toFixed(1) + "%";
const cyclesOf = cs => (cs.sync_cycles || 0) + (cs.exchange_cycles || 0) + (cs.compute_cycles || 0);
const ipuColor = ipu => PALETTE[ipu % PALETTE.length];

// ---- DOM helpers ----
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, val] of Object.entries(attrs || {})) if (val != null) node.setAttribute(name, val);
  for (const child of children) if (child != null) node.append(child instanceof Node ? child : String(child));
  return node;
}
function svgEl(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, val] of Object.entries(attrs || {})) if (val != null) node.setAttribute(name, val);
  return node;
}
const rawValue = raw => raw == null ? "null" : String(raw);
function valueSpan(id, raw, text, bad) {
  return el("span", {id, class: bad ? "value bad" : "value", "data-value": rawValue(raw)}, text);
}
function card(label, value, detail) {
  return el("div", {class: "card"}, el("div", {class: "label"}, label), value,
            detail ? el("div", {class: "detail"}, detail) : null);
}
function section(id) { return document.getElementById(id); }
function note(text) { return el("p", {class: "note"}, text); }

// columns: [{key, title, format?, get?}]; numeric (formatted) cells keep the raw value.
function table(columns, rows, rowAttrs) {
  const head = el("tr", {}, ...columns.map(c => el("th", {class: c.format ? "num" : null}, c.title)));
  const body = el("tbody");
  for (const row of rows) {
    const tr = el("tr", rowAttrs ? rowAttrs(row) : {});
    for (const c of columns) {
      const raw = c.get ? c.get(row) : row[c.key];
      tr.append(c.format
        ? el("td", {class: "num", "data-key": c.key, "data-value": rawValue(raw)}, c.format(raw))
        : el("td", {"data-key": c.key}, raw == null ? "" : String(raw)));
    }
    body.append(tr);
  }
  return el("table", {}, el("thead", {}, head), body);
}
function limitedRows(rows, what) {
  if (rows.length <= MAX_TABLE_ROWS) return [rows, null];
  return [rows.slice(0, MAX_TABLE_ROWS),
          note(`Showing the first ${MAX_TABLE_ROWS} of ${withCommas(rows.length)} ${what}.`)];
}

// A chart with y labels at fractions of its height (0 = top) and x labels spread below.
function plotFrame(chart, heightPx, yTicks, xTicks) {
  const plot = el("div", {class: "plot"}, chart);
  plot.style.height = heightPx + "px";
  for (const [fraction, text] of yTicks) {
    const label = el("span", {class: "y-tick"}, text);
    label.style.top = (100 * fraction) + "%";
    plot.append(label);
  }
  const frame = el("div", {class: "frame"}, plot);
  if (xTicks) frame.append(el("div", {class: "x-ticks"}, ...xTicks.map(t => el("span", {}, t))));
  return frame;
}
// Labels for a byte axis from 0 to top, with the capacity line's (which wins when they would overlap).
function valueTicks(top, capacity) {
  const ticks = [[1, "0"]];
  if (!capacity || capacity / top < 0.9) ticks.push([0, formatBytes(Math.round(top))]);
  if (capacity) ticks.push([1 - capacity / top, "capacity " + formatBytes(capacity)]);
  return ticks;
}
function legend(items) {  // [[label, color]]
  return el("div", {class: "legend"}, ...items.map(([label, color]) => {
    const swatch = el("span", {class: "swatch"});
    swatch.style.background = color;
    return el("span", {}, swatch, label);
  }));
}
function groupByIpu(items) {
  const groups = new Map();
  for (const item of items) {
    const ipu = item.ipu || 0;
    if (!groups.has(ipu)) groups.set(ipu, []);
    groups.get(ipu).push(item);
  }
  return new Map([...groups.entries()].sort((a, b) => a[0] - b[0]));
}

// ---- tooltip: elements with a class in tipBuilders show its text on hover ----
const tipBuilders = {};
const tooltip = document.getElementById("tooltip");
document.addEventListener("mousemove", event => {
  const node = event.target;
  const kind = node.classList ? Object.keys(tipBuilders).find(k => node.classList.contains(k)) : null;
  const text = kind ? tipBuilders[kind](node, event) : null;
  if (!text) { tooltip.hidden = true; return; }
  tooltip.textContent = text;
  tooltip.hidden = false;
  const x = Math.min(event.clientX + 14, window.innerWidth - tooltip.offsetWidth - 4);
  const y = Math.min(event.clientY + 14, window.innerHeight - tooltip.offsetHeight - 4);
  tooltip.style.left = Math.max(0, x) + "px";
  tooltip.style.top = Math.max(0, y) + "px";
});

// ---- summary ----
function buildBanner() {
  if (report.fits !== false) return;
  const overflowing = (report.ipus || []).reduce((sum, ipu) => sum + (ipu.overflowing_tiles || 0), 0);
  const worst = (report.overflows || [])[0];
  let text = `Does not fit: ${withCommas(overflowing)} tile(s) exceed the ${formatBytes(capacity)} of tile memory.`;
  if (worst) text += ` Worst: IPU ${worst.ipu} tile ${worst.tile}, ${formatBytes(worst.bytes)} (over by ${formatBytes(worst.over_by)}).`;
  section("banners").append(el("div", {id: "does-not-fit-banner", class: "banner"}, text));
}

function buildSummary() {
  const estimate = isEstimate ? " (estimate)" : "";
  const clock = target.clock_hz ? `${(target.clock_hz / 1e9).toFixed(2)} GHz` : "unknown clock";
  const sps = report.samples_per_second;
  const cards = el("div", {class: "cards"},
    card("Target", valueSpan("target-name", target.name, target.name || "unknown"),
         `${withCommas(target.tiles_per_ipu)} tiles/IPU, ${formatBytes(capacity)}/tile, ` +
         `${clock}, ${withCommas(target.workers_per_tile)} workers/tile`),
    card("IPUs", valueSpan("num-ipus", report.num_ipus, withCommas(report.num_ipus))),
    card("Fits in memory", valueSpan("fits", report.fits, report.fits ? "yes" : "NO", !report.fits)),
    card("Total cycles" + estimate, valueSpan("total-cycles", report.total_cycles, formatCycles(report.total_cycles)),
         "one step, all IPUs"),
    card("Time per step" + estimate, valueSpan("seconds-per-step", report.seconds_per_step,
         formatSeconds(report.seconds_per_step)), "at " + clock),
    card("Throughput" + estimate, valueSpan("samples-per-second", sps,
         sps == null ? "n/a" : withCommas(Math.round(sps)) + " samples/s")));
  const perIpu = el("table", {id: "ipu-summary"},
    el("thead", {}, el("tr", {}, ...["IPU", "Max tile memory", "Max tile", "Total memory",
                                     "Overflowing tiles", "Cycles" + estimate]
                                    .map((t, i) => el("th", {class: i ? "num" : null}, t)))));
  const body = el("tbody");
  for (const ipu of report.ipus || []) {
    const n = ipu.ipu;
    const cell = (name, raw, text, bad) => el("td", {class: "num"}, valueSpan(`${name}-ipu${n}`, raw, text, bad));
    body.append(el("tr", {class: "ipu-row", "data-ipu": n}, el("td", {}, "IPU " + n),
      cell("max-tile-bytes", ipu.max_tile_bytes,
           `${formatBytes(ipu.max_tile_bytes)} (${capacity ? formatPercent(ipu.max_tile_bytes / capacity) : "?"})`,
           ipu.max_tile_bytes > capacity),
      cell("max-tile", ipu.max_tile, "tile " + ipu.max_tile),
      cell("total-bytes", ipu.total_bytes, formatBytes(ipu.total_bytes)),
      cell("overflowing-tiles", ipu.overflowing_tiles, withCommas(ipu.overflowing_tiles), ipu.overflowing_tiles > 0),
      cell("cycles", ipu.cycles, formatCycles(ipu.cycles))));
  }
  perIpu.append(body);
  section("summary").append(cards, perIpu);
}

// ---- memory per tile: one stacked bar per tile, a line at the capacity ----
function orderedCategories(categories) {
  const known = CATEGORY_ORDER.filter(c => c in categories);
  return known.concat(Object.keys(categories).filter(c => !CATEGORY_ORDER.includes(c)));
}
const categoryAttr = name => "data-" + String(name).toLowerCase().replace(/[^a-z0-9]+/g, "-");

function buildTileCharts() {
  const memories = report.tile_memory || [];
  if (!memories.length) { section("tile-memory").append(note("No per-tile memory in this report.")); return; }
  for (const memory of memories) section("tile-memory").append(tileChart(memory));
}

function tileChart(memory) {
  const ipu = memory.ipu || 0;
  const categories = memory.categories || {};
  const names = orderedCategories(categories);
  const totals = memory.total || categories[names[0]].map((_, t) => names.reduce((s, c) => s + (categories[c][t] || 0), 0));
  const tiles = totals.length;
  const tilesPerBar = Math.max(1, Math.ceil(tiles / MAX_TILE_BARS));
  const bars = [];
  for (let first = 0; first < tiles; first += tilesPerBar) {
    const last = Math.min(tiles, first + tilesPerBar) - 1;
    let fullest = first;
    for (let t = first + 1; t <= last; t++) if (totals[t] > totals[fullest]) fullest = t;
    bars.push({tile: fullest, first, last});
  }
  let maxTile = 0;
  for (let t = 0; t < tiles; t++) if (totals[t] > totals[maxTile]) maxTile = t;
  const H = 200, top = Math.max(capacity, totals[maxTile] || 0) * 1.05 || 1;
  const y = bytes => (H - bytes / top * H).toFixed(2);
  const chart = svgEl("svg", {class: "tile-chart", "data-ipu": ipu, viewBox: `0 0 ${bars.length} ${H}`,
                               preserveAspectRatio: "none", "shape-rendering": "crispEdges"});
  const stacked = new Float64Array(bars.length);
  names.forEach((name, c) => {
    const values = categories[name];
    let d = "";
    bars.forEach((bar, i) => {
      const v = values[bar.tile] || 0;
      if (v > 0) d += `M${i} ${y(stacked[i] + v)}H${i + 1}V${y(stacked[i])}H${i}Z`;
      stacked[i] += v;
    });
    chart.append(svgEl("path", {class: "category", "data-category": name, d, fill: PALETTE[c % PALETTE.length]}));
  });
  const tileGroup = svgEl("g", {class: "tiles"});
  bars.forEach((bar, i) => {
    const total = totals[bar.tile];
    const attrs = {class: total > capacity ? "tile over" : "tile", x: i, y: 0, width: 1, height: H,
                   "data-ipu": ipu, "data-tile": bar.tile, "data-total": total};
    if (tilesPerBar > 1) { attrs["data-first-tile"] = bar.first; attrs["data-last-tile"] = bar.last; }
    for (const name of names) attrs[categoryAttr(name)] = categories[name][bar.tile] || 0;
    tileGroup.append(svgEl("rect", attrs));
  });
  chart.append(tileGroup);
  if (capacity) chart.append(svgEl("line", {class: "capacity", x1: 0, x2: bars.length, y1: y(capacity), y2: y(capacity),
                                             "vector-effect": "non-scaling-stroke"}));
  const heading = `IPU ${ipu}: fullest tile ${maxTile} holds ${formatBytes(totals[maxTile])}` +
                  (capacity ? ` of ${formatBytes(capacity)} (${formatPercent(totals[maxTile] / capacity)})` : "");
  const yTicks = valueTicks(top, capacity);
  const xTicks = ["tile 0", `tile ${Math.floor((tiles - 1) / 2)}`, `tile ${tiles - 1}`];
  return el("div", {class: "tile-memory-ipu", id: `tile-memory-ipu${ipu}`},
    el("h3", {}, heading),
    tilesPerBar > 1 ? note(`${withCommas(tiles)} tiles, one bar per ${tilesPerBar} tiles (the fullest of them).`) : null,
    legend(names.map((name, c) => [name.replace(/_/g, " "), PALETTE[c % PALETTE.length]]).concat([["capacity", "#c62828"]])),
    plotFrame(chart, 220, yTicks, xTicks));
}
tipBuilders["tile"] = node => {
  const d = node.dataset;
  const lines = [`IPU ${d.ipu}, tile ${d.tile}` + (d.firstTile != null ? ` (fullest of tiles ${d.firstTile}-${d.lastTile})` : "")];
  for (const [key, val] of Object.entries(d))
    if (!["ipu", "tile", "total", "firstTile", "lastTile"].includes(key)) lines.push(`  ${key.replace(/[A-Z]/g, c => " " + c.toLowerCase())}: ${formatBytes(Number(val))}`);
  lines.push(`total: ${formatBytes(Number(d.total))}` + (capacity ? ` (${formatPercent(d.total / capacity)} of capacity)` : ""));
  return lines.join("\n");
};

// ---- memory liveness: live bytes and the fullest tile over the program steps, per IPU ----
function buildLiveness() {
  const entries = report.liveness || [];
  if (!entries.length) { section("liveness").append(note("No liveness data in this report.")); return; }
  let minStep = Infinity, maxStep = -Infinity;
  for (const e of entries) { minStep = Math.min(minStep, e.step); maxStep = Math.max(maxStep, e.step); }
  const span = maxStep - minStep + 1;
  const buckets = Math.min(MAX_LINE_POINTS, span);
  const bucketOf = step => Math.min(buckets - 1, Math.floor((step - minStep) * buckets / span));
  const byIpu = groupByIpu(entries);
  if (buckets < span) section("liveness").append(note(
    `${withCommas(span)} steps drawn as ${withCommas(buckets)} points per line, each the maximum of its steps.`));
  section("liveness").append(
    legend([...byIpu.keys()].map(ipu => ["IPU " + ipu, ipuColor(ipu)])),
    livenessChart("live_bytes", "Live memory (all tiles of the IPU)", byIpu, buckets, bucketOf, minStep, maxStep),
    livenessChart("max_tile_bytes", "Fullest tile", byIpu, buckets, bucketOf, minStep, maxStep),
    livenessPeaks(byIpu));
}

function livenessChart(series, title, byIpu, buckets, bucketOf, minStep, maxStep) {
  const W = 1000, H = 200;
  const peakPerBucket = new Map();  // ipu -> per bucket, the entry with the most bytes
  let top = series === "max_tile_bytes" ? capacity : 0;
  for (const [ipu, entries] of byIpu) {
    const peaks = new Array(buckets);
    for (const e of entries) {
      const b = bucketOf(e.step);
      if (!peaks[b] || e[series] > peaks[b][series]) peaks[b] = e;
      top = Math.max(top, e[series] || 0);
    }
    peakPerBucket.set(ipu, peaks);
  }
  top = top * 1.05 || 1;
  const chart = svgEl("svg", {class: "liveness-chart", "data-series": series, viewBox: `0 0 ${W} ${H}`,
                               preserveAspectRatio: "none"});
  for (const [ipu, peaks] of peakPerBucket) {
    const points = [];
    let max = null;
    peaks.forEach((e, b) => {
      if (!e) return;
      points.push(`${((b + 0.5) / buckets * W).toFixed(2)},${(H - e[series] / top * H).toFixed(2)}`);
      if (!max || e[series] > max[series]) max = e;
    });
    chart.append(svgEl("polyline", {class: "liveness-line", "data-ipu": ipu, "data-series": series,
      "data-points": points.length, "data-max": max[series], "data-max-step": max.step,
      points: points.join(" "), stroke: ipuColor(ipu), "vector-effect": "non-scaling-stroke"}));
  }
  if (series === "max_tile_bytes" && capacity)
    chart.append(svgEl("line", {class: "capacity", x1: 0, x2: W, y1: H - capacity / top * H, y2: H - capacity / top * H,
                                "vector-effect": "non-scaling-stroke"}));
  const hoverArea = svgEl("rect", {class: "hover-area", x: 0, y: 0, width: W, height: H});
  hoverArea.livenessTip = event => {
    const box = hoverArea.getBoundingClientRect();
    const b = Math.max(0, Math.min(buckets - 1, Math.floor((event.clientX - box.left) / box.width * buckets)));
    const lines = [];
    for (const [ipu, peaks] of peakPerBucket) {
      const e = peaks[b];
      if (e) lines.push(`IPU ${ipu}, step ${e.step}: ${formatBytes(e[series])}\n  ${e.label == null ? "" : e.label}`);
    }
    return lines.join("\n");
  };
  chart.append(hoverArea);
  const yTicks = valueTicks(top, series === "max_tile_bytes" ? capacity : 0);
  return el("div", {class: "liveness", id: "liveness-" + series.replace(/_/g, "-")}, el("h3", {}, title),
            plotFrame(chart, 200, yTicks, ["step " + minStep, "step " + maxStep]));
}
tipBuilders["hover-area"] = (node, event) => node.livenessTip ? node.livenessTip(event) : null;

function livenessPeaks(byIpu) {
  const rows = [];
  for (const [ipu, entries] of byIpu) {
    const peak = entries.reduce((a, b) => (b.live_bytes > a.live_bytes ? b : a));
    const fullest = entries.reduce((a, b) => (b.max_tile_bytes > a.max_tile_bytes ? b : a));
    rows.push({ipu, step: peak.step, label: peak.label, live_bytes: peak.live_bytes,
               max_tile_bytes: fullest.max_tile_bytes, max_tile_step: fullest.step});
  }
  return el("div", {id: "liveness-peaks"}, el("h3", {}, "Peak per IPU"), table([
    {key: "ipu", title: "IPU"}, {key: "live_bytes", title: "Peak live memory", format: formatBytes},
    {key: "step", title: "At step"}, {key: "label", title: "Instruction"},
    {key: "max_tile_bytes", title: "Fullest tile", format: formatBytes},
    {key: "max_tile_step", title: "At step"}], rows, row => ({class: "peak-row", "data-ipu": row.ipu})));
}

// ---- execution trace: compute sets along the cycle axis, one lane per IPU ----
function buildTrace() {
  const sets = report.compute_sets || [];
  if (!sets.length) { section("trace").append(note("No compute sets in this report.")); return; }
  const lanes = groupByIpu(sets);
  let endCycle = report.total_cycles || 0;
  for (const cs of sets) endCycle = Math.max(endCycle, (cs.start_cycle || 0) + cyclesOf(cs));
  endCycle = endCycle || 1;
  const W = 1000, laneH = 20, laneGap = 8, H = lanes.size * (laneH + laneGap);
  const chart = svgEl("svg", {class: "trace-chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none",
                              "shape-rendering": "crispEdges"});
  const yTicks = [];
  const notes = [];
  [...lanes.entries()].forEach(([ipu, laneSets], lane) => {
    laneSets.sort((a, b) => (a.start_cycle || 0) - (b.start_cycle || 0));
    const perBar = Math.max(1, Math.ceil(laneSets.length / MAX_TRACE_BARS));
    if (perBar > 1) notes.push(`IPU ${ipu}: ${withCommas(laneSets.length)} compute sets drawn as ` +
                               `${withCommas(Math.ceil(laneSets.length / perBar))} bars of up to ${perBar} consecutive compute sets.`);
    const top = lane * (laneH + laneGap) + laneGap / 2;
    yTicks.push([(top + laneH / 2) / H, "IPU " + ipu]);
    const paths = PHASES.map(() => []);
    const bars = svgEl("g", {class: "cs-bars", "data-ipu": ipu});
    for (let first = 0; first < laneSets.length; first += perBar) {
      const group = laneSets.slice(first, first + perBar);
      const start = group[0].start_cycle || 0;
      let end = start, longest = group[0];
      const phaseCycles = [0, 0, 0];
      for (const cs of group) {
        end = Math.max(end, (cs.start_cycle || 0) + cyclesOf(cs));
        if (cyclesOf(cs) > cyclesOf(longest)) longest = cs;
        PHASES.forEach(([phase], p) => { phaseCycles[p] += cs[phase + "_cycles"] || 0; });
      }
      const busy = phaseCycles[0] + phaseCycles[1] + phaseCycles[2];
      const x0 = start / endCycle * W, width = (end - start) / endCycle * W;
      let x = x0;
      phaseCycles.forEach((cycles, p) => {   // phases split the bar in proportion (exact for one compute set)
        const w = busy ? width * cycles / busy : 0;
        if (w > 0) paths[p].push(`M${x.toFixed(3)} ${top}h${w.toFixed(3)}v${laneH}h${(-w).toFixed(3)}z`);
        x += w;
      });
      const bar = svgEl("rect", {class: "cs-bar", x: x0.toFixed(3), y: top, width: Math.max(width, 0.5).toFixed(3), height: laneH,
                                 "data-ipu": ipu, "data-start": start, "data-cycles": end - start, "data-count": group.length});
      bar.computeSets = group;
      bar.longest = longest;
      bars.append(bar);
    }
    PHASES.forEach(([phase, color], p) =>
      chart.append(svgEl("path", {class: "phase", "data-phase": phase, "data-ipu": ipu, fill: color, d: paths[p].join("")})));
    chart.append(bars);
  });
  const xTicks = [0, 0.25, 0.5, 0.75, 1].map(f => formatCycles(Math.round(f * endCycle)) + (f === 1 ? " cycles" : ""));
  section("trace").append(
    note(`One step, ${formatCycles(endCycle)} cycles${isEstimate ? " (estimate)" : ""}; hover a bar for its compute set.`),
    ...notes.map(note),
    legend(PHASES.map(([phase, color]) => [phase, color])),
    plotFrame(chart, Math.max(60, lanes.size * 34), yTicks, xTicks),
    topComputeSets(sets),
    cyclesPerOp(sets));
}
tipBuilders["cs-bar"] = node => {
  const sets = node.computeSets, cs = node.longest;
  if (!sets) return null;
  const describe = c => `${c.name}\n  op ${c.op}, ${c.source || "no source"}, step ${c.step}\n` +
    `  sync ${formatCycles(c.sync_cycles)}, exchange ${formatCycles(c.exchange_cycles)}, ` +
    `compute ${formatCycles(c.compute_cycles)} = ${formatCycles(cyclesOf(c))} cycles, ${withCommas(c.tiles_used)} tiles`;
  if (sets.length === 1) return `IPU ${cs.ipu || 0}, from cycle ${formatCycles(cs.start_cycle)}\n` + describe(cs);
  return `IPU ${cs.ipu || 0}: ${sets.length} compute sets (steps ${sets[0].step}-${sets[sets.length - 1].step}), ` +
         `cycles ${formatCycles(Number(node.dataset.start))} + ${formatCycles(Number(node.dataset.cycles))}\nlongest: ` + describe(cs);
};

function topComputeSets(sets) {
  const ranked = sets.map((cs, index) => ({cs, index}))
    .sort((a, b) => cyclesOf(b.cs) - cyclesOf(a.cs) || a.index - b.index)
    .slice(0, TOP_COMPUTE_SETS).map(({cs}, rank) => Object.assign({rank: rank + 1, total_cycles: cyclesOf(cs)}, cs));
  return el("div", {id: "top-compute-sets"},
    el("h3", {}, `Longest compute sets (${ranked.length} of ${withCommas(sets.length)})`),
    table([{key: "rank", title: "#"}, {key: "ipu", title: "IPU"}, {key: "step", title: "Step"},
           {key: "name", title: "Compute set"}, {key: "op", title: "Op"}, {key: "source", title: "Source"},
           {key: "start_cycle", title: "Start cycle", format: formatCycles},
           {key: "sync_cycles", title: "Sync", format: formatCycles},
           {key: "exchange_cycles", title: "Exchange", format: formatCycles},
           {key: "compute_cycles", title: "Compute", format: formatCycles},
           {key: "total_cycles", title: "Total cycles", format: formatCycles},
           {key: "tiles_used", title: "Tiles used", format: withCommas}],
          ranked, row => ({class: "top-cs-row", "data-ipu": row.ipu, "data-step": row.step})));
}

function cyclesPerOp(sets) {
  const byOp = new Map();
  let allCycles = 0;
  for (const cs of sets) {
    const op = cs.op == null ? "?" : String(cs.op);
    if (!byOp.has(op)) byOp.set(op, {op, count: 0, sync_cycles: 0, exchange_cycles: 0, compute_cycles: 0, total_cycles: 0});
    const row = byOp.get(op);
    row.count++;
    for (const phase of ["sync_cycles", "exchange_cycles", "compute_cycles"]) row[phase] += cs[phase] || 0;
    row.total_cycles += cyclesOf(cs);
    allCycles += cyclesOf(cs);
  }
  const rows = [...byOp.values()].sort((a, b) => b.total_cycles - a.total_cycles);
  const [shown, more] = limitedRows(rows, "operations");
  return el("div", {id: "cycles-per-op"}, el("h3", {}, "Cycles per operation (all IPUs)"), table([
    {key: "op", title: "Op"}, {key: "count", title: "Compute sets", format: withCommas},
    {key: "sync_cycles", title: "Sync", format: formatCycles},
    {key: "exchange_cycles", title: "Exchange", format: formatCycles},
    {key: "compute_cycles", title: "Compute", format: formatCycles},
    {key: "total_cycles", title: "Total cycles", format: formatCycles},
    {key: "share", title: "Share", get: row => allCycles ? row.total_cycles / allCycles : 0, format: formatPercent}],
    shown, row => ({class: "op-row"})), more);
}

// ---- overflows and largest contributors ----
function buildOverflows() {
  const overflows = report.overflows || [];
  if (!overflows.length) { section("overflows").append(note("No tile exceeds its memory.")); return; }
  const [shown, more] = limitedRows(overflows, "overflowing tiles");
  section("overflows").append(table([
    {key: "ipu", title: "IPU"}, {key: "tile", title: "Tile"},
    {key: "bytes", title: "Bytes", format: formatBytes}, {key: "over_by", title: "Over by", format: formatBytes},
    {key: "capacity_share", title: "Of capacity", get: row => capacity ? row.bytes / capacity : null,
     format: v => v == null ? "n/a" : formatPercent(v)}],
    shown, row => ({class: "overflow-row", "data-ipu": row.ipu, "data-tile": row.tile})), ...(more ? [more] : []));
}

function buildLargest() {
  const largest = report.largest || [];
  if (!largest.length) { section("largest").append(note("No contributors listed in this report.")); return; }
  const [shown, more] = limitedRows(largest, "contributors");
  section("largest").append(table([
    {key: "name", title: "Name"}, {key: "kind", title: "Kind"}, {key: "source", title: "Source"},
    {key: "bytes_on_tile", title: "Bytes on tile", format: formatBytes},
    {key: "ipu", title: "IPU"}, {key: "tile", title: "Tile"}],
    shown, row => ({class: "largest-row", "data-ipu": row.ipu, "data-tile": row.tile})), ...(more ? [more] : []));
}

// ---- build everything; a failing part reports its error and leaves the others standing ----
const renderErrors = [];
for (const [part, build] of [["banner", buildBanner], ["summary", buildSummary], ["tile memory", buildTileCharts],
                             ["liveness", buildLiveness], ["trace", buildTrace], ["overflows", buildOverflows],
                             ["largest", buildLargest]]) {
  try { build(); } catch (error) { renderErrors.push(`${part}: ${error && error.message}`); }
}
if (renderErrors.length)
  section("banners").append(el("div", {id: "render-error", class: "banner"}, "Report drawing failed: " + renderErrors.join("; ")));
document.body.setAttribute("data-rendered", renderErrors.length ? "error" : "ok");
document.body.setAttribute("data-render-ms", Math.round(performance.now() - renderStart));
"""


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m tilegraph.ipu_report REPORT.json OUT.html", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as f:
        report = json.load(f)
    print(write_html(report, args[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
