// chart.js: small SVG charts for lwb's report pages (no library, no network).
// lwbBars(host, {labels, values, unit, fulls}) draws horizontal bars (negative values to the left
// of zero); lwbLines(host, {labels, series, unit, title}) draws one line per series over x
// positions labelled by `labels` (x = 1..labels.length), with a legend, hover tooltips and
// drag-to-zoom (double-click resets). Text goes in with textContent only.
"use strict";
var LWB_COLORS = ["#5b9cf0", "#e8a44a", "#6cc28a", "#d9776b", "#b48be0", "#4fc4cf", "#d6c95b", "#e07fb5"];

function lwbSvg(tag, attrs, parent) {
  var e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (var k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function lwbText(parent, x, y, s, attrs) {
  var a = attrs || {};
  a.x = x; a.y = y;
  var t = lwbSvg("text", a, parent);
  t.textContent = s;
  return t;
}
function lwbShort(s, n) { return s.length > n ? s.slice(0, n - 1) + "\u2026" : s; }
function lwbFmt(v, unit) {
  if (v === null || v === undefined || isNaN(v)) return "";
  return unit === "count" ? String(Math.round(v)) : v.toFixed(1);
}
// Ticks for [lo, hi]: about n round steps.
function lwbTick(v) { return String(+v.toFixed(6)); }
function lwbTicks(lo, hi, n) {
  var span = hi - lo || 1, step = Math.pow(10, Math.floor(Math.log10(span / n)));
  [1, 2, 5, 10].some(function (m) { if (span / (step * m) <= n) { step *= m; return true; } return false; });
  var out = [];
  for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
  return out;
}
function lwbTooltip() {
  var t = document.getElementById("tooltip");
  if (!t) { t = document.createElement("div"); t.className = "tooltip"; t.id = "tooltip"; document.body.appendChild(t); }
  return t;
}
function lwbShowTip(ev, lines) {
  var t = lwbTooltip();
  t.textContent = "";
  lines.forEach(function (l, i) {
    var d = document.createElement("div");
    if (i === 0) { var b = document.createElement("b"); b.textContent = l; d.appendChild(b); } else d.textContent = l;
    t.appendChild(d);
  });
  t.style.display = "block";
  var x = ev.clientX + 14, y = ev.clientY + 14;
  if (x + t.offsetWidth > window.innerWidth) x = ev.clientX - t.offsetWidth - 14;
  if (y + t.offsetHeight > window.innerHeight) y = ev.clientY - t.offsetHeight - 14;
  t.style.left = x + "px"; t.style.top = y + "px";
}
function lwbHideTip() { lwbTooltip().style.display = "none"; }

function lwbBars(host, opt) {
  host.textContent = "";
  var n = opt.labels.length;
  if (!n) { host.textContent = "(nothing to chart)"; return; }
  var W = Math.max(host.clientWidth || 480, 320), lw = Math.min(200, W * 0.45), rowH = 22;
  var H = 24 + n * rowH, x0 = lw + 8, x1 = W - 60;
  var lo = Math.min(0, Math.min.apply(null, opt.values)), hi = Math.max(0, Math.max.apply(null, opt.values));
  if (hi === lo) hi = lo + 1;
  var sx = function (v) { return x0 + (v - lo) / (hi - lo) * (x1 - x0); };
  var svg = lwbSvg("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H}, host);
  lwbTicks(lo, hi, 5).forEach(function (v) {
    lwbSvg("line", {x1: sx(v), x2: sx(v), y1: 4, y2: H - 18, "class": "grid"}, svg);
    lwbText(svg, sx(v), H - 4, lwbTick(v), {"text-anchor": "middle"});
  });
  lwbSvg("line", {x1: sx(0), x2: sx(0), y1: 4, y2: H - 18, "class": "axis"}, svg);
  opt.labels.forEach(function (label, i) {
    var v = opt.values[i], y = 6 + i * rowH;
    var t = lwbText(svg, lw, y + 14, lwbShort(label, 28), {"text-anchor": "end", "class": "label"});
    lwbSvg("title", {}, t).textContent = (opt.fulls && opt.fulls[i]) || label;
    var a = sx(Math.min(0, v)), b = sx(Math.max(0, v));
    var r = lwbSvg("rect", {x: a, y: y + 2, width: Math.max(1, b - a), height: rowH - 6, rx: 2,
      fill: v < 0 ? "#d9776b" : LWB_COLORS[0]}, svg);
    r.addEventListener("mousemove", function (ev) { lwbShowTip(ev, [label, lwbFmt(v, opt.unit) + (opt.unit === "count" ? "" : " us")]); });
    r.addEventListener("mouseleave", lwbHideTip);
    lwbText(svg, v < 0 ? a - 4 : b + 4, y + 14, lwbFmt(v, opt.unit), {"text-anchor": v < 0 ? "end" : "start", "class": "label"});
  });
}

function lwbLines(host, opt) {
  var state = {lo: null, hi: null, off: {}};
  var N = opt.labels.length;
  function draw() {
    host.textContent = "";
    var legend = document.createElement("div");
    legend.className = "legend";
    opt.series.forEach(function (s, i) {
      var it = document.createElement("span"), sw = document.createElement("i");
      sw.style.background = LWB_COLORS[i % LWB_COLORS.length];
      it.appendChild(sw);
      it.appendChild(document.createTextNode(s.name));
      if (state.off[i]) it.className = "off";
      it.addEventListener("click", function () { state.off[i] = !state.off[i]; draw(); });
      legend.appendChild(it);
    });
    host.appendChild(legend);
    // Room under the axis for the rotated labels (at most 30 characters, about 6.5 px each).
    var longest = opt.labels.reduce(function (m, l) { return Math.max(m, Math.min(30, l.length)); }, 1);
    var mb = Math.round(20 + longest * 6.5 * 0.87), W = Math.max(host.clientWidth || 900, 480), H = 230 + mb;
    var ml = 64, mr = 16, mt = 10;
    var xs = [];
    opt.series.forEach(function (s) { s.points.forEach(function (p) { xs.push(p.x); }); });
    var xlo = state.lo !== null ? state.lo : Math.min(1, Math.min.apply(null, xs.concat([1])));
    var xhi = state.hi !== null ? state.hi : Math.max(N, Math.max.apply(null, xs.concat([N])));
    if (xhi <= xlo) xhi = xlo + 1;
    var ymax = 0;
    opt.series.forEach(function (s, i) {
      if (state.off[i]) return;
      s.points.forEach(function (p) { if (p.x >= xlo && p.x <= xhi) ymax = Math.max(ymax, p.y); });
    });
    if (!(ymax > 0)) ymax = 1;
    var sx = function (x) { return ml + (x - xlo) / (xhi - xlo) * (W - ml - mr); };
    var sy = function (y) { return mt + (1 - y / ymax) * (H - mt - mb); };
    var svg = lwbSvg("svg", {width: W, height: H, viewBox: "0 0 " + W + " " + H}, host);
    lwbTicks(0, ymax, 6).forEach(function (v) {
      lwbSvg("line", {x1: ml, x2: W - mr, y1: sy(v), y2: sy(v), "class": "grid"}, svg);
      lwbText(svg, ml - 6, sy(v) + 4, lwbTick(v), {"text-anchor": "end"});
    });
    lwbText(svg, 12, mt + (H - mt - mb) / 2, opt.unit || "us", {transform: "rotate(-90 12 " + (mt + (H - mt - mb) / 2) + ")", "text-anchor": "middle"});
    // x labels: the reference kernels, thinned so they do not overlap
    var first = Math.max(1, Math.ceil(xlo)), last = Math.min(N, Math.floor(xhi));
    var every = Math.max(1, Math.ceil((last - first + 1) * 13 / (W - ml - mr)));
    for (var x = first; x <= last; x += every) {
      var px = sx(x), py = H - mb + 8;
      lwbSvg("line", {x1: px, x2: px, y1: H - mb, y2: H - mb + 4, "class": "axis"}, svg);
      var t = lwbText(svg, px, py, lwbShort(opt.labels[x - 1], 30), {transform: "rotate(-60 " + px + " " + py + ")", "text-anchor": "end", "dominant-baseline": "middle"});
      lwbSvg("title", {}, t).textContent = x + ": " + opt.labels[x - 1];
    }
    lwbSvg("line", {x1: ml, x2: W - mr, y1: H - mb, y2: H - mb, "class": "axis"}, svg);
    opt.series.forEach(function (s, i) {
      if (state.off[i]) return;
      var col = LWB_COLORS[i % LWB_COLORS.length], pts = s.points.filter(function (p) { return p.x >= xlo && p.x <= xhi; });
      lwbSvg("polyline", {points: pts.map(function (p) { return sx(p.x).toFixed(1) + "," + sy(p.y).toFixed(1); }).join(" "),
        fill: "none", stroke: col, "stroke-width": 1.5}, svg);
      if (pts.length <= 400) pts.forEach(function (p) { lwbSvg("circle", {cx: sx(p.x), cy: sy(p.y), r: 2.5, fill: col}, svg); });
    });
    // hover: the nearest point of each visible series; drag: zoom to the dragged x range
    var sel = lwbSvg("rect", {y: mt, height: H - mt - mb, fill: "#5b9cf033", width: 0, x: 0}, svg), drag = null;
    var xat = function (ev) { var b = svg.getBoundingClientRect(); return xlo + (ev.clientX - b.left - ml) / (W - ml - mr) * (xhi - xlo); };
    svg.addEventListener("mousemove", function (ev) {
      var x = xat(ev);
      if (drag !== null) { var a = sx(Math.min(drag, x)), b = sx(Math.max(drag, x)); sel.setAttribute("x", a); sel.setAttribute("width", b - a); }
      var lines = [];
      opt.series.forEach(function (s, i) {
        if (state.off[i] || !s.points.length) return;
        var best = s.points.reduce(function (p, q) { return Math.abs(q.x - x) < Math.abs(p.x - x) ? q : p; });
        if (Math.abs(sx(best.x) - sx(x)) > 12) return;
        lines.push(s.name + ": " + best.name + "  x=" + (+best.x.toFixed(2)) + "  " + lwbFmt(best.y, "us") + " us");
      });
      if (lines.length) lwbShowTip(ev, [opt.title || ""].concat(lines)); else lwbHideTip();
    });
    svg.addEventListener("mouseleave", function () { lwbHideTip(); drag = null; sel.setAttribute("width", 0); });
    svg.addEventListener("mousedown", function (ev) { drag = xat(ev); ev.preventDefault(); });
    svg.addEventListener("mouseup", function (ev) {
      if (drag === null) return;
      var a = Math.min(drag, xat(ev)), b = Math.max(drag, xat(ev));
      drag = null;
      if (sx(b) - sx(a) > 6) { state.lo = a; state.hi = b; draw(); } else sel.setAttribute("width", 0);
    });
    svg.addEventListener("dblclick", function () { state.lo = state.hi = null; draw(); });
  }
  draw();
  window.addEventListener("resize", draw);
}
