// correlate.js: the `lwb correlate` page. Two line charts (kernel duration, kernel end time), one
// series per timeline, x = position in the reference timeline, labelled by its kernels; then
// each target's comparison with the reference (totals, modules, kernels, one-sided kernels).
(function () {
  var data = JSON.parse(document.getElementById("lwb-data").textContent);
  document.getElementById("title").textContent = data.title;
  document.getElementById("subtitle").textContent = data.series.length + " timelines aligned to " +
    data.series[0].series + " by the shortest common supersequence of kernel names. Times in microseconds.";
  var labels = data.series[0].points.map(function (p) { return p.name; });
  [["duration", "Kernel Duration"], ["end", "Kernel End Time"]].forEach(function (c) {
    lwbLines(document.getElementById(c[0]), {title: c[1], labels: labels, unit: "us",
      series: data.series.map(function (s) {
        return {name: s.series, points: s.points.map(function (p) { return {x: p.x, y: p[c[0]], name: p.name}; })};
      })});
  });
  // Per target: kernel time against the reference, per module and per kernel name (largest gaps
  // first, ten), and the kernel names found on one side only. Text only (names are escaped).
  var box = document.getElementById("compare");
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function fmt(v) { return v.toFixed(1); }
  function table(title, rows, limit) {
    var t = el("table", undefined, "tree"), head = el("thead"), hr = el("tr");
    [title, "reference us", "target us", "gap us", "ratio"].forEach(function (h) { hr.appendChild(el("th", h)); });
    head.appendChild(hr);
    t.appendChild(head);
    var body = el("tbody");
    rows.slice(0, limit).forEach(function (r) {
      var tr = el("tr");
      tr.appendChild(el("td", r.name));
      tr.appendChild(el("td", fmt(r.reference_us), "num"));
      tr.appendChild(el("td", fmt(r.target_us), "num"));
      tr.appendChild(el("td", (r.gap_us >= 0 ? "+" : "") + fmt(r.gap_us), "num"));
      tr.appendChild(el("td", r.reference_us > 0 ? (r.target_us / r.reference_us).toFixed(2) : "-", "num"));
      body.appendChild(tr);
    });
    t.appendChild(body);
    return t;
  }
  (data.compare || []).forEach(function (c) {
    var pct = c.gap_pct === null ? "-" : (c.gap_pct >= 0 ? "+" : "") + c.gap_pct.toFixed(1) + "%";
    box.appendChild(el("h3", c.target));
    box.appendChild(el("p", "kernels " + fmt(c.target_us) + " us against the reference's " + fmt(c.reference_us) +
      " us (" + (c.gap_us >= 0 ? "+" : "") + fmt(c.gap_us) + " us, " + pct + "); last kernel ends at " +
      fmt(c.target_end_us) + " us against " + fmt(c.reference_end_us) + " us", "muted"));
    if (c.modules.length) box.appendChild(table("module", c.modules, c.modules.length));
    box.appendChild(table("kernel (largest gaps first)", c.kernels, 10));
    if (c.only_in_reference.length || c.only_in_target.length)
      box.appendChild(el("p", "only in the reference: " + (c.only_in_reference.join(", ") || "none") +
        "; only in the target: " + (c.only_in_target.join(", ") || "none"), "muted"));
  });
})();
