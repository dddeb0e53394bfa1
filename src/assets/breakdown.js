// breakdown.js: the `lwb parse` page. Reads the JSON in #lwb-data (written by report.h) and
// builds a collapsible tree table (one column per problem, or the per-range statistics), a Total
// row, a chart of the selected row, and the configuration panel. Names from the profile go in
// with textContent only.
(function () {
  var data = JSON.parse(document.getElementById("lwb-data").textContent);
  var cols = data.columns, summary = data.kind === "summary";
  var barCol = cols.findIndex(function (c) { return c.bar; });
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // Nodes: the tree flattened depth-first; a group's value is the sum of its children where
  // the column adds up (times, counts), empty otherwise (means, minima).
  var nodes = [], maxDepth = 1;
  function build(list, depth, parent) {
    return list.map(function (n) {
      var node = {name: n.name, full: n.full || null, depth: depth, parent: parent, kids: [], open: depth < 2};
      nodes.push(node);
      maxDepth = Math.max(maxDepth, depth);
      if (n.children) {
        node.kids = build(n.children, depth + 1, node);
        node.v = cols.map(function (c, i) {
          return c.sum ? node.kids.reduce(function (s, k) { return s + (k.v[i] || 0); }, 0) : null;
        });
      } else {
        node.v = n.v;
      }
      return node;
    });
  }
  var top = build(data.tree, 1, null);
  if (nodes.length <= 200) nodes.forEach(function (n) { n.open = true; }); // small: all unfolded
  var total = cols.map(function (c, i) {
    return c.sum ? top.reduce(function (s, k) { return s + (k.v[i] || 0); }, 0) : null;
  });

  document.getElementById("title").textContent = data.title;
  document.getElementById("subtitle").textContent = summary
    ? "Kernels grouped by the NVTX ranges open at their launch (innermost range last). Times in microseconds."
    : cols.length + " problem" + (cols.length === 1 ? "" : "s") +
      ": mean kernel time per module after warm-up, in microseconds. Overlap is negative: time kernels ran concurrently.";

  // Table
  var table = document.getElementById("tree");
  var thead = el("thead"), hr = el("tr");
  hr.appendChild(el("th", null, summary ? "NVTX range / kernel" : "Module / kernel"));
  cols.forEach(function (c) { var th = el("th", null, c.name); th.title = c.name; hr.appendChild(th); });
  thead.appendChild(hr);
  table.appendChild(thead);
  var tbody = el("tbody");
  table.appendChild(tbody);
  function valueCell(v, i) {
    var td = el("td", "val");
    if (v === null || v === undefined) return td;
    if (cols[i].bar && total[i]) {
      var b = el("div", "bar" + (v < 0 ? " neg" : ""));
      b.style.width = Math.min(100, Math.abs(v / total[i]) * 100).toFixed(2) + "%";
      td.appendChild(b);
      td.title = (v / total[i] * 100).toFixed(1) + "% of the column total";
    }
    td.appendChild(el("span", null, lwbFmt(v, cols[i].unit)));
    return td;
  }
  nodes.forEach(function (n) {
    var tr = el("tr", n.kids.length ? "group" : "leaf"), td = el("td", "name");
    td.style.paddingLeft = (6 + (n.depth - 1) * 18) + "px";
    n.tog = el("span", "tog", n.kids.length ? "\u25b8" : "");
    td.appendChild(n.tog);
    td.appendChild(el("span", null, n.name));
    td.title = n.full || n.name;
    tr.appendChild(td);
    n.v.forEach(function (v, i) { tr.appendChild(valueCell(v, i)); });
    tr.addEventListener("click", function (ev) {
      if (n.kids.length && ev.target === n.tog) { n.open = !n.open; refresh(); }
      select(n);
    });
    tr.addEventListener("dblclick", function () { if (n.kids.length) { n.open = !n.open; refresh(); } });
    n.tr = tr;
    tbody.appendChild(tr);
  });
  var tfoot = el("tfoot"), fr = el("tr");
  fr.appendChild(el("td", null, "Total"));
  total.forEach(function (v, i) { var td = el("td", "val"); td.appendChild(el("span", null, lwbFmt(v, cols[i].unit))); fr.appendChild(td); });
  tfoot.appendChild(fr);
  table.appendChild(tfoot);

  var filter = "";
  function matches(n) {
    if (!filter) return true;
    if ((n.name + " " + (n.full || "")).toLowerCase().indexOf(filter) >= 0) return true;
    return n.kids.some(matches);
  }
  function visible(n) {
    if (!matches(n)) return false;
    for (var p = n.parent; p; p = p.parent) if (!p.open && !filter) return false;
    return true;
  }
  function refresh() {
    nodes.forEach(function (n) {
      n.tr.style.display = visible(n) ? "" : "none";
      if (n.kids.length) n.tog.textContent = n.open || filter ? "\u25be" : "\u25b8";
    });
  }

  // Chart of the selected row: across the problems, or (per-range summary) its children.
  var selected = null;
  function select(n) {
    if (selected) selected.tr.classList.remove("sel");
    selected = n;
    if (n) n.tr.classList.add("sel");
    var host = document.getElementById("chart"), title = document.getElementById("chart-title");
    if (!summary) {
      var r = n || {name: "Total", v: total};
      title.textContent = "Row analysis: " + r.name;
      lwbBars(host, {labels: cols.map(function (c) { return c.name; }), values: r.v.map(function (v) { return v || 0; }), unit: "us"});
      return;
    }
    var g = n ? (n.kids.length ? n : n.parent) : null, kids = (g ? g.kids : top).slice();
    kids.sort(function (a, b) { return (b.v[barCol] || 0) - (a.v[barCol] || 0); });
    kids = kids.slice(0, 20);
    title.textContent = (g ? g.name : "All ranges") + ": " + cols[barCol].name;
    lwbBars(host, {labels: kids.map(function (k) { return k.name; }), fulls: kids.map(function (k) { return k.full || k.name; }),
      values: kids.map(function (k) { return k.v[barCol] || 0; }), unit: "us"});
  }

  // Toolbar
  var bar = document.getElementById("toolbar");
  function button(label, fn) { var b = el("button", null, label); b.addEventListener("click", fn); bar.appendChild(b); }
  function level(d) { nodes.forEach(function (n) { n.open = n.depth < d; }); refresh(); }
  button("Collapse all", function () { level(1); });
  for (var d = 2; d <= Math.min(maxDepth - 1, 5); d++) (function (d) { button("Level " + d, function () { level(d); }); })(d);
  button("Expand all", function () { level(maxDepth + 1); });
  var search = el("input");
  search.type = "search";
  search.placeholder = "filter names";
  search.addEventListener("input", function () { filter = search.value.trim().toLowerCase(); refresh(); });
  bar.appendChild(search);

  document.addEventListener("keydown", function (ev) {
    if (ev.target === search) return;
    var vis = nodes.filter(function (n) { return n.tr.style.display !== "none"; }), i = vis.indexOf(selected);
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      var j = i < 0 ? 0 : Math.max(0, Math.min(vis.length - 1, i + (ev.key === "ArrowDown" ? 1 : -1)));
      if (vis[j]) { select(vis[j]); vis[j].tr.scrollIntoView({block: "nearest"}); }
    } else if (ev.key === "ArrowRight" && selected && selected.kids.length) {
      selected.open = true; refresh();
    } else if (ev.key === "ArrowLeft" && selected) {
      if (selected.kids.length && selected.open) { selected.open = false; refresh(); } else if (selected.parent) select(selected.parent);
    } else if (ev.key === "+") { level(maxDepth + 1); } else if (ev.key === "-") { level(1); } else return;
    ev.preventDefault();
  });

  document.getElementById("config-text").textContent = JSON.stringify(data.config || {}, null, 2);
  refresh();
  select(null);
  window.addEventListener("resize", function () { select(selected); });
})();
